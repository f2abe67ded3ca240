"""``python -m bigain`` subcommands (in-process), the training loop on a tiny config, and the
digits evaluation on a few images (its statistics and sensitivity: tests/test_evaluate.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from bigain import cli, digits, generate, load_model
from bigain.train import TrainConfig, train
from bigain.zoo import Arch

torch.set_num_threads(1)


def test_generate_then_classify(tmp_path: Path, capsys) -> None:
    out = tmp_path / "seven.png"
    rc = cli.main(["generate", "--model", "digits-dit", "-c", "7", "--method", "lgtm:ratio=0.7", "--steps", "3",
                   "--upscale", "4", "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0 and Image.open(out).size == (64, 64)
    assert "L-GTM r=0.7" in capsys.readouterr().out
    js = tmp_path / "c.json"
    rc = cli.main(["classify", str(out), "--model", "digits-unet", "--method", "iekvd", "--classes", "1,7",
                   "--quiet", "--json", str(js)])  # fmt: skip
    assert rc == 0
    res = json.loads(js.read_text())[0]
    assert res["prediction"] in {"1", "7"} and len(res["ranking"]) == 2 and res["n_evals"] == 20


def test_several_images_and_adaptive_options(tmp_path: Path, capsys) -> None:
    out = tmp_path / "d.png"
    rc = cli.main(["generate", "--model", "digits-dit", "-c", "3", "--num-images", "2", "--steps", "2", "--out",
                   str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    paths = [tmp_path / "d_0.png", tmp_path / "d_1.png"]
    assert all(p.is_file() for p in paths)
    rc = cli.main(["classify", *map(str, paths), "--model", "digits-dit", "--n-pool", "4", "--n-samples", "2,4",
                   "--to-keep", "3,1", "--quiet", "--top", "2"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and text.count("evaluations") == 2


def test_the_default_model_is_glyphs_dit(tmp_path: Path, capsys) -> None:
    out = tmp_path / "e.png"
    assert cli.main(["generate", "-c", "E", "--steps", "2", "--num-images", "1", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert Image.open(out).size == (256, 256) and "1 image of 'E' at 256×256 px" in text  # 32 px ×8: viewable
    assert "2 steps" in text and "2 denoiser calls" in text  # conditional and unconditional in one batch
    rc = cli.main(["classify", str(out), "--n-pool", "2", "--n-samples", "1,2", "--to-keep", "2,1", "--quiet",
                   "--top", "2"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and re.match(rf"^{re.escape(str(out))}: [A-Z]  \(", text)  # a letter: the glyph world's classes
    rows = re.findall(r"^  [A-Z]  error [0-9.]+  score [0-9.]+  \((\d) timesteps?\)$", text, re.M)
    assert len(rows) == 2  # aligned to the longest class name, the timesteps said in words


def test_a_bad_top_is_refused_before_any_work(capsys) -> None:
    assert cli.main(["classify", "nothing.png", "--model", "digits-dit", "--top", "-1"]) == 2
    captured = capsys.readouterr()
    assert "--top" in captured.err and "%|" not in captured.err  # one message, no empty progress bar


def test_errors_exit_2(capsys, tmp_path: Path) -> None:
    assert cli.main(["generate", "--model", "nope", "-c", "3", "--quiet"]) == 2
    assert "unknown model" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_text("x")
    assert cli.main(["classify", str(bad), "--model", "digits-dit", "--quiet"]) == 2
    assert "bad.png" in capsys.readouterr().err  # the image is refused (not the model)
    assert cli.main(["generate", "--model", "digits-dit", "-c", "3", "--method", "tome:ratio=2", "--quiet"]) == 2
    assert "ratio" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


def test_training_loop_smoke(tmp_path: Path) -> None:
    config = {
        "sample_size": 4,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [8, 8],
        "layers_per_block": 1,
        "cross_attention_dim": 8,
        "attention_head_dim": 2,
        "norm_num_groups": 4,
    }
    # 8×8 images → 4×4×4 latents, as the shipped U-Net does at 16 → 8
    arch = Arch("UNet2DConditionModel", config, 2, 8, tokens={"seq_len": 2, "dim": 8}, space_to_depth=2)
    rec = train("digits-unet", tmp_path, TrainConfig(steps=2, batch_size=4, log_every=1), arch=arch, quiet=True)
    assert rec["steps"] == 2 and len(rec["loss_curve"]) == 2 and rec["split"]["n_test"] == 360
    again = train("digits-unet", tmp_path / "b", TrainConfig(steps=2, batch_size=4, log_every=1), arch=arch, quiet=True)
    assert again["loss_curve"][-1]["loss"] == rec["loss_curve"][-1]["loss"]  # deterministic from the seed
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["null_class"] == 10 and (tmp_path / "model.safetensors").is_file()
    assert cfg["resolution"] == 8 and cfg["space_to_depth"] == 2 and rec["command"] is None
    m = load_model(tmp_path, device="cpu")
    assert (m.resolution, m.latent_size, m.latent_channels, m.image_channels) == (8, 4, 4, 1)
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert m.encode(x).shape == (2, 4, 4, 4) and torch.equal(m.decode(m.encode(x)), x)
    assert generate(m, [3], steps=2, guidance=1.0).array.shape[:3] == (1, 8, 8)


def test_reference_classifier_and_feature_distances() -> None:
    ref = digits.reference()
    x, y = digits.load("test")
    assert (ref.predict(x) == y.numpy()).mean() > 0.95
    f = ref.features(x[:100])
    assert f.shape == (100, 128)
    assert digits.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-3)
    assert digits.logistic_baseline()["n"] == 360


@pytest.mark.slow
def test_eval_digits_small(tmp_path: Path) -> None:
    rc = cli.main(["eval", "digits", "--models", "digits-dit", "--limit", "4", "--samples", "2", "--methods",
                   "baseline", "tome-0.5", "lgtm-0.5", "--gen-methods", "baseline", "todo-2", "--out", str(tmp_path),
                   "--quiet"])  # fmt: skip
    assert rc == 0
    res = json.loads((tmp_path / "digits-dit.json").read_text())
    c = res["classification"]
    assert set(c["methods"]) == {"baseline", "tome-0.5", "lgtm-0.5"} and len(c["images"]) == 4
    assert "lgtm-0.5 vs tome-0.5" in c["paired"]
    assert set(res["generation"]["methods"]) == {"baseline", "todo-2"}
    sens = res["sensitivity"]["ratio"]  # baseline is not a change; the references are always there
    assert set(sens) == {"class", "no self-attention", "tome-0.5", "lgtm-0.5"}
    assert all(v > 0 for v in sens.values()) and sens["no self-attention"] > sens["tome-0.5"]
    assert set(res["sensitivity"]["contrast"]) == {"no self-attention", "tome-0.5", "lgtm-0.5"}
    assert (tmp_path / "digits-dit.md").read_text().startswith("# Digits replication")
    assert (tmp_path / "digits-dit-samples.png").is_file()
    # refreshing one part keeps the others (measured on the same weights), each with its own command
    rc = cli.main(["eval", "digits", "--models", "digits-dit", "--skip-classify", "--samples", "0", "--methods",
                   "todo-2", "--out", str(tmp_path), "--quiet"])  # fmt: skip
    again = json.loads((tmp_path / "digits-dit.json").read_text())
    assert rc == 0 and again["classification"] == c and again["generation"] == res["generation"]
    assert set(again["sensitivity"]["ratio"]) == {"class", "no self-attention", "todo-2"}
    assert "--skip-classify" in again["sensitivity"]["run"]["command"] and "--limit 4" in c["run"]["command"]
    md = (tmp_path / "digits-dit.md").read_text()
    assert md.count("Command: `python -m bigain eval digits") == 3
    again["training"] = {"steps": -1}  # other weights: earlier parts are not carried over
    (tmp_path / "digits-dit.json").write_text(json.dumps(again))
    cli.main(["eval", "digits", "--models", "digits-dit", "--skip-classify", "--samples", "0", "--methods",
              "todo-2", "--out", str(tmp_path), "--quiet"])  # fmt: skip
    assert "classification" not in json.loads((tmp_path / "digits-dit.json").read_text())


def test_inside_writes_the_look_inside_picture(tmp_path: Path) -> None:
    from PIL import Image

    from bigain.cli import main

    out = tmp_path / "inside.png"
    args = ["inside", "--model", "digits-dit", "--condition", "3", "--method", "lgtm", "--steps", "4", "--step", "1"]
    assert main([*args, "--out", str(out)]) == 0
    sheet = Image.open(out)
    assert sheet.width > sheet.height > 100  # gate and merge figures side by side
    assert main(["inside", "--model", "digits-dit", "--condition", "3", "--method", "baseline", "--steps", "2"]) == 2


def test_inside_refuses_a_step_past_the_end_before_recording(monkeypatch, capsys) -> None:
    from bigain import explain

    def never(*a, **k):
        raise AssertionError("recorded a generation for a step that does not exist")

    monkeypatch.setattr(explain, "record_generation", never)
    assert cli.main(["inside", "--model", "digits-dit", "-c", "3", "--step", "999", "--steps", "4"]) == 2
    assert "--step must be an integer in [1, 4], got 999" in capsys.readouterr().err

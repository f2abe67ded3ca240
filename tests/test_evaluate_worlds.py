"""The replication (``python -m bigain eval replication``) in the glyphs world: a tiny glyph DiT trained
in seconds, evaluated end to end through its world (26 classes, 32×32 tiles, the glyph reference
classifier), the balanced ``--limit`` subset, the ``core`` group, the cost estimate and the plain
answers to the paper's claims in the report."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bigain.evaluate import report
from bigain.evaluate.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_git_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIGAIN_GIT", "0")


def _clear_caches() -> None:
    from bigain import glyphs, models

    models._load_cached.cache_clear()
    glyphs.reference.cache_clear()


def _reference(folder: Path) -> None:
    """The shipped glyph reference classifier (linked), or where it is not there yet an untrained one
    with a training record (enough for the plumbing: its numbers mean nothing)."""
    shipped = ROOT / "assets" / "glyphs-reference"
    if (shipped / "model.safetensors").is_file() and (shipped / "training.json").is_file():
        folder.symlink_to(shipped, target_is_directory=True)
        return
    from safetensors.torch import save_file

    from bigain import glyphs

    torch.manual_seed(0)
    folder.mkdir()
    save_file(dict(glyphs.ReferenceNet().state_dict()), str(folder / "model.safetensors"))
    record = {"model": glyphs.REFERENCE_DIR, "accuracy": {"test_plain": 0.5, "test_jittered": 0.25}}
    (folder / "training.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def glyph_assets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """BIGAIN_ASSETS with a tiny glyphs-dit (2 blocks, the second compressed as the card says; hidden 8;
    2 training steps on the 442 plain train glyphs instead of the jittered bank; its card sampling in 2
    steps) and the glyph reference classifier."""
    from bigain import train as T
    from bigain import zoo

    root = tmp_path_factory.mktemp("assets")
    mp = pytest.MonkeyPatch()
    mp.setenv("BIGAIN_ASSETS", str(root))
    mp.setenv("BIGAIN_GIT", "0")
    mp.setattr(T, "GLYPH_BANK", 1)
    # 2 sampling steps instead of the card's 20: generation is 26 classes × steps denoiser calls per row
    mp.setitem(zoo.CARDS, "glyphs-dit", dataclasses.replace(zoo.CARDS["glyphs-dit"], steps=2))
    _reference(root / "glyphs-reference")
    base = zoo.ARCHS["glyphs-dit"]
    cfg = {**base.config, "num_layers": 2, "num_attention_heads": 1, "attention_head_dim": 8}
    arch = dataclasses.replace(base, config=cfg)
    T.train("glyphs-dit", root / "glyphs-dit", T.TrainConfig(steps=2, batch_size=4, checkpoint_every=0), arch=arch,
            quiet=True)  # fmt: skip
    _clear_caches()
    try:
        yield root
    finally:
        mp.undo()
        _clear_caches()


def test_balanced_subset_takes_equal_images_per_class_and_every_font() -> None:
    from bigain import glyphs
    from bigain.evaluate import digits as E

    _, y = glyphs.load("test")
    idx = E.balanced_subset(y.numpy(), 52)
    counts = np.bincount(y.numpy()[idx], minlength=26)
    assert len(idx) == len(set(idx.tolist())) == 52 and (counts == 2).all() and list(idx) == sorted(idx)
    one = E.balanced_subset(y.numpy(), 26)
    assert sorted(y.numpy()[one].tolist()) == list(range(26))
    faces = np.array(glyphs.faces_of("test"))[one]
    assert len(set(faces)) == 5  # one glyph per class, the five held-out fonts in turn
    some = E.balanced_subset(y.numpy(), 30)  # 4 classes get a second image
    assert sorted(set(np.bincount(y.numpy()[some], minlength=26).tolist())) == [1, 2]
    assert E.balanced_subset(y.numpy(), None).tolist() == list(range(130))
    assert E.balanced_subset(y.numpy(), 500).tolist() == list(range(130))
    with pytest.raises(ValueError):
        E.balanced_subset(y.numpy(), 0)


def test_core_group_and_per_sample_labels() -> None:
    from bigain.evaluate import digits as E

    keys = [k for k, _ in E._methods(["core"], E.CLASSIFY_DEFAULT, "classification")]
    assert keys == sorted(E.CORE, key=E._order) and len(keys) == 8 and "core" in E.GROUPS
    assert ("lgtm-0.5", "tome-0.5") in E.PAIRS and ("iekvd-2-a0.9", "todo-2") in E.PAIRS
    # generation labels: a digit string in the digits world (as its files hold them), ints beyond 10 classes
    assert E.encode_pred(np.array([3, 1, 4]), 10) == "314" and E.encode_pred(np.array([25, 0]), 26) == [25, 0]
    assert E.decode_pred("314") == [3, 1, 4] and E.decode_pred([25, 0]) == [25, 0]
    part = {"per_class": 1, "labels": None}
    assert E._outcomes(part, {"pred": [*range(25), 0]}, "generation") == [True] * 25 + [False]
    assert E._outcomes(part, {"pred": "0123456789"}, "generation") == [True] * 10
    tiles = np.arange(26 * 32 * 32, dtype=np.int64).astype(np.uint8).reshape(26, 32, 32)
    assert np.array_equal(E.decode_tiles(E.encode_tiles(tiles)), tiles)
    assert np.array_equal(E.decode_tiles(E.encode_tiles(tiles), 26), tiles)


def test_fid_scores_embedded_runs_in_their_world() -> None:
    from bigain.evaluate import fid

    assert fid.world_of_run({"dataset": {"name": "digits-test"}}).name == "digits"
    assert fid.world_of_run({"dataset": {"name": "glyphs-test"}}).size == 32
    assert fid.world_of_run({"dataset": {"name": "pets-test"}}) is None
    assert fid.WORLD_FEATURES["digits"] == fid.DIGITS_FEATURES


def test_verdict_says_either_way() -> None:
    labels = list(range(26))
    wrong = [(c + 1) % 26 for c in labels]

    def row(name: str, pred: list[int]) -> dict:
        k = sum(p == t for p, t in zip(pred, labels, strict=True))
        return {"method": name, "n": 26, "acc": 100 * k / 26, "pred": pred}

    from bigain.evaluate import digits as E

    c = {"labels": labels, "methods": {"tome-0.5": row("ToMe r=0.5", wrong), "lgtm-0.5": row("L-GTM r=0.5", labels),
                                       "todo-2": row("ToDo s=2", labels),
                                       "iekvd-2-a0.9": row("IE-KVD", [*labels[:25], 0])}}  # fmt: skip
    c["paired"] = E.paired_tests(c, "classification")
    text = "\n".join(report.verdict_lines(c, None))
    assert "L-GTM beats ToMe at r = 0.5? **yes**" in text
    assert "IE-KVD (α = 0.9) beats ToDo at s = 2? **no significant difference**" in text
    c["methods"]["lgtm-0.5"], c["methods"]["tome-0.5"] = row("L-GTM r=0.5", wrong), row("ToMe r=0.5", labels)
    c["paired"] = E.paired_tests(c, "classification")
    assert "**no, the reverse**: ToMe r=0.5 is significantly better" in "\n".join(report.verdict_lines(c, None))


def test_replication_runs_end_to_end_on_a_glyph_model(
    glyph_assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    args = ["replication", "--models", "glyphs-dit", "--limit", "2", "--samples", "1", "--sensitivity-images", "2",
            "--methods", "tome-0.5", "lgtm-0.5", "todo-2", "iekvd-2-a0.9",
            "--gen-methods", "lgtm-0.5", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "cost estimate (glyphs world" in err and "4 methods × 2 images × 113" in err
    res = json.loads((out / "glyphs-dit.json").read_text())
    world = res["world"]
    assert world["name"] == "glyphs" and len(world["classes"]) == 26 and world["size"] == 32
    assert world["test_split"]["n"] == 130 and "cmr10" in world["test_split"]["rule"]
    assert set(res["reference_accuracy"]) == {"test_plain", "test_jittered"} and "logistic_regression" not in res
    c = res["classification"]
    assert len(c["images"]) == 2 and len(set(c["labels"])) == 2  # balanced: two classes, one each
    assert {k: c["protocol"][k] for k in ("n_pool", "n_samples", "to_keep")} == {"n_pool": 10, "n_samples": [3, 10],
                                                                                 "to_keep": [5, 1]}  # fmt: skip
    for r in c["methods"].values():
        assert len(r["pred"]) == 2 and all(0 <= p < 26 for p in r["pred"]) and r["evals_per_image"] == 113
        assert 0 <= r["ci95"][0] <= r["acc"] <= r["ci95"][1] <= 100
    assert {"lgtm-0.5 vs tome-0.5", "iekvd-2-a0.9 vs todo-2"} <= set(c["paired"])
    g = res["generation"]
    assert g["reference"]["model"].startswith("CNN") and list(g["methods"]) == ["lgtm-0.5"]
    for r in g["methods"].values():
        assert isinstance(r["pred"], list) and len(r["pred"]) == r["n"] == 26
        assert 0 <= r["ci95"][0] <= r["cond_acc"] <= r["ci95"][1] <= 100
        from bigain.evaluate import digits as E

        assert E.decode_tiles(r["thumbs"], 26).shape == (26, 32, 32)
    assert res["sensitivity"]["n_images"] == 2
    assert set(res["sensitivity"]["contrast"]) == {"no self-attention", "tome-0.5", "lgtm-0.5", "todo-2",
                                                   "iekvd-2-a0.9"}  # fmt: skip
    md = (out / "glyphs-dit.md").read_text()
    assert md.startswith("# Glyphs replication: glyphs-dit") and "World: **glyphs**" in md
    assert "2 of the 130 images, 1 per class" in md and "(113 denoiser evaluations per image)" in md
    assert "classification: L-GTM beats ToMe at r = 0.5? **" in md and "IE-KVD (α = 0.9) beats ToDo" in md
    assert md == report.digits_markdown(res)
    # the sample picture: one row per method, 26 tiles of 32 px (×2) per row
    from PIL import Image

    with Image.open(out / "glyphs-dit-samples.png") as im:
        assert im.height == 64 + 2 and im.width > 26 * 66
    from bigain.evaluate import digits as E

    drawn = E.tiles_from_grid(out / "glyphs-dit-samples.png", 1, side=32, n_tiles=26)
    assert drawn is not None and np.array_equal(drawn[0], E.decode_tiles(g["methods"]["lgtm-0.5"]["thumbs"], 26))
    # the estimate alone measures and writes nothing
    (out / "glyphs-dit.json").unlink()
    assert main(["replication", "--models", "glyphs-dit", "--estimate", "--methods", "core", "--gen-methods", "core",
                 "--limit", "52", "--samples", "2", "--out", str(out)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "8 methods × 52 images × 113 = 47,008" in err and "8 methods × 52 samples" in err
    assert not (out / "glyphs-dit.json").exists()


def test_replication_command_names_and_default_models() -> None:
    from bigain.evaluate import __main__ as M

    for name, models in (("replication", ["glyphs-dit", "glyphs-unet"]), ("digits", ["digits-dit", "digits-unet"])):
        a = M._parser().parse_args([name, "--methods", "core", "--limit", "52"])
        assert a.command in M.REPLICATION and a.models is None and M.DEFAULT_MODELS[a.command] == models
        assert a.samples is None and a.sensitivity_images is None and not a.estimate

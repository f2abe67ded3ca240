"""python -m bigain.evaluate: class lists, dataset checks, sharding over Accelerate processes,
resuming after a kill, merging, and generation outputs — on the embedded digits model."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bigain import datasets as D
from bigain.evaluate import fid as fidlib
from bigain.evaluate import report, store
from bigain.evaluate.__main__ import main
from bigain.evaluate.run import select_indices
from bigain.models import assets_dir

ROOT = Path(__file__).resolve().parent.parent
# adaptive rounds as in the paper, scaled down: 2 timesteps for all classes, keep 3, then 4 in all
PROTOCOL = ["--n-pool", "4", "--n-samples", "2", "4", "--to-keep", "3", "1"]
METHODS = ["--methods", "baseline", "tome:ratio=0.5", "lgtm:ratio=0.5", "todo", "iekvd:alpha=0.9"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread() -> object:
    """The digits reference classifier (sklearn) is 4× slower with BLAS threads on a busy 2-core box."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The shipped digits-dit; where its weights are not there yet, a tiny briefly-trained one."""
    if (assets_dir() / "digits-dit" / "model.safetensors").is_file():
        return "digits-dit"
    from bigain.models import DIGITS_ARCH
    from bigain.train import TrainConfig, train

    arch = copy.deepcopy(DIGITS_ARCH["digits-dit"])
    arch["denoiser"].update(num_layers=2, num_attention_heads=2, attention_head_dim=16)
    out = tmp_path_factory.mktemp("model") / "tiny-dit"
    train("digits-dit", out, TrainConfig(steps=60, batch_size=32), arch=arch, quiet=True)
    return str(out)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bigain.evaluate", *args]


def _records(out: Path) -> list[tuple]:
    """Per-image outcome, without timings or the rank that ran it."""
    recs = store.read_records(out, "classify")
    return sorted((r["image"], r["method"], r["pred"], tuple(r["top5"]), r["n_evals"]) for r in recs)


def _table(out: Path) -> tuple:
    res = json.loads((out / "results.json").read_text())
    return res["rows"], res["agreement"], res["run"]["indices"]


@pytest.fixture(scope="module")
def single(model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted one-process classify run: 8 digits, 5 methods."""
    out = tmp_path_factory.mktemp("single")
    args = ["classify", "--model", model, "--dataset", "digits", "--subset", "8", *METHODS, *PROTOCOL]
    subprocess.run(_cli(*args, "--out", str(out)), check=True, env=ENV, capture_output=True, timeout=300)
    return out


# ---- class lists and datasets --------------------------------------------------------------


def test_class_lists_match_the_paper_datasets() -> None:
    pets, inet, i100 = D.class_list("pets"), D.class_list("imagenet"), D.class_list("imagenet100")
    assert (len(pets), len(inet), len(i100), len(D.class_list("digits"))) == (37, 1000, 100, 10)
    assert pets.prompts[pets.index("beagle")] == "a photo of a Beagle dog, a type of pet."
    assert pets.prompts[pets.index("american_bulldog")] == "a photo of a American Bulldog, a type of pet."
    assert sum(p.endswith(" cat, a type of pet.") for p in pets.prompts) == 12
    assert inet.prompts[0] == "a photo of a tench." and inet.wnids[0] == "n01440764"
    assert list(i100.model_labels) == sorted(i100.model_labels)  # ImageFolder (sorted wnid) order
    for k, j in enumerate(i100.model_labels):
        assert (i100.wnids[k], i100.names[k]) == (inet.wnids[j], inet.names[j])
    assert i100.index("n01558993") == 0 and inet.index("missile") is None  # ambiguous name: use the wnid


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(path)


def test_image_folder_matches_names_and_wnids(tmp_path: Path) -> None:
    for cls in ("Beagle", "great_pyrenees", "Pug"):
        for k in range(2):
            _img(tmp_path / cls / f"{k}.png")
    ds = D.image_folder(tmp_path, D.class_list("pets"))
    pets = D.class_list("pets")
    assert sorted(set(ds.labels)) == sorted(pets.index(c) for c in ("Beagle", "Great Pyrenees", "Pug"))
    assert ds.check(range(len(ds))) == [] and ds.image(0).mode == "RGB"
    _img(tmp_path / "inet" / "n01440764" / "a.jpg")
    _img(tmp_path / "inet" / "n01443537" / "a.JPEG")
    ds = D.image_folder(tmp_path / "inet", D.class_list("imagenet1k"))
    assert ds.labels == (0, 1)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"a.png": True}, "no class sub-folders"),
        ({"Beagle/a.png": True, "Pug/notes.txt": False}, "without images"),
        ({"Beagle/a.png": True, "Pugg/a.png": True}, "did you mean"),
        ({"Beagle/a.png": True, "Zebra/a.png": True}, "do not name a class"),
    ],
)
def test_malformed_folder_is_a_clear_error(tmp_path: Path, layout: dict, message: str) -> None:
    for rel, is_image in layout.items():
        if is_image:
            _img(tmp_path / rel)
        else:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text("x")
    with pytest.raises(ValueError, match=message):
        D.open_dataset("pets", tmp_path)


def test_pets_on_disk_layout(tmp_path: Path) -> None:
    base = tmp_path / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    (base / "annotations" / "test.txt").write_text("Abyssinian_1 1 1 1\nbeagle_7 5 2 4\n")
    for name in ("Abyssinian_1", "beagle_7"):
        _img(base / "images" / f"{name}.jpg")
    ds = D.open_dataset("pets", tmp_path)
    assert ds.labels == (0, 4) and len(ds) == 2
    (base / "annotations" / "test.txt").write_text("Abyssinian_1 99 1 1\n")
    with pytest.raises(ValueError, match="class id"):
        D.open_dataset("pets", tmp_path)


def test_subset_selection_is_deterministic_and_recordable(tmp_path: Path) -> None:
    ds = D.digits()
    a, b = select_indices(ds, subset=20, seed=3), select_indices(ds, subset=20, seed=3)
    assert a == b == sorted(a) and len(set(a)) == 20 and a != select_indices(ds, subset=20, seed=4)
    per = select_indices(ds, per_class=2, seed=0)
    assert len(per) == 20 and sorted(np.bincount([ds.labels[i] for i in per])) == [2] * 10
    (tmp_path / "s.json").write_text(json.dumps([5, 1, 5]))
    assert select_indices(ds, subset_file=str(tmp_path / "s.json")) == [1, 5]
    (tmp_path / "bad.txt").write_text("1 2 999")
    with pytest.raises(ValueError, match="indices must be integers"):
        select_indices(ds, subset_file=str(tmp_path / "bad.txt"))


# ---- errors before compute -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "digits-dit", "--dataset", "digits", "--methods", "tomee"], "unknown method"),
        (["--model", "no-such-model", "--dataset", "digits", "--methods", "baseline"], "unknown model"),
        (["--model", "digits-dit", "--dataset", "cifar", "--methods", "baseline"], "unknown dataset"),
        (["--model", "dit-xl-2-256", "--dataset", "digits", "--methods", "baseline"], "ImageNet class ids"),
        (["--model", "digits-dit", "--dataset", "digits", "--methods", "baseline", "baseline"], "listed twice"),
        (
            [
                "--model",
                "digits-dit",
                "--dataset",
                "digits",
                "--methods",
                "todo",
                "--n-samples",
                "2",
                "4",
                "--to-keep",
                "5",
            ],
            "equal length",
        ),
        (["--model", "digits-dit", "--dataset", "digits", "--methods", "todo", "--subset", "999"], "--subset"),
    ],
)
def test_bad_arguments_fail_before_any_compute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list, message: str
) -> None:
    monkeypatch.setattr("bigain.models.load_model", _no_compute)
    assert main(["classify", *args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _no_compute(*a: object, **k: object) -> None:
    raise AssertionError("the model was loaded although the arguments were invalid")


def test_unknown_class_and_unreadable_image_fail_before_compute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("bigain.models.load_model", _no_compute)
    _img(tmp_path / "data" / "Beagle" / "a.png")
    _img(tmp_path / "data" / "Labrador" / "a.png")
    args = ["classify", "--model", "sd2-base", "--dataset", "pets", "--data-root", str(tmp_path / "data")]
    assert main([*args, "--methods", "baseline", "--out", str(tmp_path / "out")]) == 2
    assert "'Labrador'" in capsys.readouterr().err
    (tmp_path / "data" / "Labrador").rename(tmp_path / "data" / "Pug")
    (tmp_path / "data" / "Pug" / "a.png").write_bytes(b"not a png")
    assert main([*args, "--methods", "baseline", "--out", str(tmp_path / "out")]) == 2
    assert "unreadable images" in capsys.readouterr().err
    assert not (tmp_path / "out" / "run.json").exists()


# ---- results files -------------------------------------------------------------------------


def test_wilson_interval() -> None:
    lo, hi = report.wilson(81, 100)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (72.2, 87.5)
    assert report.wilson(0, 10)[0] == 0.0 and report.wilson(10, 10)[1] == pytest.approx(1.0)


def test_shard_drops_a_torn_last_line(tmp_path: Path) -> None:
    path = store.shard_path(tmp_path, "classify", 0)
    with store.Shard(path) as s:
        s.append({"image": 1, "method": "m", "pred": 3})
    with path.open("a") as f:
        f.write('{"image": 2, "meth')  # killed mid-write
    assert [r["image"] for r in store.read_records(tmp_path, "classify")] == [1]
    with store.Shard(path) as s:
        s.append({"image": 2, "method": "m", "pred": 4})
    assert [r["image"] for r in store.read_records(tmp_path, "classify")] == [1, 2]


# ---- running -------------------------------------------------------------------------------


def test_single_run_writes_json_and_paper_table(single: Path) -> None:
    res = json.loads((single / "results.json").read_text())
    assert res["complete"] and len(res["run"]["indices"]) == 8
    assert [r["method"] for r in res["rows"]] == METHODS[1:]
    base = res["methods"][0]
    assert base["agree_with_baseline"] == 100.0 and base["n"] == 8
    for m in res["methods"]:
        assert m["ci95"][0] <= m["acc"] <= m["ci95"][1] and m["n_calls_per_image"] > 0
    # the paper's adaptive schedule: 10 classes × 2 timesteps, then 3 survivors × 2 more
    assert {r[4] for r in _records(single)} == {10 * 2 + 3 * 2}
    md = (single / "results.md").read_text()
    assert "| Dataset | Method | Acc@1 ↑ (%) | 95% CI | FID ↓ |" in md and "| digits-test | lgtm:ratio=0.5 |" in md


def _subset_args(model: str, out: Path) -> list[str]:
    """The classify command both slow tests compare with the single-process run."""
    args = ["classify", "--model", model, "--dataset", "digits", "--subset", "8", *METHODS, *PROTOCOL]
    return [*args, "--out", str(out)]


@pytest.mark.slow
def test_two_accelerate_processes_give_the_single_process_result(model: str, single: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bigain.evaluate"]
    args = _subset_args(model, out)
    proc = subprocess.run(launch + args, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == ["classify-rank000.jsonl", "classify-rank001.jsonl"]
    ranks = {r["image"]: r["rank"] for r in store.read_records(out, "classify")}
    indices = json.loads((out / "run.json").read_text())["indices"]
    assert [ranks[i] for i in indices] == [k % 2 for k in range(len(indices))]  # image k of the list → rank k % 2
    assert _records(out) == _records(single)
    assert _table(out) == _table(single)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_table(model: str, single: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = _subset_args(model, out)
    proc = subprocess.Popen(_cli(*args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = store.shard_path(out, "classify", 0)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if shard.exists() and len(shard.read_text().splitlines()) >= 12:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(store.read_records(out, "classify"))
    assert 12 <= n_before < 40 and not (out / "results.json").exists()
    rerun = subprocess.run(_cli(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming classify" in rerun.stdout
    assert _records(out) == _records(single)
    assert _table(out) == _table(single)


def test_interrupted_run_resumes_without_redoing_work(
    model: str, single: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--max-new stops a run part-way (as a kill would); the rerun finishes it and only it."""
    out = tmp_path / "partial"
    args = ["classify", "--model", model, "--dataset", "digits", "--subset", "8", *METHODS, *PROTOCOL]
    assert main([*args, "--out", str(out), "--max-new", "17"]) == 0
    assert len(store.read_records(out, "classify")) == 17 and not (out / "results.json").exists()
    first = {(r["image"], r["method"]): r["wall_s"] for r in store.read_records(out, "classify")}
    assert main([*args, "--out", str(out)]) == 0
    after = {(r["image"], r["method"]): r["wall_s"] for r in store.read_records(out, "classify")}
    assert len(after) == 40 and all(after[k] == v for k, v in first.items())  # kept, not recomputed
    assert _records(out) == _records(single)
    assert _table(out) == _table(single)
    # other settings into the same folder: refused, naming what differs
    other = ["classify", "--model", model, "--dataset", "digits", "--subset", "9", *METHODS, *PROTOCOL]
    capsys.readouterr()
    assert main([*other, "--out", str(out)]) == 2
    assert "holds a run with other settings (indices:" in capsys.readouterr().err


def test_generate_writes_images_and_digits_fid(model: str, single: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    args = ["generate", "--model", model, "--dataset", "digits", "--subset", "8"]
    args += ["--methods", "baseline", "iekvd:alpha=0.9", "--steps", "3", "--out", str(out)]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    for slug in run["slugs"].values():
        files = sorted(p.name for p in (out / "images" / slug).iterdir())
        assert files == [f"{i:06d}.png" for i in run["indices"]]
    assert len(list((out / "real").iterdir())) == 8
    res = json.loads((out / "results.json").read_text())
    assert all(r["fid"] is not None and r["fid_features"].startswith("digits-MLP") for r in res["rows"])
    n_records = len(store.read_records(out, "generate"))
    assert main(args) == 0  # nothing left to do
    assert len(store.read_records(out, "generate")) == n_records == 16
    # report merges a classify and a generate run of the same data into the paper's rows
    md_path = tmp_path / "both.md"
    assert main(["report", str(single), str(out), "--md", str(md_path)]) == 0
    md = md_path.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| digits-test | iekvd:alpha=0.9 |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[3] != "–" and cells[5] != "–"  # Acc@1 and FID on one line


def test_inception_fid_is_optional_and_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    lib, reason = fidlib.backend()
    assert lib is None and ("not installed" in reason or "weights" in reason)
    note = fidlib.how_to(tmp_path / "run", {"k": "lgtm-123"}, reason)
    assert f"python -m pytorch_fid {tmp_path / 'run' / 'real'} {tmp_path / 'run' / 'images' / 'lgtm-123'}" in note

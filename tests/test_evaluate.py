"""python -m bigain.evaluate: class lists, dataset checks, sharding over Accelerate processes,
resuming after a kill, merging, and generation outputs — on the embedded digits model; the digits
replication (``digits``); the shared statistics and the run provenance."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bigain
from bigain import datasets as D
from bigain import provenance as P
from bigain.evaluate import fid as fidlib
from bigain.evaluate import report, stats, store
from bigain.evaluate.__main__ import main
from bigain.evaluate.run import select_indices
from bigain.models import assets_dir

ROOT = Path(__file__).resolve().parent.parent
# adaptive rounds as in the paper, scaled down: 2 timesteps for all classes, keep 3, then 4 in all
PROTOCOL = ["--n-pool", "4", "--n-samples", "2", "4", "--to-keep", "3", "1"]
METHODS = ["--methods", "baseline", "tome:ratio=0.5", "lgtm:ratio=0.5", "todo", "iekvd:alpha=0.9"]
# BIGAIN_GIT=0: provenance records skip `git status` (the dirty check has its own test below)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "BIGAIN_GIT": "0"}


@pytest.fixture(autouse=True)
def _no_git_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIGAIN_GIT", "0")


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
    from bigain.train import TrainConfig, train

    arch = _tiny_dit(num_layers=2, num_attention_heads=2, attention_head_dim=16)
    out = tmp_path_factory.mktemp("model") / "tiny-dit"
    train("digits-dit", out, TrainConfig(steps=60, batch_size=32), arch=arch, quiet=True)
    return str(out)


def _tiny_dit(**config: int) -> object:
    """The digits DiT's architecture with ``config`` overriding its constructor arguments."""
    from bigain import zoo

    a = zoo.arch("digits-dit")
    return dataclasses.replace(a, config={**a.config, **config})


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
    lo, hi = stats.wilson(81, 100)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (72.2, 87.5)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == pytest.approx(1.0)


def test_statistics() -> None:
    lo, hi = stats.wilson(90, 100)
    assert 0.82 < lo < 0.83 and 0.94 < hi < 0.95
    assert stats.wilson(0, 0) == (0.0, 1.0)
    t = stats.mcnemar_exact([True, True, False, True], [False, False, False, True])
    assert t == {"a_only": 2, "b_only": 0, "p": 0.5}
    assert stats.mcnemar_exact([True], [True])["p"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        stats.mcnemar_exact([True], [True, False])


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (0, 10), (10, 10), (3, 7), (81, 100), (90, 100), (345, 360)])
def test_scipy_wilson_equals_the_closed_form(k: int, n: int) -> None:
    z = 1.959963984540054  # the former hand-written interval, as the reference
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = stats.wilson(k, n)
    assert lo == pytest.approx(max(0.0, centre - half), rel=1e-12, abs=1e-15)
    assert hi == pytest.approx(min(1.0, centre + half), rel=1e-12, abs=1e-15)
    assert 0.0 <= lo <= p <= hi <= 1.0


@pytest.mark.parametrize(("b01", "b10"), [(2, 0), (0, 1), (1, 0), (5, 3), (3, 5), (7, 7), (10, 20), (0, 37), (60, 41)])
def test_scipy_mcnemar_equals_the_binomial_sum(b01: int, b10: int) -> None:
    n = b01 + b10  # the former hand-written exact test, as the reference
    ref = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b01, b10) + 1)) / 2**n)
    a = [True] * b01 + [False] * b10 + [True, False] * 3  # plus concordant pairs, which do not count
    b = [False] * b01 + [True] * b10 + [True, False] * 3
    t = stats.mcnemar_exact(a, b)
    assert (t["a_only"], t["b_only"]) == (b01, b10)
    assert t["p"] == pytest.approx(ref, rel=1e-12)


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
    # provenance: the run that computed the records (run.json, results.md) and the writer of results.json
    (run,) = res["run"]["provenance"]
    assert run["command"].startswith("python -m bigain.evaluate classify --model") and run["processes"] == 1
    assert run["device"] == "cpu" and run["versions"]["torch"] == torch.__version__
    assert res["provenance"]["command"] == run["command"] and res["provenance"]["timestamp"].endswith("Z")
    assert f"Command: `{run['command']}`  " in md and f"Device: {P.device_label(run)}" in md


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
    """SIGKILL at a chosen point ($BIGAIN_EVAL_KILL_AFTER: right after the 13th record, part-way
    through the third image), plus the torn line a kill mid-write leaves; the rerun finishes it."""
    out = tmp_path / "killed"
    args = _subset_args(model, out)
    k = 13
    killed = subprocess.run(_cli(*args), env={**ENV, "BIGAIN_EVAL_KILL_AFTER": str(k)}, capture_output=True,
                            timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    n_before = len(store.read_records(out, "classify"))
    assert n_before == k and not (out / "results.json").exists()
    with store.shard_path(out, "classify", 0).open("a") as f:
        f.write('{"image": 99, "meth')  # killed mid-write
    rerun = subprocess.run(_cli(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming classify" in rerun.stdout
    assert _records(out) == _records(single)
    assert _table(out) == _table(single)
    runs = json.loads((out / "run.json").read_text())["provenance"]  # the killed run and the rerun
    assert len(runs) == 2 and all(r["command"].startswith("python -m bigain.evaluate classify") for r in runs)


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
    runs = json.loads((out / "run.json").read_text())["provenance"]
    cmd = " ".join(["python -m bigain.evaluate", *args, "--out", str(out)])
    assert [r["command"] for r in runs] == [f"{cmd} --max-new 17", cmd]
    md = (out / "results.md").read_text()
    assert (
        "Computed in 2 runs (resumed or extended):" in md and "* [2] Command: `python -m bigain.evaluate classify" in md
    )
    assert main([*args, "--out", str(out)]) == 0  # nothing left to do: no new provenance record
    assert len(json.loads((out / "run.json").read_text())["provenance"]) == 2
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


# ---- the digits replication (python -m bigain.evaluate digits): cached-assignment rows, row merging ----


def test_cached_assignment_specs_parse_and_pair_with_their_uncached_method() -> None:
    from bigain.evaluate import digits as E
    from bigain.methods import LGTM, ToMe, parse_method

    specs = dict(E.METHOD_SPECS)
    for key, base in E.CACHED.items():
        m, b = parse_method(specs[key]), parse_method(specs[base])
        assert type(m) is type(b) and type(m) in (ToMe, LGTM) and m.ratio == b.ratio
        assert b.reuse == "off" and m.reuse == ("steps" if key.endswith("-steps3") else "call")
        assert m.reuse_every == (3 if m.reuse == "steps" else 1) and (key, base) in E.PAIRS
    assert sorted(E.CACHED) == sorted(
        f"{n}-{r}-{h}" for n in ("tome", "lgtm") for r, h in (("0.5", "call"), ("0.7", "call"), ("0.7", "steps3"))
    )
    # defaults unchanged: the cached rows are asked for by name or as the `cached` group
    assert not set(E.CACHED) & set(E.CLASSIFY_DEFAULT) and len(E.CLASSIFY_DEFAULT) == 14  # 11 + SiTo ×3
    assert not set(E.CACHED) & set(E.GEN_DEFAULT)
    cls = [k for k, _ in E._methods(["cached", "tome-0.7"], E.CLASSIFY_DEFAULT, "classification")]
    assert cls == ["tome-0.5-call", "tome-0.7", "tome-0.7-call", "lgtm-0.5-call", "lgtm-0.7-call"]
    gen = [k for k, _ in E._methods(["cached"], E.GEN_DEFAULT, "generation")]
    assert sorted(gen) == sorted(E.CACHED)
    assert [k for k, _ in E._methods(None, E.CLASSIFY_DEFAULT, "classification")] == E.CLASSIFY_DEFAULT
    assert "lgtm-0.7-steps3" not in [k for k, _ in E._methods(["all"], None, "classification")]
    with pytest.raises(ValueError, match="reuse=steps only changes generation"):
        E._methods(["lgtm-0.7-steps3"], E.CLASSIFY_DEFAULT, "classification")
    with pytest.raises(ValueError, match="unknown method keys"):
        E._methods(["tome-0.9-call"])


def test_sito_and_ablation_rows_parse_and_pair_with_their_references() -> None:
    from bigain.evaluate import digits as E
    from bigain.methods import LGTM, FreqKV, SiTo, parse_method

    specs = dict(E.METHOD_SPECS)
    for r in ("0.3", "0.5", "0.7"):
        m = parse_method(specs[f"sito-{r}"])
        assert type(m) is SiTo and m.ratio == float(r) and f"sito-{r}" in E.CLASSIFY_DEFAULT
        assert {(f"sito-{r}", f"lgtm-{r}"), (f"sito-{r}", f"tome-{r}")} <= set(E.PAIRS)
    assert {"sito-0.5", "sito-0.7"} <= set(E.GEN_DEFAULT)
    scorers = ("mean_deviation", "l1", "l2", "variance", "dft", "cosine", "inverse_cosine")
    for r in ("0.5", "0.7"):
        for s in scorers:
            key = f"lgtm-{r}-{s}"
            m = parse_method(specs[key])
            assert type(m) is LGTM and m.scorer == s and m.ratio == float(r) and (key, f"lgtm-{r}") in E.PAIRS
    for keep in ("high", "low"):
        m = parse_method(specs[f"freqkv-2-{keep}"])
        assert type(m) is FreqKV and m.keep == keep and m.factor == 2
        assert {(f"freqkv-2-{keep}", "todo-2"), (f"freqkv-2-{keep}", "iekvd-2-a0.9")} <= set(E.PAIRS)
    assert ("freqkv-2-high", "freqkv-2-low") in E.PAIRS
    # the ablations are a group of their own, in neither default set
    assert len(E.ABLATIONS) == 16 and "ablations" in E.GROUPS
    assert not set(E.ABLATIONS) & set(E.CLASSIFY_DEFAULT) and not set(E.ABLATIONS) & set(E.GEN_DEFAULT)
    keys = [k for k, _ in E._methods(["ablations", "sito-0.5"], E.CLASSIFY_DEFAULT, "classification")]
    assert keys == ["sito-0.5", *E.ABLATIONS]  # METHOD_SPECS order: SiTo, the scorers, …, Freq-KV
    order = [k for k, _ in E.METHOD_SPECS]
    assert order.index("iekvd-2-a0.8-1.2") < order.index("freqkv-2-high")


def test_ablation_rows_get_the_paper_layout_and_old_reports_do_not() -> None:
    from bigain.evaluate import digits as E
    from bigain.methods import parse_method

    labels = [0, 1, 2, 3, 4, 5]
    specs = dict(E.METHOD_SPECS)
    preds = {
        "baseline": labels,
        "lgtm-0.5": [0, 1, 2, 3, 4, 0],
        "lgtm-0.5-dft": [0, 1, 2, 3, 0, 0],
        "todo-2": [0, 1, 2, 0, 4, 5],
        "iekvd-2-a0.9": labels,
        "freqkv-2-high": [0, 0, 0, 3, 4, 5],
        "freqkv-2-low": [0, 1, 2, 3, 4, 0],
    }
    rows = {}
    for key, pred in preds.items():
        m = parse_method(specs[key])
        rows[key] = {**_cls_row(m.label(), pred, labels), "params": {"name": m.name, **m.params()}}
    run = {"command": "c", "device": "cpu"}
    part = E.merge_part(None, _cls_part(rows, labels), run, "classification")
    md = report.digits_markdown({"model": "m", "logistic_regression_acc": 96.7, "classification": part})
    assert "## Ablations" in md
    assert "| laplacian (L-GTM) | 83.3 | " in md and "| dft | 66.7 | " in md and " | 1 (0/1) |" in md
    assert "| Freq-KV s=2 high | 66.7 | " in md and "| Freq-KV s=2 low | 83.3 | " in md
    assert "freqkv-2-high vs freqkv-2-low: only first right 1, only second right 2, p = 1." in md
    # without ablation rows the report is as before (the shipped reports of older runs stay byte-identical)
    plain = {k: r for k, r in rows.items() if k in ("baseline", "lgtm-0.5", "todo-2")}
    part = E.merge_part(None, _cls_part(plain, labels), run, "classification")
    assert "Ablations" not in report.digits_markdown({"model": "m", "logistic_regression_acc": 96.7,
                                                      "classification": part})  # fmt: skip


def _cls_row(label: str, pred: list[int], labels: list[int]) -> dict:
    k = sum(p == t for p, t in zip(pred, labels, strict=True))
    lo, hi = stats.wilson(k, len(labels))
    return {
        "method": label,
        "correct": k,
        "n": len(labels),
        "acc": 100 * k / len(labels),
        "ci95": [100 * lo, 100 * hi],
        "evals_per_image": 100.0,
        "denoiser_s_per_image": 0.1,
        "pred": pred,
    }


def _cls_part(rows: dict, labels: list[int], protocol: dict | None = None) -> dict:
    return {
        "images": list(range(len(labels))),
        "labels": labels,
        "protocol": protocol or {"n_pool": 10},
        "methods": rows,
    }


def test_merging_new_rows_keeps_old_rows_and_their_provenance() -> None:
    from bigain.evaluate import digits as E

    labels = [0, 1, 2, 3, 4, 5]
    gpu = {"command": "python -m bigain eval digits --device cuda", "device": "cuda:0 (8 threads)"}
    cpu = {"command": "python -m bigain eval digits --methods cached lgtm-0.7", "device": "cpu (1 threads)"}
    # an earlier part as the shipped JSON holds it: one run for the part, none per row
    old = _cls_part(
        {
            "baseline": _cls_row("Baseline", labels, labels),
            "lgtm-0.7": _cls_row("L-GTM r=0.7", [0, 1, 2, 3, 4, 0], labels),
            "todo-2": _cls_row("ToDo s=2", [0, 1, 2, 3, 0, 0], labels),
        },
        labels,
    )
    old["run"], old["paired"] = gpu, {}
    new = _cls_part(
        {
            "lgtm-0.7": _cls_row("L-GTM r=0.7", [0, 1, 2, 3, 0, 5], labels),
            "lgtm-0.7-call": _cls_row("L-GTM r=0.7 cached/call", [0, 1, 2, 0, 0, 0], labels),
        },
        labels,
    )
    part = E.merge_part(old, new, cpu, "classification")
    rows = part["methods"]
    assert list(rows) == ["baseline", "lgtm-0.7", "lgtm-0.7-call", "todo-2"]  # METHOD_SPECS order
    assert rows["baseline"]["run"] == rows["todo-2"]["run"] == gpu  # kept, with the run that measured them
    assert rows["lgtm-0.7"]["run"] == rows["lgtm-0.7-call"]["run"] == part["run"] == cpu
    assert rows["lgtm-0.7"]["pred"] == [0, 1, 2, 3, 0, 5]  # re-measured: the new row replaces the old one...
    assert part["superseded"]["lgtm-0.7"][0]["pred"] == [0, 1, 2, 3, 4, 0]  # ...which is kept, with its run
    assert part["superseded"]["lgtm-0.7"][0]["run"] == gpu
    t = part["paired"]["lgtm-0.7-call vs lgtm-0.7"]
    assert (t["a_only"], t["b_only"], t["same_run"]) == (0, 2, True)
    assert part["paired"]["lgtm-0.7-call vs baseline"]["same_run"] is False
    md = report.digits_markdown({"model": "m", "logistic_regression_acc": 96.7, "classification": part})
    assert f"[1] Command: `{gpu['command']}`; device: {gpu['device']}" in md
    assert f"[2] Command: `{cpu['command']}`; device: {cpu['device']}" in md
    assert "| L-GTM r=0.7 cached/call | 50.0 |" in md and md.count("| [1] |") == 3  # baseline, todo-2, superseded
    assert "| lgtm-0.7-call vs lgtm-0.7 | 0 | 2 | 0.5 | yes |" in md
    # a later run adding another row keeps both earlier runs' rows and the superseded one
    more = _cls_part({"tome-0.7-call": _cls_row("ToMe r=0.7 cached/call", labels, labels)}, labels)
    third = {"command": "python -m bigain eval digits --methods tome-0.7-call", "device": "cpu"}
    again = E.merge_part(part, more, third, "classification")
    assert {k: r["run"] for k, r in again["methods"].items() if k != "tome-0.7-call"} == {
        k: r["run"] for k, r in rows.items()
    }
    assert again["superseded"] == part["superseded"] and "[3] Command:" in report.digits_markdown(
        {"model": "m", "logistic_regression_acc": 96.7, "classification": again}
    )
    # other test images or protocol: the earlier rows cannot share the table
    other = _cls_part({"lgtm-0.7-call": new["methods"]["lgtm-0.7-call"]}, labels, {"n_pool": 4})
    assert list(E.merge_part(old, other, cpu, "classification")["methods"]) == ["lgtm-0.7-call"]


def test_generation_rows_merge_with_paired_recognition_tests() -> None:
    from bigain.evaluate import digits as E

    ref = {"model": "MLP", "test_acc": 98.9, "fid_ref_train_vs_test": 4.34113}
    row = {
        "recognised": 0,
        "n": 20,
        "cond_acc": 0.0,
        "ci95": [0, 1],
        "fid_ref": 1.0,
        "kid_ref": 0.1,
        "denoiser_s_per_call": 0.01,
    }
    old = {
        "per_class": 2,
        "steps": 25,
        "guidance": 2.0,
        "reference": ref,
        "run": {"command": "a", "device": "cuda"},
        "methods": {"baseline": {**row, "method": "Baseline"}, "tome-0.7": {**row, "method": "ToMe r=0.7"}},
    }
    truth = "".join(str(c) for c in range(10) for _ in range(2))
    new = {
        "per_class": 2,
        "steps": 25,
        "guidance": 2.0,
        "reference": {**ref, "fid_ref_train_vs_test": 4.34112},
        "methods": {
            "tome-0.7": {**row, "method": "ToMe r=0.7", "pred": truth},
            "tome-0.7-steps3": {
                **row,
                "method": "ToMe r=0.7 cached/3 steps",
                "pred": "9" + truth[1:],
                "mse_vs": {"tome-0.7": 0.02},
            },
        },
    }
    part = E.merge_part(old, new, {"command": "b", "device": "cpu"}, "generation")
    assert list(part["methods"]) == ["baseline", "tome-0.7", "tome-0.7-steps3"]
    assert part["methods"]["baseline"]["run"] == old["run"] and "tome-0.7" in part["superseded"]
    t = part["paired"]["tome-0.7-steps3 vs tome-0.7"]
    assert (t["a_only"], t["b_only"], t["mse"], t["same_run"]) == (0, 1, 0.02, True)
    md = report.digits_markdown({"model": "m", "logistic_regression_acc": 96.7, "generation": part})
    assert "| tome-0.7-steps3 vs tome-0.7 | 0 | 1 | 1 | 0.0200 | yes |" in md and "Command: `a`; device: cuda" in md
    # other samples per class: replaced, not mixed
    three = {**new, "per_class": 3, "methods": {"tome-0.7": {**row, "method": "ToMe r=0.7"}}}
    assert list(E.merge_part(old, three, {"command": "b", "device": "cpu"}, "generation")["methods"]) == ["tome-0.7"]


def test_sample_grid_round_trips_its_tiles(tmp_path: Path) -> None:
    from bigain.evaluate import digits as E

    rng = np.random.default_rng(0)
    tiles = {k: rng.integers(0, 256, (10, 16, 16), dtype=np.uint8) for k in ("baseline", "lgtm-0.7-steps3")}
    labels = {"baseline": "Baseline", "lgtm-0.7-steps3": "L-GTM r=0.7 cached/3 steps"}
    E.tile_grid(tiles, labels, tmp_path / "g.png")
    back = E.tiles_from_grid(tmp_path / "g.png", 2)
    assert back is not None and all(np.array_equal(a, b) for a, b in zip(tiles.values(), back, strict=True))
    assert E.tiles_from_grid(tmp_path / "g.png", 3) is None  # not that many rows: not this picture
    assert np.array_equal(E.decode_tiles(E.encode_tiles(tiles["baseline"])), tiles["baseline"])


def test_eval_run_adds_rows_to_an_earlier_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run() with the measuring stubbed out: only the asked-for rows are measured; the report, the
    JSON and the sample picture keep the earlier rows, each with the command and device behind it."""
    from types import SimpleNamespace

    from bigain.evaluate import digits as E

    labels, per_class = [3, 1, 4, 1, 5], 2
    tiles = {k: np.full((10, 16, 16), v, dtype=np.uint8) for k, v in (("baseline", 200), ("todo-2", 90))}
    samples = {k: np.repeat(t[:, None].astype(np.float32) / 127.5 - 1, per_class, axis=0) for k, t in
               [("baseline", tiles["baseline"]), ("lgtm-0.7-call", tiles["todo-2"] // 3)]}  # fmt: skip
    gen_row = {"recognised": 20, "n": 20, "cond_acc": 100.0, "ci95": [80, 100], "fid_ref": 1.0, "kid_ref": 0.1,
               "denoiser_s_per_call": 0.01}  # fmt: skip
    ref = {"model": "MLP", "test_acc": 98.9, "fid_ref_train_vs_test": 4.3}
    gen_meta = {"per_class": per_class, "steps": 25, "guidance": 2.0, "reference": ref}
    truth = "".join(str(c) for c in range(10) for _ in range(per_class))
    gpu = {"command": "python -m bigain eval digits --device cuda", "device": "cuda:0"}
    old_cls = _cls_part({"baseline": _cls_row("Baseline", labels, labels),
                         "todo-2": _cls_row("ToDo s=2", [3, 1, 4, 1, 0], labels)}, labels)  # fmt: skip
    old_gen = {**gen_meta, "methods": {"baseline": {**gen_row, "method": "Baseline"},
                                       "todo-2": {**gen_row, "method": "ToDo s=2"}}}  # fmt: skip
    old = {"model": "fake", **gpu, "training": None, "classification": old_cls, "generation": old_gen}
    (tmp_path / "fake.json").write_text(json.dumps(old))
    E.tile_grid(tiles, {"baseline": "Baseline", "todo-2": "ToDo s=2"}, tmp_path / "fake-samples.png")

    def classification(model, methods, limit, progress):
        keys = [k for k, _ in methods]
        assert keys == ["lgtm-0.7-call"]
        return _cls_part({"lgtm-0.7-call": _cls_row("L-GTM r=0.7 cached/call", [3, 1, 4, 0, 0], labels)}, labels)

    def generation(model, methods, n, progress):
        assert [k for k, _ in methods] == ["baseline", "lgtm-0.7-call"] and n == per_class
        thumbs = {k: E.encode_tiles(E.first_tiles(s, n)) for k, s in samples.items()}
        rows = {k: {**gen_row, "method": m.label(), "pred": truth, "thumbs": thumbs[k]} for k, m in methods}
        return {**gen_meta, "methods": rows}, samples

    model = SimpleNamespace(card=SimpleNamespace(name="fake"), device="cpu")
    monkeypatch.setattr(E, "load_model", lambda name, device=None: model)
    monkeypatch.setattr(E.digits, "logistic_baseline", lambda: {"correct": 348, "n": 360})
    monkeypatch.setattr(E, "eval_classification", classification)
    monkeypatch.setattr(E, "eval_generation", generation)
    monkeypatch.setattr(E, "sensitivity", lambda model, methods: {"n_images": 1, "timesteps": [100], "seed": 0,
                                                                  "ratio": {k: 0.1 for k, _ in methods}})  # fmt: skip
    cmd = "python -m bigain eval digits --methods lgtm-0.7-call --gen-methods baseline lgtm-0.7-call"
    res = E.run("fake", tmp_path, samples=per_class, method_keys=["lgtm-0.7-call"],
                gen_keys=["baseline", "lgtm-0.7-call"], command=cmd)  # fmt: skip
    saved = json.loads((tmp_path / "fake.json").read_text())
    assert saved["classification"] == res["classification"]
    c, g = saved["classification"]["methods"], saved["generation"]["methods"]
    assert list(c) == ["baseline", "lgtm-0.7-call", "todo-2"] and list(g) == ["baseline", "lgtm-0.7-call", "todo-2"]
    assert c["todo-2"]["run"] == c["baseline"]["run"] == g["todo-2"]["run"] == gpu
    assert c["todo-2"]["pred"] == old_cls["methods"]["todo-2"]["pred"]
    assert c["lgtm-0.7-call"]["run"]["command"] == cmd and g["baseline"]["run"]["command"] == cmd
    assert list(saved["sensitivity"]["ratio"]) == ["baseline", "lgtm-0.7-call", "todo-2"]  # the whole table
    # the earlier picture's rows carried over (its Baseline row matches the new Baseline): all three drawn
    assert np.array_equal(E.decode_tiles(g["todo-2"]["thumbs"]), tiles["todo-2"])
    drawn = E.tiles_from_grid(tmp_path / "fake-samples.png", 3)
    assert drawn is not None and np.array_equal(drawn[2], tiles["todo-2"])
    assert np.array_equal(drawn[1], E.first_tiles(samples["lgtm-0.7-call"], per_class))
    md = (tmp_path / "fake.md").read_text()
    assert f"[1] Command: `{gpu['command']}`; device: cuda:0" in md and f"[2] Command: `{cmd}`" in md
    assert "| lgtm-0.7-call vs baseline | 0 | 2 | 0.5 | no |" in md


def test_sensitivity_is_zero_for_no_change_and_grows_with_ratio() -> None:
    from bigain.evaluate import digits as E
    from bigain.models import load_model

    m = load_model("digits-dit")
    keys = [("baseline", bigain.Baseline()), ("a", bigain.ToMe(ratio=0.3, use_rand=False)),
            ("b", bigain.ToMe(ratio=0.7, use_rand=False)), ("c", bigain.ToMe(ratio=0.5))]  # fmt: skip
    r = E.sensitivity(m, keys, n_images=8)["ratio"]
    assert "baseline" not in r and 0 < r["a"] < r["b"] < r["no self-attention"]
    bigain.generate(m, 3, steps=2, method=bigain.ToMe(ratio=0.5))  # draws from ToMe's generator in between
    assert r == E.sensitivity(m, keys, n_images=8)["ratio"]  # seeded, ToMe's random choices too


def test_digits_is_a_subcommand_of_the_one_evaluation_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["digits", "--models", "digits-dit", "--grid-only", "--gen-methods", "baseline", "--out",
                 str(tmp_path)]) == 0  # fmt: skip
    assert (tmp_path / "digits-dit-samples.png").is_file()
    assert main(["digits", "--models", "digits-dit", "--methods", "tome-0.9", "--out", str(tmp_path)]) == 2
    assert "unknown method keys" in capsys.readouterr().err


def test_shipped_reports_render_from_their_json() -> None:
    """assets/eval/*.md are digits_markdown of the JSON next to them (the provenance lines included)."""
    for path in sorted((ROOT / "assets" / "eval").glob("digits-*.json")):
        res = json.loads(path.read_text())
        assert report.digits_markdown(res) == path.with_suffix(".md").read_text(), path.name


# ---- provenance (bigain.provenance) ---------------------------------------------------------


def test_provenance_record_and_its_markdown() -> None:
    p = P.provenance("cpu", "python -m bigain eval digits --limit 4", packages=("numpy",))
    assert set(p) >= {"command", "git_commit", "timestamp", "device", "device_name", "threads", "cpu", "cpu_count",
                      "python", "platform", "versions"}  # fmt: skip
    assert p["command"] == "python -m bigain eval digits --limit 4" and p["device"] == "cpu"
    assert p["versions"]["bigain"] == bigain.__version__ and p["versions"]["torch"] == torch.__version__
    assert p["versions"]["numpy"] == np.__version__ and "diffusers" in p["versions"]
    assert p["threads"] == torch.get_num_threads() and p["device_name"] == P.cpu_name()
    assert len(p["timestamp"]) == 20 and p["timestamp"][10] == "T" and p["timestamp"].endswith("Z")
    assert json.loads(json.dumps(p)) == p
    n = p["threads"]
    label = f"cpu ({p['device_name']}, torch {torch.__version__}, {n} thread{'s' if n != 1 else ''})"
    assert P.device_label(p) == label
    s = P.summary(p)
    assert s == {"command": p["command"], "device": label, "git_commit": p["git_commit"], "timestamp": p["timestamp"]}
    assert P.summary(s) is s
    commit = f"`{p['git_commit']}`, " if p["git_commit"] else ""
    assert P.markdown_lines(p) == [f"Command: `{p['command']}`  ", f"Device: {label}  ",
                                   f"Commit: {commit}{p['timestamp']}"]  # fmt: skip
    assert P.markdown_inline(s) == f"Command: `{p['command']}`; device: {label}; commit: {commit}{p['timestamp']}"
    # a compact record from before commits were recorded: the two lines it always had
    old = {"command": "c", "device": "cuda:0 (8 threads)"}
    assert P.markdown_lines(old) == ["Command: `c`  ", "Device: cuda:0 (8 threads)"]
    assert P.markdown_inline(old) == "Command: `c`; device: cuda:0 (8 threads)"


def test_git_commit_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "4c753a04886e2b6727064496827edc3e4be56582"
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(sha + "\n")
    root = git.parent
    assert P.git_commit(root) == sha + "-dirty?"  # BIGAIN_GIT=0: not checked
    monkeypatch.delenv("BIGAIN_GIT")
    monkeypatch.delenv("BIGAIN_BENCH_GIT", raising=False)
    calls = []

    def status(out: str, rc: int = 0):
        def run(cmd, **kw):
            calls.append((cmd, kw["cwd"]))
            return subprocess.CompletedProcess(cmd, rc, stdout=out, stderr="")

        return run

    monkeypatch.setattr(P.subprocess, "run", status(" M bigain/x.py\n"))
    assert P.git_commit(root) == sha + "-dirty"
    assert calls[-1] == (["git", "--no-optional-locks", "status", "--porcelain", "--", "bigain"], root)
    monkeypatch.setattr(P.subprocess, "run", status(""))
    assert P.git_commit(root) == sha
    monkeypatch.setattr(P.subprocess, "run", status("", 128))
    assert P.git_commit(root) == sha + "-dirty?"
    (git / "refs" / "heads" / "main").unlink()  # packed refs
    (git / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
    monkeypatch.setattr(P.subprocess, "run", status(""))
    assert P.git_commit(root) == sha
    (git / "HEAD").write_text(sha[::-1] + "\n")  # detached
    assert P.git_commit(root) == sha[::-1]
    wt = tmp_path / "worktree"
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {git}\n")
    assert P.git_commit(wt) == sha[::-1]
    assert P.git_commit(tmp_path / "nowhere") is None
    monkeypatch.setenv("BIGAIN_GIT_COMMIT", "given-dirty")
    assert P.git_commit(root) == "given-dirty"
    assert P.short_commit(sha + "-dirty") == "4c753a0-dirty" and P.short_commit(sha) == "4c753a0"
    assert P.short_commit(None) is None


def test_command_line_names_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    monkeypatch.setitem(sys.modules, "__main__", SimpleNamespace(__spec__=SimpleNamespace(name="bigain.__main__")))
    assert P.command_line(["/x/bigain/__main__.py", "eval", "digits"]) == "python -m bigain eval digits"
    monkeypatch.setitem(sys.modules, "__main__", SimpleNamespace(__spec__=None))
    assert P.command_line(["train.py", "--steps", "2"]) == "python train.py --steps 2"


def test_training_record_keeps_git_commit_next_to_its_provenance(tmp_path: Path) -> None:
    """The evaluations key their reuse of earlier rows on training.json's git_commit (shipped records too)."""
    from bigain.evaluate import digits as E
    from bigain.train import TrainConfig, train

    arch = _tiny_dit(num_layers=1, num_attention_heads=1, attention_head_dim=8)
    rec = train("digits-dit", tmp_path, TrainConfig(steps=1, batch_size=2), arch=arch, quiet=True, command="cmd")
    assert rec["git_commit"] == rec["provenance"]["git_commit"] and rec["provenance"]["command"] == "cmd"
    assert rec["command"] == "cmd" and rec["provenance"]["device"] == "cpu"
    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["provenance"] == rec["provenance"]
    shipped = E._training("digits-dit")  # a record from before provenance
    assert shipped is None or set(shipped) == {"steps", "seed", "final_loss", "wall_s", "git_commit"}

"""The Gradio app: handlers in-process, the page built from the registry, the precomputed tab examples
(written by ``python -m bigain.ui.examples``, read at start-up without running a model), then the
launched app through gradio_client (named parameters, bad inputs answered with the field's sentence,
cancelling, the per-visitor limit). Runs on the shipped embedded digits models, few steps; no network,
no GPU (the glyph models are the app's default, but the tests never need their weights)."""

from __future__ import annotations

import json
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import app
from bigain import explain, viz
from bigain.explain import bundled
from bigain.methods import METHODS, Method, param
from bigain.models import ModelUnavailable
from bigain.ui import common, knobs

STEPS = 3
TWO = ["tome", "lgtm"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digit() -> str:
    return explain.digit_examples()[3][0]  # a test-split "3"


# ---- handlers, in-process -------------------------------------------------------------------------


def test_generate_compares_samples_of_every_method_against_the_baseline() -> None:
    gallery, slider, compare, strips, diffs, table, speed, quality, summary = app.generate(
        "digits-dit", "7", TWO, seed=1, steps=STEPS, guidance=2.0, samples=3, rounds=2
    )
    assert [c.split(" ×")[0].split(" · ")[0] for _, c in gallery] == ["Baseline"] * 3 + ["ToMe"] * 3 + ["L-GTM"] * 3
    assert [c.split(" · ")[1] for _, c in gallery[:3]] == ["1", "2", "3"]  # the sample, the same seeds per method
    assert all(img.size == (128, 128) for img, _ in gallery)  # 16×16 digits enlarged ×8, nearest
    assert slider[0] is strips["Baseline"] and slider[1] is strips["L-GTM r=0.7"] and compare["value"] == "L-GTM r=0.7"
    assert strips["Baseline"].size == (256, 256)  # sample 1 on both sides of the slider, enlarged
    assert strips["Baseline"].tobytes() == viz.enlarge(gallery[0][0], 256).tobytes()
    assert isinstance(table, pd.DataFrame) and list(table["method"]) == ["Baseline", "ToMe r=0.5", "L-GTM r=0.7"]
    assert table["speed-up (×)"].iloc[0] == 1.0
    assert (table["GFLOPs / call"].iloc[1:] < table["GFLOPs / call"].iloc[0]).all()  # compression saves FLOPs
    assert diffs is not None and speed is not None and "3 steps" in summary and "3 samples" in summary
    assert "digits evaluation" in quality and "| ToMe r=0.5 | 90.0 | -5.8 |" in quality  # from assets/eval
    n = torch.get_num_threads()  # every timing says the threads it was measured with
    assert f"measured in this run on this machine (cpu, {n} thread" in summary and set(table["threads"]) == {n}


def test_generate_kv_methods_with_an_alpha_schedule_on_the_unet() -> None:
    out = app.generate(
        "digits-unet",
        "2",
        ["todo", "iekvd"],
        {"iekvd": {"alpha": 0.8, "alpha_end": 1.2}},
        steps=STEPS,
        samples=1,
        rounds=1,
    )
    assert list(out[5]["method"]) == ["Baseline", "ToDo s=2", "IE-KVD s=2 α=0.8→1.2"]


def test_classify_reports_top5_agreement_and_evidence(digit: str) -> None:
    table, summary, plot = app.classify("digits-dit", digit, "", TWO, rounds=1)
    assert list(table.columns) == ["rank", "Baseline", "ToMe r=0.5", "L-GTM r=0.7"]
    assert len(table) == 5 and table["Baseline"].str.match(r"^\d \(\d\.\d\d\)$").all()  # "class (score)"
    assert "predict" in summary and "evaluations" in summary and plot is not None
    assert f"(cpu, {torch.get_num_threads()} thread" in summary  # the thread count of the timings
    img = Image.open(digit)
    for variant in (img.convert("RGBA"), img.convert("P"), img.convert("RGB").resize((300, 200)), img.resize((3, 3))):
        table, _, _ = app.classify("digits-unet", variant, "3, 8", [], rounds=1)
        assert {c.split()[0] for c in table["Baseline"] if c} == {"3", "8"}


def test_look_inside_opens_at_the_middle_step_and_numbers_steps_from_one() -> None:
    out = app.look_inside("digits-dit", "5", "lgtm", {"lgtm": {"ratio": 0.5}}, steps=5)
    inside, image, step = out[0], out[1], out[2]
    assert isinstance(inside, explain.Inside) and image.size == (256, 256)
    assert step["value"] == 3 and step["maximum"] == 5  # the middle one, not step 1 (pure noise)
    assert [p["visible"] for p in out[4:7]] == [True, True, False] and "step 3 of 5" in out[7]
    assert out[7].startswith("**Recorded here at ") and "L-GTM r=0.5, 5 steps" in out[7]  # a visible change
    again = app.look_inside("digits-dit", "5", "lgtm", {"lgtm": {"ratio": 0.5}}, steps=5)
    assert again[7].split("\n\n", 1)[1] == out[7].split("\n\n", 1)[1]  # the same recording, told it was just made
    for k in (1, 5):
        *_plots, caption = app.inside_step(inside, k, inside.blocks[-1])
        assert f"step {k} of 5" in caption
    kv = app.look_inside("digits-unet", "5", "iekvd", steps=STEPS)
    assert [p["visible"] for p in kv[4:7]] == [False, False, True]
    assert [p["visible"] for p in app.look_inside("digits-dit", "5", "tome", steps=STEPS)[4:7]] == [False, True, False]


def test_learn_on_photos_figure6_and_benchmarks(digit: str) -> None:
    photos = bundled.photo_examples()
    assert [Path(p).name.split("_")[1] for (p,) in photos] == list(bundled.PHOTOS)
    for image, grid in ((photos[0][0], 64), (digit, 16)):
        assert all(f is not None for f in app.learn(image, grid, 0.5, 2, 1.2))
    assert app.figure6(photos[0][0]) is not None
    text, plots = app.benchmarks()
    assert text and all(Path(p).is_file() for p, _ in plots)
    head = app.headline()
    assert "| digits-dit | res 16, batch 128 |" in head and "ceiling" in head and "L-GTM r=0.5 |" in head


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: app.generate("digits-dit", "", TWO, steps=STEPS), "Class or prompt must be given"),
        (lambda d: app.generate("digits-dit", "eleven", TWO, steps=STEPS), "unknown class"),
        (lambda d: app.generate("digits-dit", "3", ["tome"], {"tome": {"ratio": 0.99}}), "ratio"),
        (lambda d: app.generate("digits-dit", "3", ["iekvd"], {"iekvd": {"factor": 9}}), "factor"),
        (lambda d: app.generate("digits-dit", "3", ["nope"]), "unknown method"),
        (lambda d: app.generate("digits-dit", "3", TWO, seed=-1), "seed"),
        (lambda d: app.generate("digits-dit", "3", TWO, steps=5000), "steps"),
        (lambda d: app.generate("digits-dit", "3", TWO, rounds=0), "timing rounds"),
        (lambda d: app.generate("nope", "3", TWO), "unknown model"),
        (lambda d: app.generate("digits-dit", "3", TWO, execution="warp"), "Execution must be one of"),
        (lambda d: app.classify("digits-dit", None, "", TWO), "Image is missing"),
        (lambda d: app.classify("digits-dit", d, "3, 3", TWO), "duplicated"),
        (lambda d: app.classify("digits-dit", d, "3,,5", TWO), "empty entries"),
        (lambda d: app.classify("digits-dit", d, "3", TWO), "at least two"),
        (lambda d: app.classify("digits-dit", d, ",".join(map(str, range(1001))), TWO), "at most"),
        (lambda d: app.classify("digits-dit", d, "3, cat", TWO), "unknown class"),
        (lambda d: app.classify("digits-dit", __file__, "", TWO), "not an image"),
        (lambda d: app.inside_step(None, 1, None), "run a generation first"),
        (lambda d: app.look_inside("digits-dit", "3", ""), "Method must be chosen"),
        (lambda d: app.learn(None, 16, 0.5, 2, 0.9), "Image is missing"),
        (lambda d: app.learn(d, 16, 0.5, 2.5, 0.9), "whole number"),
    ],
)
def test_bad_input_gives_a_readable_error(call, message: str, digit: str) -> None:
    with pytest.raises(gr.Error, match=message):
        call(digit)


def test_unavailable_hub_model_is_a_sentence_and_leaves_the_widgets_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str) -> None:
        raise ModelUnavailable(f"{name}: could not load it from the Hugging Face cache or the hub")

    monkeypatch.setattr(common, "load_model", offline)
    common.model.cache_clear()
    try:
        with pytest.raises(gr.Error, match="sd2-base: could not load"):
            app.generate("sd2-base", "a cat", TWO)
    finally:
        monkeypatch.undo()
        common.model.cache_clear()
    monkeypatch.setattr(common, "available", lambda name: name.startswith("digits"))
    monkeypatch.setattr("bigain.ui.shared.available", common.available)
    cond, _steps, _guidance, note, button = app.on_model("sd2-base")
    assert "hf download stabilityai/stable-diffusion-2-base" in note.value and note.visible
    assert button.interactive is False and cond.label == "Prompt" and cond.value
    cond, _, _, note, button = app.on_model("digits-unet")
    assert button.interactive is True and not note.visible and cond.choices[0] == ("0", "0")
    labels = [label for label, _ in common.model_choices()]
    assert len(labels) == len(common.CARDS) and "sd2-base (hub, GPU · not downloaded)" in labels


def test_execution_setting_offers_only_what_runs_here(monkeypatch) -> None:
    monkeypatch.setattr(common, "ZERO_GPU", False)
    monkeypatch.setattr(common.execution, "default_device", lambda: "cpu")
    assert common.execution_modes() == ["eager", "compile"] and common.check_execution(None) == "eager"
    with pytest.raises(gr.Error, match="not available here"):
        common.check_execution("cudagraph")
    monkeypatch.setattr(common, "ZERO_GPU", True)  # ZeroGPU: a borrowed CUDA GPU, no torch.compile
    assert common.execution_modes() == ["eager", "cudagraph"]


# ---- the page, built from the registry --------------------------------------------------------------


@dataclass(frozen=True)
class Toy(Method):
    """A toy method for the registry test."""

    name: ClassVar[str] = "toy"
    title: ClassVar[str] = "Toy"
    strength: float = param(0.3, "Strength", "how hard it squeezes", lo=0, hi=1)
    flag: bool = param(False, "Flag", "a switch")
    flavour: str = param("a", "Flavour", "which one", choices=("a", "b"))
    cap: int | None = param(None, "Cap", "an optional limit", kind=int, lo=1, hi=9, optional=True)


def test_a_method_registered_before_the_page_appears_with_its_settings(monkeypatch) -> None:
    monkeypatch.setitem(METHODS, "toy", Toy)
    assert ("Toy", "toy") in app.method_choices()
    demo = app.build_demo()
    params = {p["parameter_name"]: p for p in demo.get_api_info()["named_endpoints"]["/generate"]["parameters"]}
    assert {"toy_strength", "toy_flag", "toy_flavour", "toy_cap"} <= set(params)
    assert params["toy_strength"]["component"] == "Slider" and params["toy_strength"]["parameter_default"] == 0.3
    assert params["toy_flag"]["component"] == "Checkbox" and params["toy_flavour"]["component"] == "Dropdown"
    assert params["toy_cap"]["component"] == "Textbox" and params["toy_cap"]["parameter_default"] == "none"
    assert params["toy_strength"]["label"] == "Toy strength"
    assert knobs.settings({"toy_strength": 0.5, "toy_cap": "4", "toy_flag": True})["toy"] == {
        "strength": 0.5,
        "flag": True,
        "cap": 4,
    }
    with pytest.raises(gr.Error, match=r'Toy cap must be an integer in \[1, 9\] or "none"'):
        knobs.settings({"toy_cap": "lots"})


def test_api_outputs_are_named_and_help_starts_no_server() -> None:
    info = app.demo.get_api_info()["named_endpoints"]
    assert set(info) == {"/generate", "/classify"}
    for ep in info.values():
        assert all(not r["label"].startswith("value_") for r in ep["returns"]), ep["returns"]
        kinds = {p["parameter_name"]: p["type"].get("type") for p in ep["parameters"]}
        wholes = [n for n in kinds if n.endswith(("_sx", "_sy", "_factor", "_every")) or n in ("seed", "rounds")]
        assert wholes and {kinds[n] for n in wholes} == {"integer"}, kinds  # API clients send ints, not floats
        assert kinds["tome_ratio"] == "number"
    assert [r["label"] for r in info["/classify"]["returns"]] == [
        "Top-5 classes per method: class (score)",
        "Agreement and cost",
        "Per-class denoising error",
    ]
    t = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0 and "--port" in done.stdout and "--share" in done.stdout
    assert time.monotonic() - t < 60


def test_checked_components_refuse_what_they_cannot_take() -> None:
    from bigain.ui.checked import CheckedCheckboxGroup, CheckedNumber

    seed = CheckedNumber(label="Seed", integer=True, minimum=0, maximum=9)
    for bad in (float("nan"), float("inf"), "3", True, 2.5, -1, None):
        with pytest.raises(gr.Error, match=r"Seed must be a whole number in \[0, 9\]"):
            seed.preprocess(bad)
    assert seed.preprocess(3.0) == 3 and isinstance(seed.preprocess(3.0), int)
    with pytest.raises(gr.Error, match="at most once"):
        CheckedCheckboxGroup(["a", "b"], label="Methods").preprocess(["a", "a"])
    assert seed.get_config()["minimum"] == 0 and seed.get_block_name() == "number"  # drawn as a gr.Number


def test_the_glyph_models_are_the_default() -> None:
    from bigain import cli

    assert app.DEFAULT_MODEL == common.DEFAULT_MODEL == "glyphs-dit"
    names = [name for _, name in common.model_choices()]
    assert names[:4] == ["glyphs-dit", "glyphs-unet", "digits-dit", "digits-unet"]  # glyphs first, digits after
    assert common.classes_of("glyphs-unet") == list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # letters, nothing loaded
    assert common.default_class("glyphs-dit") == "D" and common.default_class("digits-dit") == "3"
    assert cli._parser().parse_args(["generate", "-c", "A"]).model == "glyphs-dit"
    letters = bundled.world_examples("glyphs")  # the classify examples: held-out fonts, as the model sees them
    assert len(letters) == 26 and Image.open(letters[0][0]).size == (32, 32) and "glyphs-A-test0" in letters[0][0]


def _stand_in(root: Path, model: str = "digits-dit") -> Path:
    """An assets folder holding one embedded model (the tiny digits one stands in for the glyph models)."""
    shutil.copytree(ROOT / "assets" / model, root / model)
    return root


def _no_model_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("start-up ran a model")

    for target in ("bigain.pipelines.generate", "bigain.pipelines.classify", "bigain.ui.common.load_model"):
        monkeypatch.setattr(target, refuse)
    common.model.cache_clear()


def _tabs() -> tuple:
    return tuple(sys.modules[f"bigain.ui.{tab}"] for tab in ("generate", "classify", "inside"))


def test_precomputed_examples_round_trip_and_start_up_runs_no_model(tmp_path, monkeypatch) -> None:
    from bigain.ui import examples

    monkeypatch.setenv("BIGAIN_ASSETS", str(_stand_in(tmp_path)))
    paths = examples.write_examples(model_name="digits-dit", rounds=1)
    assert [p.name for p in paths] == ["generate.json", "classify.json", "inside.json"]
    assert all(p.parent == tmp_path / "examples" for p in paths)
    record = json_of(paths[0])
    assert record["threads"] == torch.get_num_threads() and record["provenance"]["git_commit"] is not None
    assert record["weights"] == examples.weights_id("digits-dit") and record["request"]["samples"] == 2
    _no_model_calls(monkeypatch)
    gen, cls, ins = _tabs()
    first, note = gen.startup.__wrapped__("digits-dit")
    gallery, _slider, compare, _strips, diffs, table, _speed, _q, summary = first
    assert note == "" and [c.split(" ×")[0].split(" · ")[0] for _, c in gallery[::2]] == ["Baseline", "ToMe", "L-GTM"]
    assert len(gallery) == 2 * 3 and all(img.size == (128, 128) for img, _ in gallery)  # 2 samples, 3 runs
    assert list(table["method"]) == ["Baseline", "ToMe r=0.5", "L-GTM r=0.7"] and diffs is not None
    assert set(table["threads"]) == {record["threads"]} and compare["value"] == "L-GTM r=0.7"
    assert "Precomputed example" in summary and f"cpu, {record['threads']} thread" in summary
    assert table["latency (s)"].iloc[0] == round(record["rows"][0]["wall_s"], 3)  # the written timings
    (top5, agreement, plot), image, note = cls.startup.__wrapped__("digits-dit")
    assert note == "" and Path(image).name == "classify-input.png" and plot is not None
    assert list(top5.columns) == ["rank", "Baseline", "ToMe r=0.5", "L-GTM r=0.7"] and "thread" in agreement
    first, note = ins.startup.__wrapped__("digits-dit")
    assert note == "" and isinstance(first[0], explain.Inside) and first[2]["value"] == 13  # the middle of 25
    assert "step 13 of 25" in first[7] and [p["visible"] for p in first[4:7]] == [True, True, False]
    *_figs, caption = app.inside_step(first[0], 1, first[0].blocks[-1])  # the recording is whole
    assert "step 1 of 25" in caption


def json_of(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_missing_or_stale_examples_give_a_note_and_the_first_click_computes(tmp_path, monkeypatch) -> None:
    from bigain.ui import examples

    monkeypatch.setenv("BIGAIN_ASSETS", str(_stand_in(tmp_path)))
    gen, cls, ins = _tabs()
    for first, note in (gen.startup.__wrapped__("digits-dit"), ins.startup.__wrapped__("digits-dit")):
        assert first is None and "No precomputed example" in note and "`python -m bigain.ui.examples" in note
    first, image, note = cls.startup.__wrapped__("digits-dit")
    assert first is None and image is None and "Press **Classify**" in note
    (tmp_path / "examples").mkdir()
    record = {"version": examples.VERSION, "tab": "generate", "model": "digits-dit", "weights": "0" * 16}
    (tmp_path / "examples" / "generate.json").write_text(json.dumps(record))
    first, note = gen.startup.__wrapped__("digits-dit")
    assert first is None and "made with other weights" in note
    with pytest.raises(examples.Missing, match="no trained weights here"):
        examples.read_generation("glyphs-unet")  # not in this assets folder


def test_examples_live_in_a_folder_private_to_the_process(monkeypatch) -> None:
    monkeypatch.delenv("BIGAIN_EXAMPLES", raising=False)
    folder = bundled.examples_dir()
    assert folder != Path(tempfile.gettempdir()) / "bigain-examples" and folder.name.startswith("bigain-examples-")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and bundled.examples_dir() == folder


# ---- the launched app, through gradio_client ---------------------------------------------------------


@pytest.fixture(scope="module")
def client(app_url: str) -> object:
    from gradio_client import Client

    return Client(app_url, verbose=False)  # app_url: the app launched by tests/conftest.py


def test_api_generate_and_classify(client, digit: str) -> None:
    from gradio_client import handle_file

    gallery, slider, _, _diffs, table, _, quality, summary = client.predict(
        model_name="digits-dit",
        condition="4",
        methods=TWO,
        tome_ratio=0.3,
        steps=STEPS,
        samples=2,
        rounds=1,
        api_name="/generate",
    )
    assert len(gallery) == 3 * 2 and len(slider) == 2
    assert Image.open(gallery[0]["image"]).format == "PNG"
    assert [row[0] for row in table["data"]] == ["Baseline", "ToMe r=0.3", "L-GTM r=0.7"]
    assert "digits-dit" in summary and "ToMe r=0.3 | 93.9" in quality
    table, summary, _ = client.predict(
        model_name="digits-unet", image=handle_file(digit), methods=["todo", "iekvd"], rounds=1, api_name="/classify"
    )
    assert table["headers"] == ["rank", "Baseline", "ToDo s=2", "IE-KVD s=2 α=0.9"] and "predict" in summary


def _png(path: Path, width: int, height: int, truncate: bool = False) -> Path:
    """A PNG whose header claims width×height (the data only fits a tiny one): a decompression bomb."""
    raw = zlib.compress(b"\x00" * 4)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IDAT", raw)
    data = b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")
    path.write_bytes(data[:40] if truncate else data)
    return path


def test_api_bad_inputs_get_the_fields_sentence_then_a_good_one_works(client, digit: str, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    good = tmp_path / "good.png"
    Image.open(digit).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    files = {
        "text.png": ("hello", "not an image file"),
        "empty.png": ("", "empty file"),
        "page.png": ("<!doctype html><html><body>hi</body></html>", "not an image file"),
    }
    cases = [(tmp_path / name, want) for name, (text, want) in files.items()]
    for path, _ in cases:
        path.write_text(files[path.name][0])
    cases += [(truncated, "truncated or corrupt"), (_png(tmp_path / "huge.png", 5000, 5000), "megapixels")]
    for path, want in cases:
        with pytest.raises(AppError, match=f"Image must be a readable image.*{want}"):
            client.predict(model_name="digits-dit", image=handle_file(str(path)), methods=[], api_name="/classify")
    generate = {"model_name": "digits-dit", "condition": "4", "methods": ["tome"], "steps": STEPS, "rounds": 1}
    for change, want in [
        ({"seed": "abc"}, r"Seed must be a whole number in \[0, 4294967295\], got 'abc'"),
        ({"seed": 2.5}, r"Seed must be a whole number .*got float 2\.5"),
        ({"steps": "abc"}, r"Steps must be a whole number in \[1, 200\] or empty"),
        ({"methods": None}, r"Methods \(the baseline always runs first\) must be a list of tome"),
        ({"model_name": None}, "Model must be one of"),
        ({"tome_ratio": 0.99}, r"ToMe merge ratio must be a number in \[0, 0\.98\]"),
        ({"condition": "<b>x</b>"}, "unknown class '&lt;b&gt;x&lt;/b&gt;'"),  # echoed escaped
    ]:
        with pytest.raises(AppError, match=want):
            client.predict(**(generate | change), api_name="/generate")
    with pytest.raises(AppError, match="Classes must be a list without duplicated classes"):
        client.predict(
            model_name="digits-dit", image=handle_file(digit), classes="1,1", methods=[], api_name="/classify"
        )
    table, _, _ = client.predict(
        model_name="digits-dit",
        image=handle_file(str(good)),
        classes="0, 3",
        methods=["lgtm"],
        rounds=1,
        api_name="/classify",
    )
    assert {row[1].split()[0] for row in table["data"] if row[1]} == {"0", "3"}


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "bigain-job" and t.is_alive()]


def test_a_cancelled_generation_stops_its_work_and_a_second_run_is_refused(client, monkeypatch) -> None:
    from gradio_client.exceptions import AppError

    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "0")  # no budget: the long run must be admitted, then cancelled

    long = {
        "model_name": "digits-dit",
        "condition": "4",
        "methods": knobs.PAPER,
        "steps": 200,
        "samples": 8,
        "rounds": 5,
    }
    job = client.submit(**long, api_name="/generate")
    deadline = time.monotonic() + 60
    while not (common.ADMISSION.running and _workers()):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    running = common.ADMISSION.running[0]
    with pytest.raises(AppError, match="You already have a run in progress"):  # one job per visitor
        client.predict(model_name="digits-dit", condition="4", methods=[], steps=STEPS, rounds=1, api_name="/generate")
    checks = running.checks
    t = time.monotonic()
    job.cancel()
    while common.ADMISSION.running or _workers():
        assert time.monotonic() - t < 2.0, "the cancelled job kept computing"
        time.sleep(0.02)
    assert running.cancelled and running.checks > checks  # it stopped at a check, between denoiser calls
    out = client.predict(
        model_name="digits-dit", condition="4", methods=[], steps=STEPS, rounds=1, samples=1, api_name="/generate"
    )
    assert "digits-dit" in out[-1]  # the visitor may run again


# ---- deployment files -------------------------------------------------------------------------------


def test_space_front_matter_pins_the_installed_gradio() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").split("---")[1]
    meta = dict(line.split(": ", 1) for line in head.strip().splitlines() if ": " in line)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["python_version"] == '"3.11"'
    assert meta["sdk_version"] == gr.__version__


def test_dockerfile_and_requirements() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for needle in (
        "useradd -m -u 1000 user",
        "USER user",
        "EXPOSE 7860",
        "GRADIO_SERVER_NAME=0.0.0.0",
        "HF_HOME=",
        "TRITON_CACHE_DIR=",
        "MPLCONFIGDIR=",
        "GRADIO_TEMP_DIR=",
        "-r requirements.txt",
        "-e . --no-deps",
        'CMD ["python", "app.py"]',
    ):
        assert needle in text, needle
    assert "bigain-examples" not in text  # the examples folder is private to the process
    runtime = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert "scikit-image" in runtime
    assert not [ln for ln in runtime.splitlines() if ln.startswith("triton")]  # a CPU Space installs no triton
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = readme[readme.index("## Two commands") : readme.index("## The method in five lines")]
    assert commands.count("torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu") == 2  # CPU torch, said
    assert "apt-get install -y chromium" in commands


def test_budget_is_read_from_the_environment(monkeypatch) -> None:
    from bigain.jobs import budget_from_env

    monkeypatch.delenv("BIGAIN_MAX_SECONDS", raising=False)
    assert budget_from_env() == 300
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "0.01")
    with pytest.raises(gr.Error, match="time budget"):
        list(common.stream(lambda job, report: [time.sleep(0.05), job.check()], 1))
    assert np.isclose(budget_from_env(), 0.01)


def _request(session: str, peer: str, forwarded: str | None = None) -> Any:
    from types import SimpleNamespace

    headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
    return SimpleNamespace(session_hash=session, headers=headers, client=SimpleNamespace(host=peer))


def test_forwarded_for_is_believed_only_from_trusted_proxies(monkeypatch) -> None:
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("BIGAIN_TRUSTED_PROXIES", raising=False)
    spoofed = _request("s", "10.0.0.9", "1.2.3.4")
    assert common.client_address(spoofed) == "10.0.0.9"  # locally the header is the client's word: ignored
    monkeypatch.setenv("SPACE_ID", "user/bigain")  # on a Space its proxy appends the visitor's address
    assert common.client_address(_request("s", "10.0.0.1", "5.6.7.8")) == "5.6.7.8"
    victim = _request("s", "10.0.0.1", "9.9.9.9, 5.6.7.8")  # a client naming someone else first
    assert common.client_address(victim) == "5.6.7.8"
    from starlette.datastructures import Headers

    two_lines = _request("s", "10.0.0.1")
    two_lines.headers = Headers(raw=[(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"5.6.7.8")])
    assert common.client_address(two_lines) == "5.6.7.8"  # the proxy's own line counts, not the client's first one
    monkeypatch.setenv("BIGAIN_TRUSTED_PROXIES", "2")
    assert common.client_address(victim) == "9.9.9.9"
    monkeypatch.setenv("BIGAIN_TRUSTED_PROXIES", "0")
    assert common.client_address(victim) == "10.0.0.1"


def test_one_run_per_session_and_a_few_per_address(monkeypatch) -> None:
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("BIGAIN_TRUSTED_PROXIES", raising=False)
    monkeypatch.setenv("BIGAIN_PER_ADDRESS", "2")
    adm = common.Admission()
    office = [common.Admission.visitor_keys(_request(f"s{i}", "7.7.7.7")) for i in range(3)]
    first = adm.enter(office[0])
    with pytest.raises(gr.Error, match="You already have a run in progress"):
        adm.enter(office[0])  # the same session again
    second = adm.enter(office[1])  # a colleague behind the same address
    with pytest.raises(gr.Error, match="2 runs from your network address are already in progress"):
        adm.enter(office[2])
    monkeypatch.setenv("BIGAIN_PER_ADDRESS", "1")
    with pytest.raises(gr.Error, match=r"\b1 run from your network address is already in progress"):
        adm.enter(office[2])
    monkeypatch.setenv("BIGAIN_PER_ADDRESS", "2")
    adm.leave(office[0], first)
    adm.leave(office[2], adm.enter(office[2]))  # a slot freed: the third one gets in
    adm.leave(office[1], second)
    assert not adm._visitors  # every count back to nothing


def test_a_request_over_the_budget_is_refused_before_it_runs(monkeypatch) -> None:
    from bigain.ui.generate import request_images

    monkeypatch.setattr(common.COSTS, "_s", {})  # nothing learnt
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "60")
    big = {"model_name": "digits-dit", "condition": "4", "methods": ["tome", "lgtm"], "steps": 200, "samples": 8,
           "rounds": 5, "guidance": 2.0}  # fmt: skip
    assert request_images("digits-dit", big["methods"], big) == 3 * 5 * 200 * 16
    common.admit_cost("digits-dit", 48_000, "comparison")  # nothing learnt yet: admitted (the budget still stops it)
    common.COSTS.learn("digits-dit", 0.004, 8)  # 0.5 ms an image on this host
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "20")
    with pytest.raises(gr.Error, match=r"about 24 s here \(48,000 image evaluations"):
        common.admit_cost("digits-dit", 48_000, "comparison")
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "60")
    common.admit_cost("digits-dit", 48_000, "comparison")  # within the budget


def test_the_generate_event_refuses_before_taking_a_slot(monkeypatch) -> None:
    from bigain.ui.generate import _event

    monkeypatch.setattr(common.COSTS, "_s", {})  # nothing learnt
    common.COSTS.learn("digits-dit", 1.0, 1)  # pretend a second an image
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "300")
    monkeypatch.setattr(common.ADMISSION, "enter", lambda keys: pytest.fail("took a slot"))
    values = {"model_name": "digits-dit", "condition": "4", "methods": ["lgtm"], "steps": 50, "samples": 4,
              "rounds": 3, "guidance": 2.0, "execution": "eager"}  # fmt: skip
    with pytest.raises(gr.Error, match="over the 300-s limit"):
        next(_event(values, None, None))


def test_a_classification_over_the_budget_is_refused_before_it_runs(monkeypatch) -> None:
    from bigain.ui.classify import request_images

    monkeypatch.setattr(common.COSTS, "_s", {})
    # glyphs: 26 classes × 3 timesteps, then the 5 kept × 7 more (the card's protocol): 113 a method and round
    assert request_images("glyphs-dit", None, ["tome", "lgtm"], 2) == 3 * 2 * 113
    assert request_images("glyphs-dit", ["A", "B"], [], 1) == 2 * 10
    common.COSTS.learn("glyphs-dit", 1.0, 10)
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "60")
    with pytest.raises(gr.Error, match=r"This classification would take about 68 s .* use fewer classes, methods"):
        common.admit_cost("glyphs-dit", request_images("glyphs-dit", None, ["tome", "lgtm"], 2), "classification")
    assert request_images("dit-xl-2-256", None, [], 1) is None  # its 1000 classes are not known before it loads
    common.admit_cost("dit-xl-2-256", None, "classification")  # so it is admitted (the budget still stops it)

"""The Gradio app: event functions in-process, then the launched app through gradio_client.

Runs on the shipped embedded digits models, few steps, two methods; no network, no GPU.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import app
from bigain import explain
from bigain.models import ModelUnavailable

STEPS = 3
TWO = ["tome", "lgtm"]


def _quiet(*args: object, **kwargs: object) -> None:
    """A stand-in for gr.Progress when calling events directly."""


@pytest.fixture(scope="module")
def digit() -> str:
    return explain.digit_examples()[3][0]  # a test-split "3"


# ---- events, in-process ---------------------------------------------------------------------


def test_generate_compares_methods_against_the_baseline() -> None:
    images, diffs, table, plot, summary = app.generate(
        "digits-dit", "7", TWO, seed=1, steps=STEPS, guidance=2.0, rounds=2, progress=_quiet
    )
    assert [c.split(" ×")[0] for _, c in images] == ["Baseline", "ToMe", "L-GTM"] and len(diffs) == 2
    assert all(img.size == (256, 256) for img, _ in images)  # 16×16 digits enlarged ×16, nearest
    assert isinstance(table, pd.DataFrame) and list(table["method"]) == ["Baseline", "ToMe r=0.5", "L-GTM r=0.7"]
    assert table["speed-up (×)"].iloc[0] == 1.0
    assert (table["GFLOPs / call"].iloc[1:] < table["GFLOPs / call"].iloc[0]).all()  # compression saves FLOPs
    assert plot is not None and "3 steps" in summary


def test_generate_kv_methods_with_an_alpha_schedule_on_the_unet() -> None:
    _, diffs, table, _, _ = app.generate(
        "digits-unet", "2", ["todo", "iekvd"], factor=2, alpha=0.8, schedule=True, alpha_end=1.2, steps=STEPS,
        rounds=1, progress=_quiet,
    )  # fmt: skip
    assert list(table["method"]) == ["Baseline", "ToDo s=2", "IE-KVD s=2 α=0.8→1.2"]
    assert len(diffs) == 2


def test_classify_reports_top5_agreement_and_evidence(digit: str) -> None:
    table, summary, plot = app.classify("digits-dit", digit, "", TWO, rounds=2, progress=_quiet)
    assert list(table.columns) == ["rank", "Baseline", "ToMe r=0.5", "L-GTM r=0.7"]
    assert len(table) == 5 and table["Baseline"].str.match(r"^\d \(\d\.\d\d\)$").all()  # "class (score)"
    assert "predict" in summary and "evaluations" in summary
    assert plot is not None


def test_classify_restricted_classes_and_odd_image_modes(digit: str) -> None:
    img = Image.open(digit)
    for variant in (img.convert("RGBA"), img.convert("P"), img.convert("RGB").resize((300, 200)), img.resize((3, 3))):
        table, _, _ = app.classify("digits-unet", variant, "3, 8", [], rounds=1, progress=_quiet)
        assert {c.split()[0] for c in table["Baseline"] if c} == {"3", "8"}


def test_look_inside_then_walk_steps_and_blocks() -> None:
    out = app.look_inside("digits-dit", "5", "lgtm", ratio_lgtm=0.5, steps=STEPS, progress=_quiet)
    inside, image = out[0], out[1]
    assert isinstance(inside, explain.Inside) and image.size == (256, 256)
    assert [p.visible for p in out[4:7]] == [True, True, False]  # gate, merges; no KV picture for merging
    for step in (1, STEPS):
        for block in inside.blocks:
            *plots, caption = app.inside_step(inside, step, block)
            assert [p.visible for p in plots] == [True, True, False] and f"step {step} of {STEPS}" in caption
    out = app.look_inside("digits-unet", "5", "iekvd", steps=STEPS, progress=_quiet)
    *plots, caption = app.inside_step(out[0], 1, out[0].blocks[0])
    assert [p.visible for p in plots] == [False, False, True] and "keys/values" in caption
    tome = app.look_inside("digits-dit", "5", "tome", steps=STEPS, progress=_quiet)
    assert [p.visible for p in tome[4:7]] == [False, True, False]  # ToMe has no gate


def test_learn_and_benchmarks(digit: str) -> None:
    figs = app.learn(digit, 16, 0.5, 2, 1.2)
    assert len(figs) == 3 and all(f is not None for f in figs)
    text, plots = app.benchmarks()
    assert isinstance(text, str) and text
    assert all(Path(p).is_file() for p, _ in plots)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: app.generate("digits-dit", "", TWO, steps=STEPS, progress=_quiet), "class or a prompt"),
        (lambda d: app.generate("digits-dit", "eleven", TWO, steps=STEPS, progress=_quiet), "unknown class"),
        (lambda d: app.generate("digits-dit", "3", ["tome"], ratio_tome=0.95, progress=_quiet), "ratio"),
        (lambda d: app.generate("digits-dit", "3", ["iekvd"], factor=9, progress=_quiet), "factor"),
        (lambda d: app.generate("digits-dit", "3", ["nope"], progress=_quiet), "unknown method"),
        (lambda d: app.generate("digits-dit", "3", TWO, seed=-1, progress=_quiet), "seed"),
        (lambda d: app.generate("digits-dit", "3", TWO, steps=5000, progress=_quiet), "steps"),
        (lambda d: app.generate("digits-dit", "3", TWO, rounds=0, progress=_quiet), "timing rounds"),
        (lambda d: app.generate("digits-dit", "3", TWO, rounds=1.5, progress=_quiet), "timing rounds"),
        (lambda d: app.generate("nope", "3", TWO, progress=_quiet), "unknown model"),
        (lambda d: app.classify("digits-dit", None, "", TWO, progress=_quiet), "upload an image"),
        (lambda d: app.classify("digits-dit", d, "3, 3", TWO, progress=_quiet), "duplicated"),
        (lambda d: app.classify("digits-dit", d, "3,,5", TWO, progress=_quiet), "empty entry"),
        (lambda d: app.classify("digits-dit", d, "3", TWO, progress=_quiet), "at least two"),
        (lambda d: app.classify("digits-dit", d, ",".join(map(str, range(101))), TWO, progress=_quiet), "at most"),
        (lambda d: app.classify("digits-dit", d, "3, cat", TWO, progress=_quiet), "unknown class"),
        (lambda d: app.classify("digits-dit", Image.new("RGB", (5000, 5000)), "", TWO, progress=_quiet), "limit"),
        (lambda d: app.classify("digits-dit", __file__, "", TWO, progress=_quiet), "image"),
        (lambda d: app.inside_step(None, 1, None), "run a generation first"),
        (lambda d: app.learn(None, 16, 0.5, 2, 0.9), "upload an image"),
        (lambda d: app.learn(d, 16, 0.5, 2.5, 0.9), "whole number"),
    ],
)
def test_bad_input_gives_a_readable_error_and_the_next_request_works(call, message: str, digit: str) -> None:
    with pytest.raises(gr.Error, match=message):
        call(digit)
    table, _, _ = app.classify("digits-dit", digit, "3, 5", [], rounds=1, progress=_quiet)
    assert list(table.columns) == ["rank", "Baseline"]


def test_unavailable_hub_model_is_a_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a hub model offline fails with the loader's message (simulated: tests never touch the network)."""

    def offline(name: str) -> None:
        raise ModelUnavailable(f"{name}: could not load it from the Hugging Face cache or the hub")

    monkeypatch.setattr(app, "load_model", offline)
    app.model.cache_clear()
    try:
        with pytest.raises(gr.Error, match="sd2-base: could not load"):
            app.generate("sd2-base", "a cat", TWO, progress=_quiet)
    finally:
        monkeypatch.undo()
        app.model.cache_clear()
    assert app.on_model("digits-dit")[0] is not None


# ---- the launched app, through gradio_client ---------------------------------------------------


@pytest.fixture(scope="module")
def client(app_url: str) -> object:
    from gradio_client import Client

    return Client(app_url, verbose=False)  # app_url: the app launched by tests/conftest.py


def test_api_generate(client) -> None:
    images, diffs, table, _, summary = client.predict(
        model_name="digits-dit", condition="4", methods=TWO, steps=STEPS, rounds=1, api_name="/generate"
    )
    assert len(images) == 3 and len(diffs) == 2
    first = Image.open(images[0]["image"])
    assert first.format == "PNG" and first.size == (256, 256)  # lossless, enlarged
    assert [row[0] for row in table["data"]] == ["Baseline", "ToMe r=0.5", "L-GTM r=0.7"]
    assert "digits-dit" in summary


def test_api_classify(client, digit: str) -> None:
    from gradio_client import handle_file

    table, summary, _ = client.predict(
        model_name="digits-unet", image=handle_file(digit), classes="", methods=["todo", "iekvd"], rounds=1,
        api_name="/classify",
    )  # fmt: skip
    assert table["headers"] == ["rank", "Baseline", "ToDo s=2", "IE-KVD s=2 α=0.9"]
    assert len(table["data"]) == 5
    assert "predict" in summary


def test_api_bad_inputs_then_a_good_one(client, digit: str, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="maximum"):  # the slider checks its bounds
        client.predict(model_name="digits-dit", condition="4", methods=["tome"], ratio_tome=0.99, api_name="/generate")
    with pytest.raises(AppError, match="duplicated"):
        client.predict(model_name="digits-dit", image=handle_file(digit), classes="1,1", methods=[],
                       api_name="/classify")  # fmt: skip
    text = tmp_path / "not_an_image.png"
    text.write_text("hello")
    with pytest.raises(Exception):  # noqa: B017 - gradio rejects the upload before our code runs
        client.predict(model_name="digits-dit", image=handle_file(str(text)), classes="", methods=[],
                       api_name="/classify")  # fmt: skip
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((40, 30), 200, np.uint8), mode="L").save(gray)
    table, _, _ = client.predict(
        model_name="digits-dit",
        image=handle_file(str(gray)),
        classes="0, 1",
        methods=["lgtm"],
        rounds=1,
        api_name="/classify",
    )
    assert {row[1].split()[0] for row in table["data"] if row[1]} == {"0", "1"}


# ---- deployment files ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_space_front_matter_pins_the_installed_gradio() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").split("---")[1]
    meta = dict(line.split(": ", 1) for line in head.strip().splitlines())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["python_version"] == '"3.11"'
    assert meta["sdk_version"] == gr.__version__


def test_dockerfile_runs_as_uid_1000_on_7860_with_writable_caches() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for needle in ("useradd -m -u 1000 user", "USER user", "EXPOSE 7860", "GRADIO_SERVER_NAME=0.0.0.0",
                   "HF_HOME=", "TRITON_CACHE_DIR=", "MPLCONFIGDIR=", "GRADIO_TEMP_DIR=",
                   "-r requirements.txt", "-e . --no-deps", 'CMD ["python", "app.py"]'):  # fmt: skip
        assert needle in text, needle


def test_execution_setting_offers_only_what_runs_here(monkeypatch) -> None:
    monkeypatch.setattr(app, "ZERO_GPU", False)
    monkeypatch.setattr(app.execution, "default_device", lambda: "cpu")
    assert app._execution_modes() == ["eager", "compile"]
    assert app._execution(None) == "eager"
    with pytest.raises(ValueError, match="not available here"):
        app._execution("cudagraph")
    monkeypatch.setattr(app, "ZERO_GPU", True)  # ZeroGPU: a borrowed CUDA GPU, no torch.compile
    assert app._execution_modes() == ["eager", "cudagraph"]
    with pytest.raises(gr.Error, match="not available here"):
        app.generate("digits-dit", "7", TWO, steps=STEPS, execution="compile", progress=_quiet)

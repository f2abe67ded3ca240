"""Compare classification: the diffusion classifier under the baseline and each method, on one image
(the examples: letters of the held-out test fonts, digits of the test split). The tab opens with the
precomputed example of :mod:`bigain.ui.examples`."""

from __future__ import annotations

import functools
import html
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from bigain import explain, viz
from bigain.images import read_image
from bigain.pipelines.classify import MAX_CLASSES
from bigain.pipelines.generate import MAX_SEED
from bigain.ui import knobs
from bigain.ui.checked import CheckedImage, CheckedNumber, CheckedTextbox
from bigain.ui.common import (
    COSTS,
    DEFAULT_MODEL,
    admit_cost,
    available,
    bind_heavy,
    check_execution,
    friendly,
    gpu,
    job_progress,
    model,
    stream,
    timing_text,
)
from bigain.ui.shared import ROUNDS, execution_picker, model_picker, timing_rounds
from bigain.zoo import CARDS

OUTPUTS = ["table", "summary", "evidence"]


def classes_of(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    names = [c.strip() for c in text.replace("\n", ",").split(",")]
    bad = None
    if any(not c for c in names):
        bad = "a comma-separated list without empty entries (two commas in a row?)"
    elif len(names) > MAX_CLASSES:
        bad = f"at most {MAX_CLASSES} classes per request, got {len(names)}"
    elif dup := sorted({c for c in names if names.count(c) > 1}):
        bad = f"a list without duplicated classes ({html.escape(', '.join(dup)[:80])})"
    elif len(names) < 2:
        bad = "at least two classes to choose between"
    if bad:
        raise gr.Error(f"Classes must be {bad}.", print_exception=False)
    return names


def _image(image: Any) -> Any:
    if image is None:
        raise gr.Error("Image is missing: upload an image or pick an example first.", print_exception=False)
    if isinstance(image, str):
        image = read_image(image)
    return image


def _duration(model_name: str, image: Any, classes: Any, methods: list[str], rounds: int, *_: Any, **__: Any) -> float:
    return float(min(300, 20 + 10 * (len(methods or []) + 1) * (rounds + 1)))


@gpu(_duration)
def _compare(
    model_name: str,
    image: Any,
    classes: list[str] | None,
    methods: list[str],
    rounds: int,
    settings: dict,
    seed: int,
    mode: str,
    progress: Any,
) -> list:
    meths = explain.methods_from_settings(methods or [], settings)
    return explain.compare_classification(
        model(model_name), image, meths, classes=classes, seed=seed, progress=progress, rounds=rounds, mode=mode
    )


def request_images(model_name: str, classes: list[str] | None, methods: Any, rounds: Any) -> int | None:
    """Image-evaluations a comparison runs: (baseline + methods) × rounds × the protocol's evaluations;
    None when the number of candidate classes is not known before loading the model."""
    from bigain import worlds
    from bigain.pipelines.classify import Protocol, planned_evaluations

    card = CARDS[model_name]  # no model is loaded here: this runs before the request is admitted
    n = len(classes) if classes else worlds.world(card.world).num_classes if card.world else None
    if n is None:
        return None
    per_image = planned_evaluations(Protocol.from_dict(card.protocol), max(2, n))
    return (1 + len(methods or [])) * int(rounds or 1) * per_image


def learn_cost(model_name: str, rows: list) -> list:
    """Teach :data:`COSTS` this host's speed from a comparison's baseline row; returns ``rows``."""
    COSTS.learn(model_name, rows[0].wall_s, rows[0].result.n_evals)
    return rows


def here(model_name: str) -> dict[str, Any]:
    """How a run in this process is timed: the model's device and torch's threads now."""
    import torch

    return {"device": str(model(model_name).device), "threads": torch.get_num_threads(), "precomputed": False}


def outputs(rows: list[explain.ClassificationRow], timing: dict[str, Any] | None = None) -> tuple[Any, ...]:
    top: dict[str, list[Any]] = {"rank": list(range(1, 6))}
    for r in rows:
        cells = [f"{k.cls} ({k.score:.2f})" for k in r.result.ranking[:5]]
        top[r.label] = cells + [""] * (5 - len(cells))
    cost = "\n".join(
        f"- **{html.escape(r.label)}**: {r.result.n_evals} (class, timestep) evaluations in {r.result.n_calls} "
        f"batched denoiser call{'s' if r.result.n_calls != 1 else ''}, {r.wall_s:.2f} s (×{r.speedup:.2f} vs baseline)"
        for r in rows
    )
    summary = f"{explain.agreement(rows)}\n\n{cost}"
    if timing is not None:
        summary += f"\n\n{timing_text(timing, 'Classify')}"
    return pd.DataFrame(top), summary, viz.error_figure({r.label: r.result for r in rows})


@friendly
def classify(
    model_name: str,
    image: Any,
    classes: str | None,
    methods: list[str] | None,
    settings: dict | None = None,
    seed: int = 0,
    rounds: int = ROUNDS,
    execution: str = "eager",
    progress: Any = None,
) -> tuple[Any, ...]:
    """Classify one image with the diffusion classifier under the baseline and each method.
    Returns (top-5 table per method, agreement and cost summary, per-class error plot)."""
    rows = _compare(
        model_name,
        _image(image),
        classes_of(classes),
        list(methods or []),
        rounds,
        settings or {},
        seed,
        check_execution(execution),
        progress,
    )
    return outputs(rows, here(model_name))


def _event(values: dict[str, Any], request: gr.Request | None, progress: Any) -> Iterator[Any]:
    settings = knobs.settings(values)
    image, classes = _image(values["image"]), classes_of(values["classes"])
    mode = check_execution(values.get("execution"))
    name = values["model_name"]
    admit_cost(name, request_images(name, classes, values["methods"], values.get("rounds")), "classification")

    def work(job: Any, report: Any) -> tuple[Any, ...]:
        return outputs(
            learn_cost(
                name,
                _compare(
                    name,
                    image,
                    classes,
                    list(values["methods"] or []),
                    int(values.get("rounds") or 1),
                    settings,
                    values.get("seed") or 0,
                    mode,
                    job_progress(job, report),
                ),
            ),
            here(name),
        )

    yield from stream(work, len(OUTPUTS), request, progress)


@functools.lru_cache(maxsize=1)
def startup(model_name: str = DEFAULT_MODEL) -> tuple[tuple[Any, ...] | None, str | None, str]:
    """The finished example the tab opens with, read from the files ``python -m bigain.ui.examples`` wrote
    (no model runs here): (outputs, input image, "") or, when they are missing or were made for other
    weights, (None, None, a note saying so; the first click computes)."""
    from bigain.ui import examples

    try:
        rows, image, timing = examples.read_classification(model_name)
    except examples.Missing as e:
        return None, None, f"{e.note} Press **Classify** to compute it here."
    return outputs(rows, timing), image, ""


def example_inputs() -> list[tuple[str, list[list[str]], list[str]]]:
    """(label, [[path], …], names) of the example images: the default model's world first (glyphs:
    a letter of every class from the held-out test fonts), then the other worlds'."""
    from bigain.explain.bundled import world_examples
    from bigain.worlds import world
    from bigain.zoo import CARDS

    first = CARDS[DEFAULT_MODEL].world or "digits"
    titles = {
        "glyphs": "Letters from the held-out test fonts (click one)",
        "digits": "Digits from the held-out test split (click one)",
    }
    out = []
    for name in dict.fromkeys((first, "glyphs", "digits")):
        paths = world_examples(name)
        out.append((titles.get(name, f"{name} test images"), paths, [str(c) for c in world(name).classes]))
    return out


def build() -> dict[str, Any]:
    sets = example_inputs()
    first, shown, note = startup()
    # the example's input (the fourth test image of the world), also before the example is computed; the
    # precomputed one is read into memory (Gradio serves files only from its allowed folders)
    value: Any = read_image(shown) if shown else sets[0][1][3][0]
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            c_model, _, c_note = model_picker("cls", with_condition=False)
            c_image = CheckedImage(
                value=value,
                image_mode=None,
                format="png",
                label="Image",
                height=256,
                elem_id="cls-image",
                elem_classes=["pixelated", "upscale"],
                sources=["upload", "clipboard"],
            )
            # the button right under the image, above the fold at 1400×900 (the example letters follow)
            c_btn = gr.Button("Classify", variant="primary", elem_id="cls-button", interactive=available(DEFAULT_MODEL))
            for i, (label, paths, names) in enumerate(sets):
                gr.Examples(
                    paths,
                    inputs=c_image,
                    label=label,
                    example_labels=names[: len(paths)],
                    examples_per_page=26,
                    elem_id="cls-examples" if i == 0 else f"cls-examples-{i}",
                )
            c_classes = CheckedTextbox(
                value="",
                label="Classes",
                placeholder="3, 5, 8",
                max_lines=1,
                elem_id="cls-classes",
                info="comma-separated; empty = all of the model's classes",
            )
            c_methods = knobs.method_picker("cls", value=knobs.CLASSIFY)
            c_knobs = knobs.settings_panel("cls")
            c_seed = CheckedNumber(value=0, integer=True, label="Seed", minimum=0, maximum=MAX_SEED)
            c_rounds = timing_rounds()
            c_exec = execution_picker()
        with gr.Column(scale=2):
            first = first or (None, note, None)
            gr.Markdown(
                "The diffusion classifier picks the class whose prompt lets the model **denoise the image best**. "
                "Below: the image on the left (a letter of a font the model never saw in training), classified "
                "ahead of time; pick another image and press **Classify**.",
                elem_classes=["note"],
            )
            c_summary = gr.Markdown(first[1], label="Agreement and cost", elem_id="cls-summary")
            c_table = gr.Dataframe(
                first[0], label="Top-5 classes per method: class (score)", elem_id="cls-table", wrap=True
            )
            gr.Markdown(
                "#### The evidence\nFor every class, how well the model denoises the image at each noise "
                "level when told it is that class: the lowest curve wins."
            )
            c_plot = gr.Plot(
                first[2], label="Per-class denoising error", format="png", show_label=False, elem_id="cls-plot"
            )
    inputs = {
        "model_name": c_model,
        "image": c_image,
        "classes": c_classes,
        "methods": c_methods,
        **c_knobs,
        "seed": c_seed,
        "rounds": c_rounds,
        "execution": c_exec,
    }
    defaults = {
        "classes": "",
        "methods": list(knobs.CLASSIFY),
        **knobs.defaults(),
        "seed": 0,
        "rounds": ROUNDS,
        "execution": "eager",
    }
    bind_heavy(c_btn, _event, "classify", inputs, defaults, [c_table, c_summary, c_plot])
    from bigain.ui.shared import on_model

    c_model.change(
        lambda name: on_model(name, with_condition=False),
        c_model,
        [c_note, c_btn],
        api_visibility="undocumented",
        queue=False,
    )
    return {"model": c_model, "button": c_btn}

"""Look inside: one generation recorded call by call, walked through step by step and block by block
(steps are numbered from 1, as in the CLI's ``inside --step``; it opens at the middle step, where the
image has taken shape). The tab opens with the precomputed recording of :mod:`bigain.ui.examples`."""

from __future__ import annotations

import functools
import html
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from bigain import explain, viz
from bigain.ui import knobs
from bigain.ui.common import (
    DEFAULT_MODEL,
    available,
    bind_heavy,
    friendly,
    gpu,
    job_progress,
    model,
    stream,
)
from bigain.ui.shared import model_picker, on_model_outputs, sampling
from bigain.zoo import CARDS

OUTPUTS = ["state", "image", "step", "block", "gate", "merges", "kv", "caption"]


def mid_step(inside: explain.Inside) -> int:
    """The 1-based step the view opens at: the middle of the recorded ones (step 1 is pure noise)."""
    return (len(inside.steps) + 1) // 2


def views(inside: explain.Inside, step: int, block: str | None) -> tuple[Any, ...]:
    """The look-inside figures for a 1-based step, with the panels a method has nothing for hidden."""
    k = min(max(int(step), 1), len(inside.steps)) - 1
    *figs, caption = explain.inside_figures(inside, inside.steps[k], block)
    labels = ["Laplacian gate", "Merge groups", "Keys and values"]
    return (
        *[gr.update(value=f, visible=f is not None, label=lbl) for f, lbl in zip(figs, labels, strict=True)],
        caption,
    )


def outputs(inside: explain.Inside, note: str = "") -> tuple[Any, ...]:
    """The tab's outputs; ``note`` (a line on where the recording comes from) heads the caption."""
    step, block = mid_step(inside), inside.blocks[0]
    *figs, caption = views(inside, step, block)
    return (
        inside,
        viz.enlarge(inside.image),
        gr.update(minimum=1, maximum=len(inside.steps), value=step, step=1, interactive=True),
        gr.update(choices=[(viz.short_block(b), b) for b in inside.blocks], value=block, interactive=True),
        *figs,
        f"{note}\n\n{caption}" if note else caption,
    )


def recorded_note(inside: explain.Inside, seconds: float) -> str:
    """The line that says a recording was just made here (the same inputs give the same pictures, so
    without it a click on the example's settings would change nothing visible)."""
    return (
        f"**Recorded here at {time.strftime('%H:%M:%S')}** in {seconds:.1f} s: {html.escape(inside.method.label())}, "
        f"{len(inside.steps)} steps, {len(inside.blocks)} compressed layer{'s' if len(inside.blocks) != 1 else ''}."
    )


def _duration(model_name: str, condition: Any, method: str, steps: int | None, *_: Any, **__: Any) -> float:
    return float(min(120, 15 + 0.2 * (steps or 50)))


@gpu(_duration)
def _record(
    model_name: str,
    condition: str,
    method: str,
    steps: int | None,
    settings: dict,
    seed: int,
    guidance: float | None,
    progress: Any,
) -> explain.Inside:
    meth = explain.methods_from_settings([method], settings)
    if not meth:
        raise gr.Error("Method must be a compressing method to look inside.", print_exception=False)
    return explain.record_generation(
        model(model_name), str(condition).strip(), meth[0], seed=seed, steps=steps, guidance=guidance, progress=progress
    )


def _recorded(*args: Any) -> tuple[Any, ...]:
    """Record (:func:`_record`'s arguments) and return the tab's outputs, headed by the note that says so."""
    t = time.perf_counter()
    inside = _record(*args)
    return outputs(inside, recorded_note(inside, time.perf_counter() - t))


@friendly
def look_inside(
    model_name: str,
    condition: str,
    method: str,
    settings: dict | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    progress: Any = None,
) -> tuple[Any, ...]:
    """Generate once with one method while recording every compressed attention call."""
    if not method:
        raise gr.Error("Method must be chosen: pick a method to look inside.", print_exception=False)
    return _recorded(model_name, condition, method, steps, settings or {}, seed, guidance, progress)


@friendly
def inside_step(inside: explain.Inside | None, step: float, block: str | None) -> tuple[Any, ...]:
    """Redraw the look-inside figures for another (1-based) step / block (no model call)."""
    if inside is None:
        raise gr.Error("Nothing recorded yet: run a generation first.", print_exception=False)
    return views(inside, step, block)


def _event(values: dict[str, Any], request: gr.Request | None, progress: Any) -> Iterator[Any]:
    settings = knobs.settings(values)

    def work(job: Any, report: Any) -> tuple[Any, ...]:
        return _recorded(
            values["model_name"],
            values["condition"],
            values["method"],
            values.get("steps"),
            settings,
            values.get("seed") or 0,
            values.get("guidance"),
            job_progress(job, report),
        )

    yield from stream(work, len(OUTPUTS), request, progress)


@functools.lru_cache(maxsize=1)
def startup(model_name: str = DEFAULT_MODEL) -> tuple[tuple[Any, ...] | None, str]:
    """The recording the tab opens with, read from the files ``python -m bigain.ui.examples`` wrote (no
    model runs here): (outputs, "") or, when they are missing or were made for other weights, (None, a
    note saying so; the first click computes)."""
    from bigain.ui import examples

    try:
        inside, _ = examples.read_inside(model_name)
    except examples.Missing as e:
        return None, f"{e.note} Press **Generate and record** to compute it here."
    return outputs(
        inside,
        "**Precomputed example** (`python -m bigain.ui.examples`): press **Generate and record** to record it here.",
    ), ""


def build() -> dict[str, Any]:
    gr.Markdown(
        "Generate once with one method while recording every compressed attention call, then walk through the "
        "denoising steps (numbered from 1; it opens at the middle one) and blocks. **Gate**: L-GTM's Laplacian "
        "energy over the image (hot = detail; drawn see-through so the letter stays visible). **Merge groups**: "
        "tokens averaged together share a colour, dots mark destinations. **KV**: what keys and values are made "
        "of under ToDo / IE-KVD at that block's token grid.",
        elem_classes=["note"],
    )
    first, note = startup()
    if first is not None:
        k = mid_step(first[0])
        *raw, _ = explain.inside_figures(first[0], first[0].steps[k - 1], first[0].blocks[0])
    else:  # nothing recorded yet: the note in the caption, the panels hidden until the first click
        raw = [None, None, None]
        first = (None, None, {"maximum": 2, "value": 1}, {"choices": [], "value": None}, None, None, None, note)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            i_model, i_cond, i_note = model_picker("inside")
            i_method = knobs.method_picker("inside", single=True)
            # the button right under the method, above the fold at 1400×900
            i_btn = gr.Button(
                "Generate and record", variant="primary", elem_id="inside-button", interactive=available(DEFAULT_MODEL)
            )
            i_knobs = knobs.settings_panel("inside")
            i_seed, i_steps, i_guid = sampling(CARDS[DEFAULT_MODEL])
        with gr.Column(scale=3, elem_id="inside-plots"):
            i_state = gr.State(first[0])
            with gr.Row():
                i_image = gr.Image(
                    first[1], label="Result", format="png", height=260, elem_classes=["pixelated", "upscale"]
                )
                with gr.Column():
                    s, b = first[2], first[3]
                    i_step = gr.Slider(
                        1,
                        s["maximum"],
                        value=s["value"],
                        step=1,
                        label="Denoising step",
                        interactive=True,
                        elem_id="inside-step",
                    )
                    i_block = gr.Dropdown(
                        b["choices"], value=b["value"], label="Block", interactive=True, elem_id="inside-block"
                    )
                    i_caption = gr.Markdown(first[7], label="What this step did", elem_id="inside-caption")
            with gr.Row():
                i_gate = gr.Plot(
                    raw[0], visible=raw[0] is not None, label="Laplacian gate", format="png", show_label=False
                )
                i_merge = gr.Plot(
                    raw[1], visible=raw[1] is not None, label="Merge groups", format="png", show_label=False
                )
            i_kv = gr.Plot(raw[2], visible=raw[2] is not None, label="Keys and values", format="png", show_label=False)
    figs = [i_gate, i_merge, i_kv, i_caption]
    inputs = {
        "model_name": i_model,
        "condition": i_cond,
        "method": i_method,
        **i_knobs,
        "seed": i_seed,
        "steps": i_steps,
        "guidance": i_guid,
    }
    defaults = {**knobs.defaults(), "seed": 0, "steps": None, "guidance": None}
    bind_heavy(i_btn, _event, "look_inside", inputs, defaults, [i_state, i_image, i_step, i_block, *figs], api=False)
    for ev in (i_step.release, i_block.change):
        ev(inside_step, [i_state, i_step, i_block], figs, api_visibility="undocumented")
    on_model_outputs(i_model, i_cond, i_steps, i_guid, i_note, i_btn)
    return {"model": i_model, "button": i_btn}

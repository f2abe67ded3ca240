"""Compare generation: several samples per method from the same seeds, a baseline-vs-method slider,
difference maps on one colour scale, the cost of this run (with the threads it was timed on), and the
evaluation of the model. The tab opens with the precomputed example of :mod:`bigain.ui.examples`."""

from __future__ import annotations

import functools
import html
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from bigain import explain, viz
from bigain.explain.bundled import digits_quality
from bigain.ui import knobs
from bigain.ui.checked import CheckedDropdown, CheckedSlider
from bigain.ui.common import (
    COSTS,
    DEFAULT_MODEL,
    MAX_SAMPLES,
    ROOT,
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
from bigain.ui.shared import (
    ROUNDS,
    SAMPLES,
    execution_picker,
    model_picker,
    on_model_outputs,
    sampling,
    timing_rounds,
)
from bigain.zoo import CARDS

#: pixels per side a sample is drawn at (nearest neighbour, crisp): 32×32 glyphs ×4, 16×16 digits ×8
SHOWN = 128
OUTPUTS = ["gallery", "slider", "compare", "state", "diffs", "table", "speed", "quality", "summary"]


def _caption(row: explain.GenerationRow) -> str:
    """Short enough for a gallery tile: the method's name and its speed-up (settings are in the table)."""
    return row.method.title if not row.method.compresses else f"{row.method.title} ×{row.speedup:.2f}"


def quality_table(model_name: str, labels: list[str]) -> str:
    """The evaluation of the model for the methods of this run (not this run's numbers: the test split
    and generated samples per method, measured once by ``python -m bigain eval <world>``)."""
    card = CARDS.get(model_name)
    world = (card.world if card is not None else None) or "digits"
    q = digits_quality(ROOT / "assets", model_name)
    if not q:
        return (
            f"No evaluation of **{html.escape(model_name)}** yet: quality numbers (accuracy, FID) come from "
            f"`python -m bigain eval {html.escape(world)}`, which covers the embedded models."
        )
    n = max((int(r.get("n_cls", 0)) for r in q.values()), default=0)
    images = f", {n} images" if n else ""
    lines = [
        f"#### Quality of these settings in the {html.escape(world)} evaluation of {html.escape(model_name)}",
        f"Measured once over the test split (classification top-1{images}) and generated samples "
        "(recognised by a reference classifier; FID_ref, lower is better); — where a setting was not evaluated.",
        "",
        "| method | classification top-1 % | Δ vs baseline | generation recognised % | FID_ref |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        r = q.get(label, {})
        cell = [
            f"{r['acc']:.1f}" if "acc" in r else "—",
            f"{r['acc_delta']:+.1f}" if "acc_delta" in r else "—",
            f"{r['recognised']:.1f}" if "recognised" in r else "—",
            f"{r['fid']:.1f}" if "fid" in r else "—",
        ]
        lines.append(f"| {html.escape(label)} | " + " | ".join(cell) + " |")
    return "\n".join(lines)


def _duration(
    model_name: str,
    condition: Any,
    methods: list[str],
    steps: int | None,
    samples: int,
    rounds: int,
    *_: Any,
    **__: Any,
) -> float:
    """ZeroGPU seconds to ask for: steps × runs × (rounds + warm-up), a little per call, clamped."""
    card_steps = steps or 50
    calls = card_steps * (len(methods or []) + 1) * (rounds + 1)
    return float(min(300, 20 + calls * 0.08 * max(1, samples / 4)))


@gpu(_duration)
def _compare(
    model_name: str,
    condition: str,
    methods: list[str],
    steps: int | None,
    samples: int,
    rounds: int,
    settings: dict,
    seed: int,
    guidance: float | None,
    mode: str,
    progress: Any,
) -> list:
    m = model(model_name)
    meths = explain.methods_from_settings(methods or [], settings)
    return explain.compare_generation(
        m,
        [condition] * samples,
        meths,
        seed=seed,
        steps=steps,
        guidance=guidance,
        progress=progress,
        rounds=rounds,
        mode=mode,
    )


def _check_condition(condition: Any) -> str:
    if condition is None or not str(condition).strip():
        raise gr.Error("Class or prompt must be given: enter a class or a prompt.", print_exception=False)
    return str(condition).strip()


@friendly
def generate(
    model_name: str,
    condition: str,
    methods: list[str] | None,
    settings: dict | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    samples: int = SAMPLES,
    rounds: int = ROUNDS,
    execution: str = "eager",
    progress: Any = None,
) -> tuple[Any, ...]:
    """Generate ``samples`` images (one batch drawn from ``seed``: the same noise for every method)
    with the baseline and each chosen method. Returns the outputs in :data:`OUTPUTS` order."""
    if isinstance(methods, str):
        methods = [methods]
    rows = _compare(
        model_name,
        _check_condition(condition),
        list(methods or []),
        steps,
        samples,
        rounds,
        settings or {},
        seed,
        guidance,
        check_execution(execution),
        progress,
    )
    return outputs(model_name, rows, here(model_name))


def here(model_name: str) -> dict[str, Any]:
    """How a run in this process is timed: the model's device and torch's threads now."""
    import torch

    return {"device": str(model(model_name).device), "threads": torch.get_num_threads(), "precomputed": False}


def outputs(
    model_name: str, rows: list[explain.GenerationRow], timing: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """The tab's outputs from the rows of a comparison (nothing is loaded or run: precomputed rows too)."""
    timing = timing if timing is not None else here(model_name)
    card = CARDS[model_name]
    base = rows[0].result.images
    # the slider's two sides are the same sample (sample 1, the same noise): its handle splits one letter,
    # never baseline sample 1 against the method's sample 2 as a grid would
    strips = {r.label: viz.enlarge(r.result.images[0], 2 * SHOWN) for r in rows}
    gallery = [
        (viz.enlarge(im, SHOWN), f"{_caption(r)} · {k + 1}") for r in rows for k, im in enumerate(r.result.images)
    ]
    others = [r.label for r in rows[1:]]
    pick = next((r.label for r in rows[1:] if r.method.bigain), others[0] if others else rows[0].label)
    slider = (strips[rows[0].label], strips[pick])
    # updates, not components: built inside the page's context, a component would be drawn there
    compare = gr.update(choices=others or [rows[0].label], value=pick, interactive=bool(others))
    diffs = viz.difference_figure({r.label: r.result.images for r in rows[1:]}, base) if others else None
    table = pd.DataFrame(
        {
            "method": [r.label for r in rows],
            "latency (s)": [round(r.wall_s, 3) for r in rows],
            "per denoiser call (ms)": [round(1000 * r.per_call_s, 2) for r in rows],
            "speed-up (×)": [round(r.speedup, 2) for r in rows],
            "GFLOPs / call": [None if r.flops is None else round(r.flops / 1e9, 4) for r in rows],
            "FLOPs vs baseline": [None if r.flops_ratio is None else f"{r.flops_ratio:.0%}" for r in rows],
            "mean |Δ| vs baseline": [round(r.mean_abs_diff or 0.0, 4) for r in rows],
            "threads": [timing.get("threads")] * len(rows),
        }
    )
    speed = viz.speed_figure([r.label for r in rows], [r.speedup for r in rows], [r.flops_ratio for r in rows])
    res = rows[0].result
    what = "class" if card.conditioning == "labels" else "prompt"
    n = len(base)
    summary = (
        f"**{html.escape(card.name)}**, {what} **{html.escape(str(res.condition[0]))}**, seed {res.seed}, "
        f"{n} sample{'s' if n != 1 else ''} per method (one batch, the same noise for every method), "
        f"{res.sampler.upper()} {res.steps} steps, guidance {res.guidance:g}: {res.n_calls} denoiser calls per "
        "batch. Speed-ups are wall-time ratios to the baseline measured in the same run; on a small model and a "
        f"busy CPU they are noisy and small, while FLOPs are exact.\n\n{timing_text(timing, 'Generate')}"
    )
    return (
        gallery,
        slider,
        compare,
        strips,
        diffs,
        table,
        speed,
        quality_table(card.name, [r.label for r in rows]),
        summary,
    )


def on_compare(strips: dict | None, label: str | None) -> Any:
    """The slider for another method (no model call)."""
    if not strips or label not in strips:
        return gr.skip()
    return (next(iter(strips.values())), strips[label])


# ---- the event ----------------------------------------------------------------------------------

FIXED = ["model_name", "condition", "methods"]
TAIL = ["seed", "steps", "guidance", "samples", "rounds", "execution"]


def _event(values: dict[str, Any], request: gr.Request | None, progress: Any) -> Iterator[Any]:
    settings = knobs.settings(values)
    name, condition, methods = values["model_name"], _check_condition(values["condition"]), values["methods"]
    mode = check_execution(values.get("execution"))
    admit_cost(name, request_images(name, methods, values), "comparison")

    def work(job: Any, report: Any) -> tuple[Any, ...]:
        rows = _compare(
            name,
            condition,
            list(methods or []),
            values.get("steps"),
            int(values.get("samples") or 1),
            int(values.get("rounds") or 1),
            settings,
            values.get("seed") or 0,
            values.get("guidance"),
            mode,
            job_progress(job, report),
        )
        learn_cost(name, rows)
        return outputs(name, rows)

    yield from stream(work, len(OUTPUTS), request, progress)


def _images_per_call(card: Any, samples: int, guidance: Any) -> int:
    g = card.guidance if guidance is None else guidance
    return samples * (1 if g == 1 else 2)  # classifier-free guidance: conditional + unconditional


def request_images(model_name: str, methods: Any, values: dict[str, Any]) -> int:
    """Image-evaluations a comparison runs: (baseline + methods) × rounds × steps × batch."""
    card = CARDS[model_name]
    steps = int(values.get("steps") or card.steps)
    per_call = _images_per_call(card, int(values.get("samples") or 1), values.get("guidance"))
    return (1 + len(methods or [])) * int(values.get("rounds") or 1) * steps * per_call


def learn_cost(model_name: str, rows: list) -> None:
    """Teach :data:`COSTS` this host's speed from a comparison's baseline row."""
    base = rows[0].result
    COSTS.learn(model_name, rows[0].per_call_s, _images_per_call(CARDS[model_name], len(base.images), base.guidance))


@functools.lru_cache(maxsize=2)
def startup(model_name: str = DEFAULT_MODEL) -> tuple[tuple[Any, ...] | None, str]:
    """The finished example the tab opens with, read from the files ``python -m bigain.ui.examples`` wrote
    (no model runs here): (outputs, "") or, when they are missing or were made for other weights,
    (None, a note saying so; the first click computes)."""
    from bigain.ui import examples

    try:
        rows, timing = examples.read_generation(model_name)
    except examples.Missing as e:
        return None, f"{e.note} Press **Generate** to compute the example here."
    return outputs(model_name, rows, timing), ""


def _empty(note: str) -> tuple[Any, ...]:
    """The outputs shown before anything was computed: the note in the summary, the rest empty."""
    return ([], None, {"choices": [], "value": None}, {}, None, None, None, "", note)


def build() -> dict[str, Any]:
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            g_model, g_cond, g_note = model_picker("gen")
            g_methods = knobs.method_picker("gen")
            # the button right under what a visitor picks first, above the fold at 1400×900
            g_btn = gr.Button("Generate", variant="primary", elem_id="gen-button", interactive=available(DEFAULT_MODEL))
            g_knobs = knobs.settings_panel("gen")
            g_seed, g_steps, g_guid = sampling(CARDS[DEFAULT_MODEL])
            g_samples = CheckedSlider(
                1,
                MAX_SAMPLES,
                value=SAMPLES,
                step=1,
                integer=True,
                label="Samples per method",
                info="one batch, its noise drawn from the seed: the same noise for every method",
            )
            g_rounds = timing_rounds()
            g_exec = execution_picker()
        with gr.Column(scale=3):
            first, note = startup()
            first = first or _empty(note)
            g_summary = gr.Markdown(first[8], label="Summary", elem_id="gen-summary")
            gr.Markdown("#### Generated: the same seeds for every method (caption: speed-up over the baseline)")
            g_gallery = gr.Gallery(
                first[0],
                label="Generated samples",
                show_label=False,
                format="png",
                columns=6,  # 2 samples × 3 runs in one row, each ≥ 128 px at 1400 px wide
                height="auto",
                object_fit="contain",
                elem_id="gen-gallery",
                elem_classes=["pixelated", "fit"],
            )
            with gr.Row():
                with gr.Column(scale=2):
                    g_slider = gr.ImageSlider(
                        first[1],
                        label="Sample 1: baseline (left) vs method (right), the same noise",
                        format="png",
                        elem_id="gen-slider",
                        elem_classes=["pixelated"],
                    )
                with gr.Column(scale=1):
                    g_compare = CheckedDropdown(
                        choices=first[2]["choices"],
                        value=first[2]["value"],
                        label="Compare the baseline with",
                        elem_id="gen-compare",
                    )
            g_state = gr.State(first[3])
            g_diffs = gr.Plot(
                first[4], label="Difference from the baseline", format="png", show_label=False, elem_id="gen-diffs"
            )
            g_table = gr.Dataframe(
                first[5],
                label="Cost per method (threads: torch CPU threads; where it was measured: the note above)",
                elem_id="gen-table",
                wrap=True,
            )
            g_speed = gr.Plot(first[6], label="Speed-up and FLOPs", format="png", show_label=False, elem_id="gen-speed")
            g_quality = gr.Markdown(first[7], label="Quality (evaluation)", elem_id="gen-quality")
    outs = [g_gallery, g_slider, g_compare, g_state, g_diffs, g_table, g_speed, g_quality, g_summary]
    inputs = {
        "model_name": g_model,
        "condition": g_cond,
        "methods": g_methods,
        **g_knobs,
        "seed": g_seed,
        "steps": g_steps,
        "guidance": g_guid,
        "samples": g_samples,
        "rounds": g_rounds,
        "execution": g_exec,
    }
    defaults = {
        **knobs.defaults(),
        "seed": 0,
        "steps": None,
        "guidance": None,
        "samples": SAMPLES,
        "rounds": ROUNDS,
        "execution": "eager",
    }
    bind_heavy(g_btn, _event, "generate", inputs, defaults, outs)
    g_compare.change(on_compare, [g_state, g_compare], g_slider, api_visibility="undocumented")
    on_model_outputs(g_model, g_cond, g_steps, g_guid, g_note, g_btn)
    return {"model": g_model, "button": g_btn}


def measure_default(model_name: str | None = None, repeats: int = 2) -> list[float]:
    """Seconds of the default comparison a click on **Generate** runs (the page's settings, the click's
    timing rounds, through the tab's handler, pictures included), ``repeats`` times in a row: the first
    is cold (loading, first-call costs), the later ones are what a visitor waits for."""
    import time

    from bigain import threads
    from bigain.ui.common import DEFAULT_MODEL
    from bigain.ui.examples import generation_request
    from bigain.ui.shared import ROUNDS

    model_name = model_name or DEFAULT_MODEL
    threads.configure()
    req = generation_request(model_name)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        generate(model_name, req["condition"], req["methods"], samples=req["samples"], rounds=ROUNDS)
        out.append(time.perf_counter() - t)
    return out

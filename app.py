"""BiGain demo: token compression for diffusion models, side by side with its baselines.

UI only: every number and picture comes from ``bigain`` (pipelines, ``bigain.explain``,
``bigain.viz``). ``python app.py`` serves it on http://127.0.0.1:7860 (0.0.0.0 in Docker via
GRADIO_SERVER_NAME); on a CPU machine it runs offline on the embedded digits models.
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

import bigain
from bigain import execution, explain, viz
from bigain.errors import whole
from bigain.methods import METHODS
from bigain.models import load_model

log = logging.getLogger("bigain.app")

try:  # ZeroGPU Spaces: the decorator borrows a GPU per call; elsewhere it is not installed
    import spaces

    GPU: Callable[[Callable], Callable] = spaces.GPU(duration=120)
    ZERO_GPU = True
except ImportError:
    ZERO_GPU = False

    def GPU(fn: Callable) -> Callable:
        return fn


ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = "digits-dit"
MODEL_CHOICES = [
    ("Digits DiT (embedded, CPU)", "digits-dit"),
    ("Digits U-Net (embedded, CPU)", "digits-unet"),
    ("Stable Diffusion 2 base (hub, GPU)", "sd2-base"),
    ("DiT-XL/2 256 (hub, GPU)", "dit-xl-2-256"),
]


def method_choices() -> list[tuple[str, str]]:
    """Every compressing method of the registry (read when the page is built); BiGain's own are marked."""
    ours = ("lgtm", "iekvd")
    return [(f"{c.title} (BiGain)" if c.name in ours else c.title, c.name) for c in METHODS.values() if c.compresses]


MAX_PIXELS = 4096 * 4096
MAX_CLASSES = 100
QUEUE_SIZE = 16
CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
.upscale img { width: 100% !important; height: 100% !important; object-fit: contain !important; }
.fit img { object-fit: contain !important; }
.note { opacity: 0.85; font-size: 0.92em; }
"""


# ---- helpers -----------------------------------------------------------------------------


def friendly(fn: Callable) -> Callable:
    """Turn any failure into a readable gr.Error so the app keeps serving the next request."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError, KeyError, FileNotFoundError, OSError) as e:
            raise gr.Error(_sentence(e), print_exception=False) from e
        except Exception as e:  # a bug, not the user's fault: log it, say so briefly
            log.error("unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
            raise gr.Error(f"Something went wrong ({type(e).__name__}: {_sentence(e)}). Please try again.") from e

    return wrapper


def _sentence(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return (msg or type(e).__name__).strip()


@functools.lru_cache(maxsize=3)
def model(name: str) -> Any:
    """A loaded model, cached: one copy serves every method (methods switch without re-patching)."""
    if not name:
        raise ValueError("choose a model")
    return load_model(name)


def _methods(names: list[str] | None, ratio_tome: float, ratio_lgtm: float, factor: float, alpha: float,
             schedule: bool, alpha_end: float) -> list[bigain.Method]:  # fmt: skip
    if isinstance(names, str):
        names = [names]
    kv = {"factor": whole(factor, "KV factor")}
    settings = {
        "tome": {"ratio": float(ratio_tome)},
        "lgtm": {"ratio": float(ratio_lgtm)},
        "todo": kv,
        "iekvd": {**kv, "alpha": float(alpha), "alpha_end": float(alpha_end) if schedule else None},
        "freqkv": kv,
    }
    return explain.methods_from_settings(names or [], settings)


def _seed(seed: Any) -> int:
    try:
        s = int(float(seed))
    except (TypeError, ValueError):
        raise ValueError(f"seed must be a whole number, got {seed!r}") from None
    if not 0 <= s < 2**31:
        raise ValueError(f"seed must be in [0, 2³¹), got {s}")
    return s


def _steps(steps: Any) -> int | None:
    if steps in (None, "", 0):
        return None
    s = int(float(steps))
    if not 1 <= s <= 200:
        raise ValueError(f"steps must be between 1 and 200, got {s}")
    return s


def _guidance(guidance: Any) -> float | None:
    return None if guidance in (None, "") else float(guidance)


def _image(image: Any) -> Image.Image:
    if image is None:
        raise ValueError("upload an image or pick an example first")
    if isinstance(image, (str, Path)):
        image = Image.open(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected an image, got {type(image).__name__}")
    if image.width * image.height > MAX_PIXELS:
        raise ValueError(f"image is {image.width}×{image.height}; the limit is {MAX_PIXELS // 10**6} megapixels")
    return image


def _classes(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    names = [c.strip() for c in text.replace("\n", ",").split(",")]
    if any(not c for c in names):
        raise ValueError("the class list has an empty entry (two commas in a row?)")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"at most {MAX_CLASSES} classes per request, got {len(names)}")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ValueError(f"duplicated classes: {', '.join(dup)}")
    if len(names) < 2:
        raise ValueError("give at least two classes to choose between")
    return names


def _progress(progress: gr.Progress) -> explain.Progress:
    return lambda frac, desc=None: progress(min(max(frac, 0.0), 1.0), desc=desc)


def _caption(row: explain.GenerationRow) -> str:
    """Short enough for a gallery tile: the method's name and its speed-up (settings are in the table)."""
    return row.method.title if not row.method.compresses else f"{row.method.title} ×{row.speedup:.2f}"


def _rounds(rounds: Any) -> int:
    r = float(rounds)
    if r != int(r):
        raise ValueError(f"timing rounds must be a whole number, got {rounds!r}")
    return int(r)


# ---- events ------------------------------------------------------------------------------


@friendly
def on_model(name: str) -> tuple[Any, Any, Any]:
    """Model picked: offer its classes (or a prompt box) and its default steps and guidance."""
    m = model(name)
    classes = [str(c) for c in (m.classes or [])]
    cond = gr.Dropdown(
        choices=classes,
        value=classes[0] if classes else "a photo of a cat",
        allow_custom_value=True,
        label="Class" if classes else "Prompt",
    )
    card = m.card
    return cond, gr.Number(value=card.steps), gr.Number(value=card.guidance)


@GPU
@friendly
def generate(
    model_name: str,
    condition: str,
    methods: list[str],
    ratio_tome: float = 0.5,
    ratio_lgtm: float = 0.7,
    factor: float = 2,
    alpha: float = 0.9,
    schedule: bool = False,
    alpha_end: float = 1.2,
    seed: float = 0,
    steps: float | None = None,
    guidance: float | None = None,
    rounds: float = 3,
    execution: str = "eager",
    progress: gr.Progress = gr.Progress(),
) -> tuple[list, list, pd.DataFrame, Any, str]:
    """Generate the same image with the baseline and each chosen method (same seed and noise).

    Returns (images with captions, difference maps against the baseline, timing table, speed
    plot, summary)."""
    m = model(model_name)
    meths = _methods(methods, ratio_tome, ratio_lgtm, factor, alpha, schedule, alpha_end)
    if condition is None or not str(condition).strip():
        raise ValueError("enter a class or a prompt")
    rows = explain.compare_generation(
        m,
        str(condition).strip(),
        meths,
        seed=_seed(seed),
        steps=_steps(steps),
        guidance=_guidance(guidance),
        progress=_progress(progress),
        rounds=_rounds(rounds),
        mode=_execution(execution),
    )
    base = rows[0].result.images[0]
    images = [(viz.enlarge(r.result.images[0]), _caption(r)) for r in rows]
    diffs = [(viz.difference_image(r.result.images[0], base), r.method.title) for r in rows[1:]]
    table = pd.DataFrame(
        {
            "method": [r.label for r in rows],
            "latency (s)": [round(r.wall_s, 3) for r in rows],
            "per denoiser call (ms)": [round(1000 * r.per_call_s, 2) for r in rows],
            "speed-up (×)": [round(r.speedup, 2) for r in rows],
            "GFLOPs / call": [None if r.flops is None else round(r.flops / 1e9, 4) for r in rows],
            "FLOPs vs baseline": [None if r.flops_ratio is None else f"{r.flops_ratio:.0%}" for r in rows],
            "mean |Δ| vs baseline": [round(r.mean_abs_diff or 0.0, 4) for r in rows],
        }
    )
    plot = viz.speed_figure([r.label for r in rows], [r.speedup for r in rows], [r.flops_ratio for r in rows])
    res = rows[0].result
    what = "class" if m.classes else "prompt"
    summary = (
        f"**{m.card.name}**, {what} **{res.condition[0]}**, seed {res.seed}, {res.sampler.upper()} {res.steps} steps, "
        f"guidance {res.guidance:g}: {res.n_calls} denoiser calls per image. Speed-ups are wall-time ratios to the "
        "baseline measured in this run, on this machine; on a small model and a busy CPU they are noisy and small, "
        "while FLOPs are exact."
    )
    return images, diffs, table, plot, summary


@GPU
@friendly
def classify(
    model_name: str,
    image: Any,
    classes: str | None,
    methods: list[str],
    ratio_tome: float = 0.5,
    ratio_lgtm: float = 0.7,
    factor: float = 2,
    alpha: float = 0.9,
    schedule: bool = False,
    alpha_end: float = 1.2,
    seed: float = 0,
    rounds: float = 3,
    execution: str = "eager",
    progress: gr.Progress = gr.Progress(),
) -> tuple[pd.DataFrame, str, Any]:
    """Classify one image with the diffusion classifier under the baseline and each method.

    Returns (top-5 table per method, agreement and cost summary, per-class error plot)."""
    m = model(model_name)
    meths = _methods(methods, ratio_tome, ratio_lgtm, factor, alpha, schedule, alpha_end)
    rows = explain.compare_classification(
        m,
        _image(image),
        meths,
        classes=_classes(classes),
        seed=_seed(seed),
        progress=_progress(progress),
        rounds=_rounds(rounds),
        mode=_execution(execution),
    )
    top = {"rank": list(range(1, 6))}
    for r in rows:
        cells = [f"{k.cls} ({k.score:.2f})" for k in r.result.ranking[:5]]
        top[r.label] = cells + [""] * (5 - len(cells))
    cost = "\n".join(
        f"- **{r.label}**: {r.result.n_evals} (class, timestep) evaluations in {r.result.n_calls} batched "
        f"denoiser call{'s' if r.result.n_calls != 1 else ''}, {r.wall_s:.2f} s (×{r.speedup:.2f} vs baseline)"
        for r in rows
    )
    summary = f"{explain.agreement(rows)}\n\n{cost}"
    plot = viz.error_figure({r.label: r.result for r in rows})
    return pd.DataFrame(top), summary, plot


@GPU
@friendly
def look_inside(
    model_name: str,
    condition: str,
    method: str,
    ratio_tome: float = 0.5,
    ratio_lgtm: float = 0.7,
    factor: float = 2,
    alpha: float = 0.9,
    schedule: bool = False,
    alpha_end: float = 1.2,
    seed: float = 0,
    steps: float | None = None,
    guidance: float | None = None,
    progress: gr.Progress = gr.Progress(),
) -> tuple[Any, ...]:
    """Generate once with one method while recording every compressed attention call."""
    m = model(model_name)
    meth = _methods([method], ratio_tome, ratio_lgtm, factor, alpha, schedule, alpha_end)
    if not meth:
        raise ValueError("pick a method to look inside")
    inside = explain.record_generation(
        m,
        str(condition).strip(),
        meth[0],
        seed=_seed(seed),
        steps=_steps(steps),
        guidance=_guidance(guidance),
        progress=_progress(progress),
    )
    block = inside.blocks[0]
    return (
        inside,
        viz.enlarge(inside.image),
        gr.Slider(minimum=1, maximum=len(inside.steps), value=1, step=1, interactive=True),
        gr.Dropdown(choices=[(viz.short_block(b), b) for b in inside.blocks], value=block, interactive=True),
        *_inside_views(inside, inside.steps[0], block),
    )


def _inside_views(inside: explain.Inside, step: int, block: str | None) -> tuple[Any, ...]:
    """The look-inside figures, with the panels a method has nothing for hidden."""
    *figs, caption = explain.inside_figures(inside, step, block)
    return (*[gr.Plot(value=f, visible=f is not None) for f in figs], caption)


@friendly
def inside_step(inside: explain.Inside | None, step: float, block: str | None) -> tuple[Any, ...]:
    """Redraw the look-inside figures for another step / block (no model call)."""
    if inside is None:
        raise ValueError("run a generation first")
    k = min(max(int(step), 1), len(inside.steps)) - 1
    return _inside_views(inside, inside.steps[k], block)


@friendly
def learn(image: Any, grid: float, ratio: float, factor: float, alpha: float) -> tuple[Any, Any, Any]:
    """The frequency split and the tokens each method keeps, for one image."""
    return explain.learn_figures(_image(image), grid, float(ratio), factor, float(alpha))


def benchmarks() -> tuple[str, list]:
    """What the benchmark and evaluation commands wrote to assets/ (never typed by hand)."""
    return explain.benchmark_report(ROOT / "assets")


# ---- layout ------------------------------------------------------------------------------

INTRO = """
# BiGain: faster diffusion models that still see
**Token compression** makes diffusion transformers and U-Nets faster by letting attention work on fewer
tokens. BiGain (CVPR 2026) does it with the image's **frequencies** in mind, so that both *generating*
and *classifying* with the model stay good. Compare it with its baselines below: **L-GTM** merges tokens
onto smooth anchors chosen by a Laplacian filter (vs **ToMe**'s random anchors), **IE-KVD** builds keys and
values from a blend of nearest and average pooling (vs **ToDo**'s nearest only).
"""

LEARN = """
### Why frequencies?
An image is the sum of a **low-pass** part (smooth shapes and colours) and a **high-frequency** part
(edges, strokes, texture). The **Laplacian** filter — each pixel minus the average of its four neighbours —
picks out the high-frequency part: it is large on edges and near zero on flat regions.

**Token merging** (ToMe) speeds attention up by averaging similar tokens together. Each small cell of the
grid chooses one *destination* token and others are merged into it. ToMe chooses destinations at random, so a
destination may sit on an edge and drag its neighbours' detail into a blur. **L-GTM** chooses, in every cell,
the token with the *lowest* Laplacian energy: destinations sit on smooth regions, where averaging loses little,
and edge tokens stay themselves.

**KV downsampling** (ToDo) keeps all queries but builds keys and values from one token per s×s cell
(*nearest*): cheap, but it aliases — thin strokes can vanish or jump. *Average* pooling is smooth but blurs.
**IE-KVD** blends the two, `avg + α·(nearest − avg)`: α < 1 interpolates (less aliasing), α > 1
extrapolates (sharper detail), and a schedule moves α from 0.8 to 1.2 as denoising goes from coarse to fine.

Pick an image and a ratio to see it happen. These pictures apply the real operators of the library to the
image's pixels; the **Look inside** tab shows the same maps inside the model while it generates.
"""


def _knobs(prefix: str, single: bool = False) -> dict[str, Any]:
    """Method choice and per-method settings (one set per tab)."""
    if single:
        methods: Any = gr.Radio(method_choices(), value="lgtm", label="Method", elem_id=f"{prefix}-methods")
    else:
        methods = gr.CheckboxGroup(
            method_choices(),
            value=["tome", "lgtm", "todo", "iekvd"],
            label="Methods (the baseline always runs first)",
            elem_id=f"{prefix}-methods",
        )
    with gr.Accordion("Method settings", open=False):
        with gr.Row():
            tome = gr.Slider(0.0, 0.75, value=0.5, step=0.05, label="ToMe ratio (share of tokens merged)")
            lgtm = gr.Slider(0.0, 0.75, value=0.7, step=0.05, label="L-GTM ratio")
        with gr.Row():
            factor = gr.Slider(2, 4, value=2, step=1, label="KV factor s (ToDo, IE-KVD: keys/values ÷ s²)")
            alpha = gr.Slider(0.0, 1.5, value=0.9, step=0.05, label="IE-KVD α (1 = ToDo, 0 = average)")
        with gr.Row():
            schedule = gr.Checkbox(value=False, label="α schedule (α at t=999 → α end at t=0)")
            alpha_end = gr.Slider(0.0, 1.5, value=1.2, step=0.05, label="α end")
    return {
        "methods": methods,
        "tome": tome,
        "lgtm": lgtm,
        "factor": factor,
        "alpha": alpha,
        "schedule": schedule,
        "alpha_end": alpha_end,
    }


def _knob_list(k: dict[str, Any]) -> list[Any]:
    return [k["methods"], k["tome"], k["lgtm"], k["factor"], k["alpha"], k["schedule"], k["alpha_end"]]


def _model_picker(elem_id: str) -> tuple[Any, Any]:
    m = gr.Dropdown(MODEL_CHOICES, value=DEFAULT_MODEL, label="Model", elem_id=elem_id)
    card = model(DEFAULT_MODEL)
    classes = [str(c) for c in card.classes]
    cond = gr.Dropdown(classes, value=classes[3 % len(classes)], allow_custom_value=True, label="Class")
    return m, cond


def _execution_modes() -> list[str]:
    """Execution modes this machine offers: ZeroGPU borrows a CUDA GPU per call and has no torch.compile."""
    device = "cuda" if ZERO_GPU else execution.default_device()
    return execution.available_modes(device, compile_ok=not ZERO_GPU)


def _execution(value: Any) -> str:
    mode = "eager" if value in (None, "") else str(value)
    if mode not in _execution_modes():
        raise ValueError(f"execution mode {mode!r} is not available here; choose one of {_execution_modes()}")
    return mode


def _execution_picker() -> Any:
    """Shown only where there is a choice (always eager; compile where torch.compile works; CUDA graphs on a GPU)."""
    modes = _execution_modes()
    return gr.Dropdown(
        modes, value="eager", label="Execution", visible=len(modes) > 1,
        info="eager: as is. compile: torch.compile (first run compiles, then fused kernels). "
        "cudagraph: the denoiser call captured once and replayed (GPU). Speed-ups compare within one mode.",
    )  # fmt: skip


def _timing_rounds() -> Any:
    return gr.Slider(
        1, 5, value=3, step=1, label="Timing rounds",
        info="Every method runs this many times in rotating order; the fastest run counts (robust to a busy machine).",
    )  # fmt: skip


def _sampling() -> tuple[Any, Any, Any]:
    card = model(DEFAULT_MODEL).card
    with gr.Row():
        seed = gr.Number(value=0, precision=0, label="Seed", minimum=0)
        steps = gr.Number(value=card.steps, precision=0, label="Steps", minimum=1, maximum=200)
        guidance = gr.Number(value=card.guidance, label="Guidance", minimum=0, maximum=30)
    return seed, steps, guidance


def _pixel_gallery(label: str, elem_id: str) -> gr.Gallery:
    """A row of lossless (PNG) images, enlarged without smoothing."""
    return gr.Gallery(
        label=label,
        show_label=False,
        format="png",
        columns=5,
        height=220,
        object_fit="contain",
        fit_columns=False,
        elem_id=elem_id,
        elem_classes=["pixelated", "fit"],
    )


def build_demo() -> gr.Blocks:
    examples = explain.digit_examples()
    with gr.Blocks(title="BiGain: token compression that keeps generation and classification") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Compare generation"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    g_model, g_cond = _model_picker("gen-model")
                    g_knobs = _knobs("gen")
                    g_seed, g_steps, g_guid = _sampling()
                    g_rounds = _timing_rounds()
                    g_exec = _execution_picker()
                    g_btn = gr.Button("Generate", variant="primary", elem_id="gen-button")
                with gr.Column(scale=3):
                    g_summary = gr.Markdown(
                        "Pick a class and press **Generate**: every method starts from the same noise.",
                        elem_id="gen-summary",
                    )
                    gr.Markdown("#### Generated: same seed, same starting noise (caption: speed-up over the baseline)")
                    g_gallery = _pixel_gallery("Generated", "gen-gallery")
                    gr.Markdown("#### Difference from the baseline (black = identical, bright = changed)")
                    g_diff = _pixel_gallery("Difference from the baseline", "gen-diff")
                    g_table = gr.Dataframe(label="Cost, measured in this run", elem_id="gen-table", wrap=True)
                    g_plot = gr.Plot(show_label=False, format="png")
            g_model.change(on_model, g_model, [g_cond, g_steps, g_guid], api_visibility="undocumented")
            g_btn.click(
                generate,
                [g_model, g_cond, *_knob_list(g_knobs), g_seed, g_steps, g_guid, g_rounds, g_exec],
                [g_gallery, g_diff, g_table, g_plot, g_summary],
                api_name="generate",
                concurrency_id="gpu",
                concurrency_limit=1,
            )

        with gr.Tab("Compare classification"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    c_model = gr.Dropdown(MODEL_CHOICES, value=DEFAULT_MODEL, label="Model", elem_id="cls-model")
                    c_image = gr.Image(
                        type="pil", image_mode=None, format="png", label="Image", height=256,
                        elem_id="cls-image", elem_classes=["pixelated", "upscale"], sources=["upload", "clipboard"],
                    )  # fmt: skip
                    gr.Examples(
                        examples,
                        inputs=c_image,
                        label="Digits from the held-out test split (click one)",
                        example_labels=[f"digit {i}" for i in range(len(examples))],
                        elem_id="cls-examples",
                    )
                    c_classes = gr.Textbox(
                        value="",
                        label="Classes (comma-separated; empty = all of the model's classes)",
                        placeholder="3, 5, 8",
                    )
                    c_knobs = _knobs("cls")
                    c_seed = gr.Number(value=0, precision=0, label="Seed", minimum=0)
                    c_rounds = _timing_rounds()
                    c_exec = _execution_picker()
                    c_btn = gr.Button("Classify", variant="primary", elem_id="cls-button")
                with gr.Column(scale=2):
                    c_summary = gr.Markdown(
                        "The diffusion classifier picks the class whose prompt lets the model **denoise the image "
                        "best**. Pick a digit and press **Classify**.",
                        elem_id="cls-summary",
                    )
                    c_table = gr.Dataframe(
                        label="Top-5 classes per method: class (score)", elem_id="cls-table", wrap=True
                    )
                    gr.Markdown(
                        "#### The evidence\nFor every class, how well the model denoises the image at each "
                        "noise level when told it is that class: the lowest curve wins.",
                    )
                    c_plot = gr.Plot(show_label=False, format="png")
            c_btn.click(
                classify,
                [c_model, c_image, c_classes, *_knob_list(c_knobs), c_seed, c_rounds, c_exec],
                [c_table, c_summary, c_plot],
                api_name="classify",
                concurrency_id="gpu",
                concurrency_limit=1,
            )

        with gr.Tab("Look inside"):
            gr.Markdown(
                "Generate once with one method while recording every compressed attention call, then walk "
                "through the denoising steps and blocks. **Gate**: L-GTM's Laplacian energy (hot = detail). "
                "**Merge groups**: tokens averaged together share a colour, dots mark destinations. "
                "**KV**: what keys and values are made of under ToDo / IE-KVD at that block's token grid.",
                elem_classes=["note"],
            )
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    i_model, i_cond = _model_picker("inside-model")
                    i_knobs = _knobs("inside", single=True)
                    i_seed, i_steps, i_guid = _sampling()
                    i_btn = gr.Button("Generate and record", variant="primary", elem_id="inside-button")
                with gr.Column(scale=3, elem_id="inside-plots"):
                    i_state = gr.State(None)
                    with gr.Row():
                        i_image = gr.Image(
                            label="Result", format="png", height=260, elem_classes=["pixelated", "upscale"]
                        )
                        with gr.Column():
                            i_step = gr.Slider(1, 25, value=1, step=1, label="Denoising step", interactive=False)
                            i_block = gr.Dropdown([], label="Block", interactive=False)
                            i_caption = gr.Markdown()
                    with gr.Row():
                        i_gate = gr.Plot(show_label=False, format="png")
                        i_merge = gr.Plot(show_label=False, format="png")
                    i_kv = gr.Plot(show_label=False, format="png")
            i_model.change(on_model, i_model, [i_cond, i_steps, i_guid], api_visibility="undocumented")
            i_figs = [i_gate, i_merge, i_kv, i_caption]
            i_btn.click(
                look_inside,
                [i_model, i_cond, *_knob_list(i_knobs), i_seed, i_steps, i_guid],
                [i_state, i_image, i_step, i_block, *i_figs],
                api_visibility="undocumented",
                concurrency_id="gpu",
                concurrency_limit=1,
            )
            for ev in (i_step.release, i_block.change):
                ev(inside_step, [i_state, i_step, i_block], i_figs, api_visibility="undocumented")

        with gr.Tab("Learn the idea"):
            gr.Markdown(LEARN)
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    l_image = gr.Image(
                        value=examples[0][0], type="pil", image_mode=None, format="png", label="Image",
                        height=220, elem_classes=["pixelated", "upscale"],
                    )  # fmt: skip
                    gr.Examples(
                        examples,
                        inputs=l_image,
                        label="Examples",
                        example_labels=[f"digit {i}" for i in range(len(examples))],
                    )
                    l_grid = gr.Radio([8, 16, 32], value=16, label="Token grid (tokens per side)")
                    l_ratio = gr.Slider(0.0, 0.75, value=0.5, step=0.05, label="Merge ratio (ToMe, L-GTM)")
                    l_factor = gr.Slider(2, 4, value=2, step=1, label="KV factor s (ToDo, IE-KVD)")
                    l_alpha = gr.Slider(0.0, 1.5, value=0.9, step=0.05, label="IE-KVD α")
                    l_btn = gr.Button("Show", variant="primary")
                with gr.Column(scale=3, elem_id="learn-plots"):
                    gr.Markdown(
                        "#### 1. Low and high frequencies\nThe image (averaged into tokens) = smooth part + detail."
                    )
                    l_freq = gr.Plot(show_label=False, format="png")
                    gr.Markdown(
                        "#### 2. Which tokens each method keeps\nTop: merged tokens share a colour, white dots are "
                        "destinations; for ToDo / IE-KVD the bright tokens are the ones nearest keeps. Bottom: what "
                        "attention then works with."
                    )
                    l_keep = gr.Plot(show_label=False, format="png")
                    gr.Markdown(
                        "#### 3. Nearest, average and the α-blend\nHow keys and values are built from each s×s cell."
                    )
                    l_kv = gr.Plot(show_label=False, format="png")
            l_inputs = [l_image, l_grid, l_ratio, l_factor, l_alpha]
            for ev in (l_btn.click, l_grid.change, l_ratio.release, l_factor.release, l_alpha.release):
                ev(learn, l_inputs, [l_freq, l_keep, l_kv], api_visibility="undocumented")
            demo.load(learn, l_inputs, [l_freq, l_keep, l_kv], api_visibility="undocumented")

        with gr.Tab("Benchmarks"):
            gr.Markdown(
                "Accuracy and speed tables written by the repository's benchmark (`python -m bigain.bench …`) and "
                "evaluation (`python -m bigain eval digits`) commands, each with the command and machine that "
                "produced it. Rerun a command to refresh its table.",
                elem_classes=["note"],
            )
            b_text = gr.Markdown()
            b_gallery = gr.Gallery(label="Plots", format="png", columns=2, height="auto")
            demo.load(benchmarks, None, [b_text, b_gallery], api_visibility="undocumented")
    demo.queue(max_size=QUEUE_SIZE)
    return demo


def launch(app: gr.Blocks, **kwargs: Any) -> Any:
    """Launch with the app's look and limits (Gradio 6 takes theme/css at launch); kwargs override."""
    options: dict[str, Any] = {
        "css": CSS,
        "theme": gr.themes.Soft(),
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "max_file_size": "20mb",
        "allowed_paths": [str(explain.examples_dir())],
    }
    return app.launch(**(options | kwargs))


demo = build_demo()

if __name__ == "__main__":
    launch(demo)

"""Learn the idea: the library's operators on an image's pixels (photos and digits), including the
paper's Figure-6 experiment, on pixels and inside the model (its own tokens, :mod:`bigain.explain.features`)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from bigain import explain, viz
from bigain.errors import whole
from bigain.explain.bundled import PHOTOS, photo_examples
from bigain.explain.learn import GRIDS, frequency_parts, merge_choice
from bigain.images import read_image
from bigain.methods import LGTM, ToMe
from bigain.ui.checked import CheckedDropdown, CheckedImage, CheckedNumber, CheckedRadio, CheckedSlider, CheckedTextbox
from bigain.ui.common import friendly
from bigain.ui.common import model as loaded_model
from bigain.zoo import CARDS, assets_dir

FIG6_GRID, FIG6_RATIO = 64, 0.75  # the highest-resolution tokens, the highest ratio a 2×2 cell allows

TEXT = """
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

Pick a photo (or a digit) and a grid to see it happen. These pictures apply the real operators of the library
to the image's pixels; the **Look inside** tab shows the same maps inside the model while it generates.
"""

BORDER = (
    "The Laplacian energy map lights up along the image border: the gate pads the token grid with zeros (as "
    "the paper does), so border tokens differ from their missing neighbours. The low/high split above pads by "
    "repeating the border instead, so it has no frame."
)


def _image(image: Any) -> Any:
    if image is None:
        raise gr.Error("Image is missing: upload an image or pick an example first.", print_exception=False)
    return read_image(image) if isinstance(image, str) else image


@friendly
def learn(image: Any, grid: Any, ratio: float, factor: Any, alpha: float) -> tuple[Any, Any, Any]:
    """The frequency split and the tokens each method keeps, for one image."""
    return explain.learn_figures(
        _image(image), whole(grid, "grid"), float(ratio), whole(factor, "factor"), float(alpha)
    )


@friendly
def figure6(image: Any, grid: int = FIG6_GRID, ratio: float = FIG6_RATIO) -> Any:
    """ToMe and L-GTM at a high merge ratio on fine tokens: what attention sees, and its error."""
    parts = frequency_parts(_image(image), grid)
    tokens = parts.tokens
    seen = {f"{m.title} r={ratio:g}": merge_choice(tokens, m)["seen"] for m in (ToMe(ratio=ratio), LGTM(ratio=ratio))}
    edges = parts.score >= np.quantile(parts.score, 0.8)  # the fifth of tokens with the most Laplacian energy
    return viz.figure6(tokens, seen, f"{grid}×{grid} tokens, {ratio:.0%} merged away", edges=edges)


FIG6_INSIDE = """#### 5. Figure 6 inside the model
Where the paper makes it: on the model's **own tokens**, the hidden states entering the self-attention of its
first compressed layer (the highest-resolution one), at t = 200 of 1000. A test image of the class is noised to
t and the model runs once per method; the figure shows the Laplacian energy of those hidden states, which tokens
ToMe and L-GTM merged, and how far each method's attention output is from the uncompressed one, on **edge**
tokens (the quarter with the most energy) and **smooth** tokens (the half with the least). The KV methods are
there too, with Table 12's ablation: keys/values from each 2×2 cell's highest-frequency token only (Freq-KV high)
or its lowest (Freq-KV low). One image, one noise draw: the numbers move with the seed, so try a few."""


def inside_models() -> list[str]:
    """The embedded models whose weights are here (the Figure-6-inside section's choices)."""
    return [
        n for n, c in CARDS.items() if c.source == "embedded" and (assets_dir() / n / "model.safetensors").is_file()
    ]


@friendly
def figure6_inside(model_name: str, condition: Any = "3", ratio: float = FIG6_RATIO, seed: Any = 0) -> tuple[Any, str]:
    """Figure 6 on ``model_name``'s own tokens (class ``condition``): the figure and a Markdown table."""
    if model_name not in inside_models():
        raise gr.Error(f"Model must be one of {', '.join(inside_models())}.", print_exception=False)
    res = explain.figure6_inside(
        loaded_model(model_name), str(condition).strip(), seed=whole(seed, "seed"), ratio=float(ratio)
    )
    head = (
        f"**{res.model}**, class {res.condition}, {res.source}, t = {res.t}, layer `{res.block}` "
        f"({res.h}×{res.w} tokens × {res.channels} channels). Errors are relative: ‖Δ‖ / ‖uncompressed‖."
    )
    return explain.figure6_inside_figure(res), head + "\n\n" + res.table()


def examples() -> tuple[list[list[str]], list[str]]:
    photos = photo_examples()
    digits = explain.digit_examples()[:4]
    labels = [name for name in PHOTOS][: len(photos)] + [f"digit {i}" for i in range(len(digits))]
    return photos + digits, labels


def build() -> dict[str, Any]:
    gr.Markdown(TEXT)
    ex, labels = examples()
    first_image = ex[0][0]
    grids = [g for g in GRIDS if g >= 8]
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            l_image = CheckedImage(
                value=first_image,
                image_mode=None,
                format="png",
                label="Image",
                height=240,
                elem_id="learn-image",
                elem_classes=["upscale"],
            )
            gr.Examples(
                ex,
                inputs=l_image,
                label="Photos (scikit-image, public domain / CC0) and test digits",
                example_labels=labels,
                elem_id="learn-examples",
            )
            l_grid = CheckedRadio(grids, value=32, label="Token grid (tokens per side)", elem_id="learn-grid")
            l_ratio = CheckedSlider(0.0, 0.75, value=0.5, step=0.05, label="Merge ratio (ToMe, L-GTM)")
            l_factor = CheckedSlider(2, 4, value=2, step=1, integer=True, label="KV factor s (ToDo, IE-KVD)")
            l_alpha = CheckedSlider(0.0, 1.5, value=0.9, step=0.05, label="IE-KVD α")
        with gr.Column(scale=3, elem_id="learn-plots"):
            first = learn(first_image, 32, 0.5, 2, 0.9)
            gr.Markdown("#### 1. Low and high frequencies\nThe image (averaged into tokens) = smooth part + detail.")
            l_freq = gr.Plot(first[0], label="Frequency split", format="png", show_label=False)
            gr.Markdown(BORDER, elem_classes=["note"])
            gr.Markdown(
                "#### 2. Which tokens each method keeps\nTop: merged tokens share a colour, white dots are "
                "destinations; for ToDo / IE-KVD the bright tokens are the ones nearest keeps. Bottom: what "
                "attention then works with."
            )
            l_keep = gr.Plot(first[1], label="Kept tokens", format="png", show_label=False)
            gr.Markdown("#### 3. Nearest, average and the α-blend\nHow keys and values are built from each s×s cell.")
            l_kv = gr.Plot(first[2], label="Keys and values", format="png", show_label=False)
            gr.Markdown(
                f"#### 4. The paper's Figure 6: a high ratio on the finest tokens\n{FIG6_GRID}×{FIG6_GRID} tokens, "
                f"{FIG6_RATIO:.0%} of them merged away (the most a 2×2 cell allows). In the paper (inside the "
                "model, on its features) ToMe's random destinations blur structure and L-GTM's smooth ones keep "
                "edges. Here the same operators run on raw **pixel** tokens; below each, where the picture attention "
                "sees differs from the tokens, with the mean error over all tokens and over edge tokens (the fifth "
                "with the most Laplacian energy). Judge for yourself: on these photos, pixel tokens do **not** "
                "reproduce the paper's advantage (L-GTM's error is the higher one, on edges too)."
            )
            l_fig6 = gr.Plot(figure6(first_image), label="Figure 6 on this image", format="png", show_label=False)
    inputs = [l_image, l_grid, l_ratio, l_factor, l_alpha]
    for ev in (l_grid.change, l_ratio.release, l_factor.release, l_alpha.release):
        ev(learn, inputs, [l_freq, l_keep, l_kv], api_visibility="undocumented", concurrency_id="learn")
    l_image.change(learn, inputs, [l_freq, l_keep, l_kv], api_visibility="undocumented", concurrency_id="learn")
    l_image.change(figure6, l_image, l_fig6, api_visibility="undocumented", concurrency_id="learn")
    _build_inside()
    return {"image": l_image}


def _build_inside() -> None:
    """The Figure-6-inside section: computed on click (a few denoiser calls), nothing at start-up."""
    models = inside_models()
    if not models:
        return
    gr.Markdown(FIG6_INSIDE)
    with gr.Row(elem_id="learn-figure6-inside"):
        with gr.Column(scale=1, min_width=280):
            f_model = CheckedDropdown(models, value=models[0], label="Model (embedded)", elem_id="learn-f6-model")
            f_class = CheckedTextbox(value="3", label="Class (a digit; a letter for glyphs models)")
            f_ratio = CheckedSlider(0.05, FIG6_RATIO, value=FIG6_RATIO, step=0.05, label="Merge ratio (ToMe, L-GTM)")
            f_seed = CheckedNumber(value=0, integer=True, minimum=0, label="Seed (test image, noise, ToMe)")
            f_run = gr.Button("Run inside the model", variant="primary", elem_id="learn-f6-button")
        with gr.Column(scale=3):
            f_plot = gr.Plot(label="Figure 6 inside the model", format="png", show_label=False)
            f_table = gr.Markdown()
    f_run.click(
        figure6_inside,
        [f_model, f_class, f_ratio, f_seed],
        [f_plot, f_table],
        api_visibility="undocumented",
        concurrency_id="learn",
    )

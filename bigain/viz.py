"""Pictures of what token compression does: matplotlib figures and display images.

Everything here draws data it is given (arrays, recorded events, results); the numbers come
from :mod:`bigain.explain`, the pipelines or the benchmark files. Figures are built with
:class:`matplotlib.figure.Figure` directly (no pyplot state, nothing to close, thread-safe),
so a server can make one per request without leaking.

Conventions: images are (H, W) or (H, W, 3) float arrays in [0, 1]; token maps are (h·w,)
in row-major order of an h×w grid that covers the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede any backend use
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

#: One colour per method family, used by every figure.
METHOD_COLORS: dict[str, str] = {
    "baseline": "#6b7280",
    "tome": "#2563eb",
    "lgtm": "#ea580c",
    "todo": "#16a34a",
    "iekvd": "#dc2626",
}
DIFF_CMAP = "magma"
GATE_CMAP = "inferno"
GATE_ALPHA = 0.45  # the gate over the image: see-through, so the digit or photo stays visible


# ---- images ------------------------------------------------------------------------------


def as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or array → float array in [0, 1], (H, W) for grey or (H, W, 3)."""
    if isinstance(image, Image.Image):
        mode = "L" if image.mode in ("L", "LA", "1", "I", "F", "I;16") else "RGB"
        return np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    return np.clip(a / 255.0 if a.max() > 1.0 else a, 0.0, 1.0)


def enlarge(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Upscale by an integer factor with nearest neighbour so that the short side is ≥ ``min_side``:
    a 16×16 digit stays 256 crisp squares instead of a browser-blurred smudge."""
    k = max(1, math.ceil(min_side / max(1, min(image.size))))
    return image if k == 1 else image.resize((image.width * k, image.height * k), Image.Resampling.NEAREST)


def difference_image(image: Image.Image, reference: Image.Image, min_side: int = 256) -> Image.Image:
    """|image − reference| averaged over channels, coloured with a fixed [0, 1] scale (black = identical),
    so maps of different methods can be compared by eye. Images must have the same size."""
    a, b = as_array(image), as_array(reference)
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"cannot compare images of sizes {a.shape[:2]} and {b.shape[:2]}")
    d = np.abs(_rgb(a) - _rgb(b)).mean(-1)
    rgb = colormaps[DIFF_CMAP](d)[..., :3]
    return enlarge(Image.fromarray((rgb * 255).round().astype(np.uint8)), min_side)


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a


def _show(ax: Any, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def _grid_lines(ax: Any, shape: tuple[int, int], h: int, w: int, every: int = 1, **kw: Any) -> None:
    """Thin lines on token (or cell) borders of an h×w grid drawn over an image of ``shape``."""
    hh, ww = shape
    style = {"color": "white", "lw": 0.4, "alpha": 0.35, **kw}
    for i in range(every, h, every):
        ax.axhline(i * hh / h - 0.5, **style)
    for j in range(every, w, every):
        ax.axvline(j * ww / w - 0.5, **style)


def _centres(idx: np.ndarray, shape: tuple[int, int], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y) of the centres of tokens ``idx`` of an h×w grid."""
    hh, ww = shape
    return (idx % w + 0.5) * ww / w - 0.5, (idx // w + 0.5) * hh / h - 0.5


def _extent(shape: tuple[int, int]) -> tuple[float, float, float, float]:
    return (-0.5, shape[1] - 0.5, shape[0] - 0.5, -0.5)


# ---- the Laplacian gate and merges ---------------------------------------------------------


def _gate_axes(ax: Any, img: np.ndarray, scores: np.ndarray, h: int, w: int, dst: np.ndarray | None) -> Any:
    _show(ax, img)
    heat = ax.imshow(
        scores.reshape(h, w), cmap=GATE_CMAP, alpha=GATE_ALPHA, extent=_extent(img.shape[:2]), interpolation="nearest"
    )
    if dst is not None:
        x, y = _centres(dst, img.shape[:2], h, w)
        ax.scatter(x, y, s=_dot(h, w), facecolors="none", edgecolors="cyan", linewidths=1.2)
    return heat


def _dot(h: int, w: int) -> float:
    return float(np.clip(2400 / max(h, w) ** 1.3, 4, 90))


def gate_figure(
    image: Image.Image | np.ndarray,
    scores: np.ndarray,
    h: int,
    w: int,
    dst: np.ndarray | None = None,
    title: str = "Laplacian gate",
) -> Figure:
    """The Laplacian energy of every token (hot = high frequency: edges, strokes) over the image,
    with the chosen destinations ringed in cyan: L-GTM picks the coolest token of each cell.

    scores: (h·w,) per-token energy; dst: (Nd,) destination positions or None.
    """
    img = as_array(image)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    _check_tokens(scores, h, w, "scores")
    fig = Figure(figsize=(4.2, 3.8), layout="constrained")
    ax = fig.add_subplot()
    heat = _gate_axes(ax, img, scores, h, w, dst)
    ax.set_title(title, fontsize=10)
    fig.colorbar(heat, ax=ax, shrink=0.8, label="Laplacian energy (high = detail)")
    return fig


def short_block(name: str) -> str:
    """A readable block name: "down_blocks.0.attentions.1.transformer_blocks.0" → "down 0 · attn 1 · tb 0"."""
    words = {"down_blocks": "down", "up_blocks": "up", "mid_block": "mid", "attentions": "attn"}
    words |= {"transformer_blocks": "block"}
    parts, out = name.split("."), []
    for i, p in enumerate(parts):
        if p in words:
            nxt = parts[i + 1] if i + 1 < len(parts) and parts[i + 1].isdigit() else ""
            out.append(f"{words[p]} {nxt}".strip())
    return " · ".join(out) or name


def _check_tokens(a: np.ndarray, h: int, w: int, name: str) -> None:
    if a.size != h * w:
        raise ValueError(f"{name}: {a.size} values do not fit an {h}x{w} token grid")


def group_colors(groups: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Colour every token by the destination it was merged into, as ToMe's visualisations do.

    groups: (N,) position each token was merged into (itself when kept). Returns an (N, 4) RGBA
    array (transparent for tokens that stayed alone) and the (G,) positions of the merged groups.
    """
    groups = np.asarray(groups).reshape(-1)
    heads, counts = np.unique(groups, return_counts=True)
    merged = heads[counts > 1]
    rng = np.random.default_rng(seed)
    hue = (rng.permutation(len(merged)) + rng.uniform(0, 1)) / max(1, len(merged)) % 1.0
    hsv = np.stack([hue, rng.uniform(0.55, 0.95, len(merged)), rng.uniform(0.65, 1.0, len(merged))], -1)
    colours = np.concatenate([hsv_to_rgb(hsv), np.ones((len(merged), 1))], -1) if len(merged) else np.zeros((0, 4))
    rgba = np.zeros((groups.size, 4))
    for head, colour in zip(merged, colours, strict=True):
        rgba[groups == head] = colour
    rgba[np.isin(groups, merged), 3] = 0.7
    return rgba, merged


def _merge_axes(ax: Any, img: np.ndarray, groups: np.ndarray, h: int, w: int, dst: np.ndarray | None) -> None:
    rgba, _ = group_colors(groups)
    _show(ax, img)
    ax.imshow(rgba.reshape(h, w, 4), extent=_extent(img.shape[:2]), interpolation="nearest")
    _grid_lines(ax, img.shape[:2], h, w)
    if dst is not None:
        x, y = _centres(np.asarray(dst), img.shape[:2], h, w)
        ax.scatter(x, y, s=_dot(h, w) * 0.35, c="white", edgecolors="black", linewidths=0.4)


def merge_figure(
    image: Image.Image | np.ndarray,
    groups: np.ndarray,
    h: int,
    w: int,
    dst: np.ndarray | None = None,
    title: str = "Merge groups",
) -> Figure:
    """Which tokens were averaged together: every merged group in its own colour (its destination
    and the sources merged into it), tokens that stayed alone left uncoloured, destinations dotted.

    groups: (h·w,) from ``Merge.groups()`` / ``AttnEvent.groups``; dst: (Nd,) destination positions.
    """
    img = as_array(image)
    groups = np.asarray(groups).reshape(-1)
    _check_tokens(groups, h, w, "groups")
    fig = Figure(figsize=(4.2, 3.8), layout="constrained")
    ax = fig.add_subplot()
    _merge_axes(ax, img, groups, h, w, dst)
    n_out = len(np.unique(groups))
    ax.set_title(f"{title}\n{h * w} tokens → {n_out} after merging", fontsize=10)
    return fig


# ---- KV downsampling -----------------------------------------------------------------------


def kv_figure(
    tokens: np.ndarray,
    kept: np.ndarray,
    nearest: np.ndarray,
    average: np.ndarray,
    blend: np.ndarray,
    factor: int,
    alpha: float,
) -> Figure:
    """What keys/values are made of under KV downsampling, drawn on image tokens.

    tokens: (h, w[, 3]) the full-resolution tokens; kept: (k,) positions nearest-exact keeps;
    nearest/average/blend: (h/s, w/s[, 3]) the downsampled grids (ToDo, average pooling, IE-KVD's
    α-blend ``avg + α·(nearest − avg)``). All in [0, 1] for display (the blend is clipped).
    """
    h, w = tokens.shape[:2]
    fig = Figure(figsize=(10.5, 3.0), layout="constrained")
    axes = fig.subplots(1, 4)
    _show(axes[0], tokens, f"{h}×{w} tokens (queries see all)")
    x, y = _centres(np.asarray(kept), (h, w), h, w)
    axes[0].scatter(x, y, s=_dot(h, w) * 0.5, facecolors="none", edgecolors="lime", linewidths=1.0)
    _grid_lines(axes[0], (h, w), h, w, every=factor, color="lime", alpha=0.6, lw=0.6)
    _show(axes[1], nearest, f"nearest (ToDo): keeps 1 of {factor * factor}")
    _show(axes[2], average, "average: blurs each cell")
    kind = "interpolate" if 0 <= alpha <= 1 else "extrapolate"
    _show(axes[3], np.clip(blend, 0, 1), f"IE-KVD α={alpha:.2f} ({kind})")
    return fig


# ---- learning the idea ---------------------------------------------------------------------


def frequency_figure(tokens: np.ndarray, low: np.ndarray, high: np.ndarray, score: np.ndarray) -> Figure:
    """An image split into its low-pass part (the average of each pixel's four neighbours) and its
    high-frequency part (the rest, −Laplacian/4; tokens = low + high), and the per-token
    Laplacian energy L-GTM ranks tokens by. tokens/low/high: (h, w[, 3]) in [0, 1] (high centred
    on 0.5); score: (h, w)."""
    fig = Figure(figsize=(10.5, 3.0), layout="constrained")
    axes = fig.subplots(1, 4)
    _show(axes[0], tokens, "image (as tokens)")
    _show(axes[1], np.clip(low, 0, 1), "low-pass: smooth shapes")
    _show(axes[2], np.clip(high, 0, 1), "high-frequency: edges (stretched)")
    im = axes[3].imshow(score, cmap=GATE_CMAP, interpolation="nearest")
    axes[3].set_xticks([])
    axes[3].set_yticks([])
    axes[3].set_title("Laplacian energy per token", fontsize=10)
    fig.colorbar(im, ax=axes[3], shrink=0.8)
    return fig


def choices_figure(tokens: np.ndarray, choices: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Which tokens each method keeps (top row) and what attention then works with (bottom row),
    side by side on the same image tokens.

    choices: label → {"kind": "merge", "groups": (h·w,), "dst": (Nd,), "seen": (h, w[, 3]), "method": name}
    (seen: every token replaced by the mean of its merge group) or {"kind": "kv", "kept": (k,),
    "grid": (h/s, w/s[, 3]) the keys/values, "factor": s, "method": name}.
    """
    h, w = tokens.shape[:2]
    fig = Figure(figsize=(2.9 * len(choices), 6.2), layout="constrained")
    axes = np.asarray(fig.subplots(2, len(choices))).reshape(2, -1)
    for (top, bottom), (label, c) in zip(axes.T, choices.items(), strict=True):
        colour = METHOD_COLORS.get(c.get("method", ""), "black")
        if c["kind"] == "merge":
            groups = np.asarray(c["groups"])
            _merge_axes(top, tokens, groups, h, w, c.get("dst"))
            top.set_title(f"{label}\n{h * w} → {len(np.unique(groups))} tokens", fontsize=10, color=colour)
            _show(bottom, np.clip(c["seen"], 0, 1), "attention sees (group means)")
        else:
            _show(top, _dim_except(tokens, np.asarray(c["kept"])))
            grid = c["grid"]
            top.set_title(f"{label}\nK/V: {h * w} → {grid.shape[0] * grid.shape[1]} tokens", fontsize=10, color=colour)
            _grid_lines(top, (h, w), h, w, every=int(c["factor"]), color="lime", alpha=0.6, lw=0.6)
            _show(bottom, np.clip(grid, 0, 1), "keys/values are made of")
    return fig


def _dim_except(tokens: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Tokens with all but ``kept`` faded, to show which ones nearest-exact keeps."""
    out = _rgb(tokens).copy().reshape(-1, 3)
    mask = np.ones(len(out), bool)
    mask[kept] = False
    out[mask] = 0.25 + 0.3 * out[mask]
    return out.reshape(*tokens.shape[:2], 3)


# ---- results -------------------------------------------------------------------------------


def _method_colour(label: str) -> str:
    low = label.lower().replace("-", "")
    for key in ("lgtm", "iekvd", "tome", "todo", "baseline"):
        if low.startswith(key):
            return METHOD_COLORS[key]
    return "black"


def error_figure(results: Mapping[str, Any], top: int = 5, max_panels: int = 6) -> Figure:
    """The diffusion classifier's evidence: per-class denoising error against timestep, one panel
    per method. Each class keeps its colour in every panel; the predicted class is drawn thick,
    other top-``top`` classes thin, the rest grey.

    results: method label → ClassificationResult (needs .classes, .timesteps (T,), .errors
    (classes × T, NaN where a class was not evaluated), .ranking (best first), .prediction).
    """
    items = list(results.items())[:max_panels]
    if not items:
        raise ValueError("error_figure: no results to plot")
    cols = min(3, len(items))
    rows = math.ceil(len(items) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True)).reshape(-1)
    colours = _class_colours([res for _, res in items], top)
    for ax, (label, res) in zip(axes, items, strict=False):
        _error_axes(ax, res, top, colours)
        ax.set_title(f"{label}: predicts {res.prediction}", fontsize=10, color=_method_colour(label))
    for ax in axes[len(items) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, lw=2, label=name) for name, c in colours.items()]
    handles.append(Line2D([], [], color="0.8", lw=1, label="other classes"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize=8,
               title="thick line = the method's prediction; lower error = better fit", title_fontsize=8)  # fmt: skip
    return fig


def _class_colours(results: Sequence[Any], top: int) -> dict[str, Any]:
    """A fixed colour for every class that is in some method's top ``top`` (first seen, first coloured)."""
    names: dict[str, None] = {}
    for res in results:
        for r in res.ranking[:top]:
            names.setdefault(str(_rank_class(r)), None)
    palette = colormaps["tab10"](np.arange(10))
    return {n: palette[i % 10] for i, n in enumerate(names)}


def _error_axes(ax: Any, res: Any, top: int, colours: Mapping[str, Any]) -> None:
    t = np.asarray(res.timesteps, dtype=float)
    err = np.asarray(res.errors, dtype=float)
    order = np.argsort(t)
    classes = [str(c) for c in res.classes]
    best = [str(_rank_class(r)) for r in res.ranking[:top]]
    for i, name in enumerate(classes):
        if name not in best:
            _plot_class(ax, t[order], err[i, order], color="0.8", lw=0.8, zorder=1)
    for name in best:
        thick = name == str(res.prediction)
        i = classes.index(name)
        _plot_class(ax, t[order], err[i, order], color=colours[name], lw=2.4 if thick else 1.0, zorder=3)
    ax.set_xlabel("timestep t (noise level)")
    ax.set_ylabel("denoising error (MSE, log)")
    if np.nanmin(err) > 0:
        ax.set_yscale("log")  # late timesteps have small errors but still separate the classes
    ax.grid(alpha=0.3)


def _rank_class(r: Any) -> Any:
    """The class of a ranking entry: a ``Ranked`` record (``.cls``) or a (class, error, score) tuple."""
    return r.cls if hasattr(r, "cls") else r[0]


def _plot_class(ax: Any, t: np.ndarray, e: np.ndarray, **kw: Any) -> None:
    ok = np.isfinite(e)
    if ok.any():
        ax.plot(t[ok], e[ok], marker="o", ms=2.5, **kw)


def speed_figure(labels: Sequence[str], speedup: Sequence[float], flops_ratio: Sequence[float | None]) -> Figure:
    """Measured speed-up over the baseline (wall time, same run) beside the FLOPs saved per denoiser call."""
    fig = Figure(figsize=(6.5, 0.45 * len(labels) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    colours = [_method_colour(lbl) for lbl in labels]
    ax.barh(y - 0.18, speedup, height=0.34, color=colours, label="measured speed-up (wall)")
    fl = [1.0 / f if f else np.nan for f in flops_ratio]
    ax.barh(y + 0.18, fl, height=0.34, color=colours, alpha=0.4, hatch="//", label="FLOPs reduction (1/ratio)")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("× relative to the baseline (> 1 is faster)")
    ax.set_title("Speed-up measured in this run, and FLOPs saved", fontsize=10)
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    ax.grid(axis="x", alpha=0.3)
    return fig


def figure_to_image(fig: Figure, dpi: int = 110) -> Image.Image:
    """Render a figure to a PIL image (PNG-exact pixels), e.g. for saving or for tests."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


# ---- the app's comparison views --------------------------------------------------------------


def strip(images: Sequence[Image.Image], min_side: int = 128, gap: int = 4, cols: int | None = None) -> Image.Image:
    """Several samples in a grid of ``cols`` columns (default: one row), white gaps, each enlarged with
    nearest neighbour: the same seeds in the same places for every method (e.g. for a before/after slider)."""
    if not images:
        raise ValueError("strip: no images")
    tiles = [enlarge(im.convert("RGB"), min_side) for im in images]
    cols = len(tiles) if cols is None else max(1, min(cols, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    out = Image.new("RGB", (cols * w + gap * (cols - 1), rows * h + gap * (rows - 1)), "white")
    for i, t in enumerate(tiles):
        out.paste(t, ((i % cols) * (w + gap), (i // cols) * (h + gap)))
    return out


def difference_figure(rows: Mapping[str, Sequence[Image.Image]], reference: Sequence[Image.Image]) -> Figure:
    """|method − baseline| per pixel (channel mean) for every method (rows) and sample (columns), on
    one shared colour scale with its colour bar (0 = identical)."""
    if not rows:
        raise ValueError("difference_figure: no methods to compare")
    ref = [_rgb(as_array(r)) for r in reference]
    diffs = {
        label: [np.abs(_rgb(as_array(im)) - r).mean(-1) for im, r in zip(images, ref, strict=True)]
        for label, images in rows.items()
    }
    vmax = max(0.05, max(float(d.max()) for ds in diffs.values() for d in ds))
    n, k = len(diffs), len(ref)
    fig = Figure(figsize=(1.3 * k + 1.4, 1.45 * n + 0.8), layout="constrained")
    axes = np.asarray(fig.subplots(n, k, squeeze=False))
    im = None
    for r, (label, ds) in enumerate(diffs.items()):
        for c, d in enumerate(ds):
            ax = axes[r, c]
            im = ax.imshow(d, cmap=DIFF_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:  # the method, over its row (a y-label would be cut at the figure's edge)
                ax.set_title(label, fontsize=9, loc="left", color=_method_colour(label), fontweight="bold")
    fig.suptitle(f"|method − baseline| per pixel, samples 1–{k} left to right", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.9, label="|Δ| vs baseline (0 = identical)")
    return fig


def figure6(tokens: np.ndarray, seen: Mapping[str, np.ndarray], title: str = "",
            edges: np.ndarray | None = None) -> Figure:  # fmt: skip
    """The paper's Figure 6 on pixels: what attention sees after merging at a high ratio on a fine token
    grid, per method, next to the tokens, with each one's error (|seen − tokens|, channel mean) below on
    one colour scale, its mean over all tokens and, given an (h, w) ``edges`` mask, over edge tokens."""
    n = len(seen) + 1
    fig = Figure(figsize=(3.0 * n, 6.0), layout="constrained")
    axes = np.asarray(fig.subplots(2, n)).reshape(2, -1)
    _show(axes[0, 0], tokens, f"tokens ({tokens.shape[0]}×{tokens.shape[1]})")
    axes[1, 0].axis("off")
    errs = {k: np.abs(_rgb(np.clip(v, 0, 1)) - _rgb(tokens)).mean(-1) for k, v in seen.items()}
    vmax = max(0.05, max(float(e.max()) for e in errs.values()))
    im = None
    for i, (label, img) in enumerate(seen.items(), start=1):
        _show(axes[0, i], np.clip(img, 0, 1), label)
        axes[0, i].title.set_color(_method_colour(label))
        im = axes[1, i].imshow(errs[label], cmap=DIFF_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
        axes[1, i].set_xticks([])
        axes[1, i].set_yticks([])
        on_edges = "" if edges is None else f", edges {errs[label][edges].mean():.3f}"
        axes[1, i].set_title(f"error: mean {errs[label].mean():.3f}{on_edges}", fontsize=10)
    fig.colorbar(im, ax=axes[1, 1:], shrink=0.8, label="|seen − tokens|")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


#: bar colours of the methods :func:`figure6_inside` compares (Freq-KV has no family colour elsewhere)
_FREQKV_COLORS = {"high": "#7c3aed", "low": "#c4b5fd"}


def _bar_colour(label: str) -> str:
    if label.lower().startswith("freq-kv"):
        return _FREQKV_COLORS["low" if label.endswith("low") else "high"]
    return _method_colour(label)


def figure6_inside(
    image: np.ndarray,
    energy: np.ndarray,
    edge: np.ndarray,
    merges: Mapping[str, tuple[np.ndarray | None, np.ndarray | None]],
    errors: Mapping[str, np.ndarray],
    bars: Mapping[str, tuple[float, float, float]],
    title: str = "",
) -> Figure:
    """The paper's Figure 6 inside the model (numbers from :mod:`bigain.explain.features`).

    Top: the clean image; the Laplacian energy of the hidden states entering the layer's self-attention
    over it (edge tokens ringed); each merge method's groups (one colour per group, white dots =
    destinations). Bottom: each merge method's per-token error of the attention output (one colour scale),
    and for every method the relative error on edge and on smooth tokens (and of the prediction ε).

    image: (R, R[, 3]) in [0, 1]; energy, edge: (h, w); merges: label → (groups (h·w,), dst); errors:
    label → (h, w); bars: label → (edge error, smooth error, ε error)."""
    img = as_array(image)
    h, w = np.shape(energy)
    names = list(merges)
    top = ["image", "energy", *[f"merge{i}" for i in range(len(names))]]
    bottom = [f"error{i}" for i in range(len(names))] + ["bars"] * (len(top) - len(names))
    fig = Figure(figsize=(3.1 * len(top), 6.6), layout="constrained")
    ax = fig.subplot_mosaic([top, bottom])
    _show(ax["image"], img, "clean image")
    heat = _gate_axes(ax["energy"], img, np.asarray(energy).reshape(-1), h, w, None)
    x, y = _centres(np.flatnonzero(np.asarray(edge).reshape(-1)), img.shape[:2], h, w)
    ax["energy"].scatter(x, y, s=_dot(h, w), facecolors="none", edgecolors="cyan", linewidths=1.0)
    ax["energy"].set_title("hidden-state Laplacian energy\n(ringed: edge tokens, top quarter)", fontsize=9)
    fig.colorbar(heat, ax=ax["energy"], shrink=0.7)
    for i, label in enumerate(names):
        groups, dst = merges[label]
        a = ax[f"merge{i}"]
        if groups is None:
            _show(a, img)
        else:
            _merge_axes(a, img, np.asarray(groups), h, w, dst)
        n_out = "?" if groups is None else len(np.unique(groups))
        a.set_title(f"{label}: merged groups\n{h * w} → {n_out} tokens", fontsize=9, color=_method_colour(label))
    vmax = max([1e-6, *(float(np.max(e)) for e in errors.values())])
    im = None
    for i, label in enumerate(names):
        a = ax[f"error{i}"]
        e = np.asarray(errors[label])
        im = a.imshow(e, cmap=DIFF_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        edge_err, smooth_err = bars[label][:2] if label in bars else (float("nan"), float("nan"))
        a.set_title(
            f"{label}: per-token output error\nrelative: edge {edge_err:.3f}, smooth {smooth_err:.3f}",
            fontsize=9,
            color=_method_colour(label),
        )
    if im is not None:
        fig.colorbar(im, ax=[ax[f"error{i}"] for i in range(len(names))], shrink=0.7, label="‖Δ‖ / mean ‖y‖")
    b = ax["bars"]
    labels = list(bars)
    pos = np.arange(len(labels))
    colours = [_bar_colour(lbl) for lbl in labels]
    b.bar(pos - 0.2, [bars[k][0] for k in labels], 0.4, color=colours, label="edge tokens")
    b.bar(pos + 0.2, [bars[k][1] for k in labels], 0.4, color=colours, alpha=0.45, hatch="//", label="smooth tokens")
    for p, k in zip(pos, labels, strict=True):
        b.annotate(f"ε {bars[k][2]:.3f}", (p, max(bars[k][:2])), ha="center", va="bottom", fontsize=7,
                   xytext=(0, 2), textcoords="offset points")  # fmt: skip
    b.set_xticks(pos, labels, rotation=30, ha="right", fontsize=8)
    b.set_ylabel("relative error of the attention output")
    b.set_title("edge vs smooth tokens (ε: error of the prediction)", fontsize=9)
    b.legend(fontsize=8)
    b.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig

"""The "learn the idea" pictures: image tokens, their frequency split, which tokens ToMe and
L-GTM merge and what KV downsampling keeps (pixels, not model features)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bigain import viz
from bigain.errors import BadInput, whole
from bigain.methods import IEKVD, LGTM, AttnCall, CallInfo, ToDo, ToMe
from bigain.ops import rng
from bigain.ops.kv import avg_pool_tokens, blend_downsample, nearest_exact_index, nearest_exact_tokens
from bigain.ops.laplacian import laplacian_response, laplacian_score
from bigain.ops.merge import grid_cells, match

GRIDS = (4, 8, 16, 32, 64)


# ---- image tokens (the "learn" pictures work on pixels, not model features) ------------------


def image_tokens(image: Image.Image | np.ndarray, grid: int) -> np.ndarray:
    """The image averaged down to a grid×grid array of tokens, (grid, grid[, 3]) in [0, 1].

    Area averaging (PIL's box filter) so every token is the mean colour of the pixels it covers;
    grey images stay one channel."""
    if grid not in GRIDS:
        raise BadInput(f"grid must be one of {GRIDS}, got {grid!r}")
    img = image if isinstance(image, Image.Image) else Image.fromarray(_to_uint8(image))
    mode = "L" if viz.as_array(img).ndim == 2 else "RGB"
    small = img.convert(mode).resize((grid, grid), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return (viz.as_array(a) * 255).round().astype(np.uint8)


def _as_seq(tokens: np.ndarray) -> torch.Tensor:
    """(h, w[, C]) array → (1, h·w, C) tensor."""
    t = torch.as_tensor(tokens, dtype=torch.float32)
    if t.ndim == 2:
        t = t[..., None]
    return t.reshape(1, -1, t.shape[-1])


def _as_grid(seq: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(1, h·w, C) → (h, w) for C = 1 or (h, w, C)."""
    g = seq[0].reshape(h, w, -1).numpy()
    return g[..., 0] if g.shape[-1] == 1 else g


@dataclass
class FrequencyParts:
    """An image as tokens split into low + high frequency (tokens = low + high).

    tokens, low, high: (h, w[, 3]) in [0, 1] (high is centred on 0.5 and contrast-stretched to fill
    [0, 1] for display);
    score: (h, w) per-token Laplacian ℓ1 energy, what L-GTM ranks tokens by."""

    tokens: np.ndarray
    low: np.ndarray
    high: np.ndarray
    score: np.ndarray


def frequency_parts(image: Image.Image | np.ndarray, grid: int = 16) -> FrequencyParts:
    """Split an image into low- and high-frequency parts with the 4-neighbour Laplacian L:
    low = x + L/4 (the average of the four neighbours), high = −L/4, so x = low + high."""
    tokens = image_tokens(image, grid)
    seq = _as_seq(tokens)
    lap = laplacian_response(_replicate(seq, grid), grid + 2, grid + 2)[:, 1:-1, 1:-1]
    lap = lap.reshape(1, grid * grid, -1)
    score = laplacian_score(seq, grid, grid)[0].reshape(grid, grid).numpy()
    return FrequencyParts(
        tokens=tokens,
        low=_as_grid(seq + lap / 4, grid, grid),
        high=_as_grid(0.5 - lap / 4 / (2 * lap.abs().max().clamp(min=1e-6) / 4), grid, grid),
        score=score,
    )


def _replicate(seq: torch.Tensor, grid: int) -> torch.Tensor:
    """Pad a (1, g·g, C) token grid by one token of edge replication → (1, (g+2)², C), so the
    picture's low/high split has no dark frame (the gate itself zero-pads, as in the paper)."""
    g = seq.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    g = F.pad(g, (1, 1, 1, 1), mode="replicate")
    return g.permute(0, 2, 3, 1).reshape(1, (grid + 2) ** 2, -1)


def _metric(tokens: np.ndarray) -> torch.Tensor:
    """Similarity features for merging pixel tokens: each token's 3×3 neighbourhood in [-1, 1]
    (a single grey value has no meaningful cosine similarity). (1, N, 9·C)."""
    t = torch.as_tensor(tokens, dtype=torch.float32)
    t = (t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]) * 2 - 1
    h, w = t.shape[-2:]
    patches = F.unfold(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3)  # (1, 9C, h·w)
    return patches.transpose(1, 2).reshape(1, h * w, -1)


def merge_choice(tokens: np.ndarray, method: ToMe, seed: int = 0) -> dict[str, Any]:
    """Run ``method``'s destination rule and bipartite matching on pixel tokens.

    Returns {"kind": "merge", "groups": (N,), "dst": (Nd,), "scores": (N,) or None, "r": merged}.
    The destinations come from the method itself (:meth:`ToMe.order`): ToMe draws them at random
    from ``seed`` (as in a batched run), L-GTM takes each cell's lowest score of its ``scorer``
    (the Laplacian by default) on the pixels; the matching compares 3×3 neighbourhoods."""
    h, w = tokens.shape[:2]
    seq = _as_seq(tokens)
    # the method's own destination rule (its scorer, its random stream, its cell), on the pixel tokens, as
    # in a classifier-free-guidance batch of two (tomesd draws random destinations only for even batches)
    pair = seq.expand(2, -1, -1)
    info = CallInfo(hw=(h, w), t=None, batch=2, dtype=seq.dtype, final=False, recompute=True,
                    key=rng.new_key(seed), grids={0: (h, w)})  # fmt: skip
    order, scores = method.order(AttnCall(x=pair, metric=pair, h=h, w=w, target=0, info=info))
    order, scores = order[:1], None if scores is None else scores[:1]
    hs, ws = grid_cells(h, w, method.sx, method.sy)
    m = match(_metric(tokens), order, hs * ws, method.ratio)
    return {
        "kind": "merge",
        "method": method.name,
        "groups": m.groups()[0].numpy(),
        "dst": m.dst_idx[0].numpy(),
        "scores": None if scores is None else scores[0].numpy(),
        "r": m.r,
        "seen": _as_grid(m.unmerge(m.merge(seq)), h, w),
    }


def kv_choice(tokens: np.ndarray, method: IEKVD, alpha: float | None = None) -> dict[str, Any]:
    """Keys/values ``method`` would build from pixel tokens: positions nearest-exact keeps and the
    nearest / average / α-blend grids, each (h/s, w/s[, C])."""
    h, w = tokens.shape[:2]
    s = method.factor
    if h < s or w < s:
        raise BadInput(f"factor {s} does not fit a {h}x{w} token grid")
    a = float(method.alpha if alpha is None else alpha)
    seq = _as_seq(tokens)
    rows, cols = nearest_exact_index(h, h // s), nearest_exact_index(w, w // s)
    kept = (rows[:, None] * w + cols[None, :]).reshape(-1).numpy()
    ho, wo = h // s, w // s
    return {
        "kind": "kv",
        "method": method.name,
        "kept": kept,
        "factor": s,
        "alpha": a,
        "nearest": _as_grid(nearest_exact_tokens(seq, h, w, s), ho, wo),
        "average": _as_grid(avg_pool_tokens(seq, h, w, s), ho, wo),
        "grid": _as_grid(blend_downsample(seq, h, w, s, a), ho, wo),
    }


def learn_figures(
    image: Image.Image | np.ndarray,
    grid: int = 16,
    ratio: float = 0.5,
    factor: int = 2,
    alpha: float = 0.9,
    seed: int = 0,
) -> tuple[Any, Any, Any]:
    """The three "learn the idea" figures for one image: frequency split, which tokens each
    method keeps (ToMe and L-GTM at ``ratio``, ToDo and IE-KVD at ``factor``), and the KV picture."""
    grid, factor = whole(grid, "grid"), whole(factor, "factor")
    parts = frequency_parts(image, grid)
    tome, lgtm = ToMe(ratio=ratio), LGTM(ratio=ratio)
    iekvd = IEKVD(factor=factor, alpha=alpha)
    choices = {
        f"ToMe (random dst) r={ratio:g}": merge_choice(parts.tokens, tome, seed),
        f"L-GTM (smooth dst) r={ratio:g}": merge_choice(parts.tokens, lgtm, seed),
        f"ToDo s={factor}": kv_choice(parts.tokens, ToDo(factor=factor)),
        f"IE-KVD s={factor} α={alpha:g}": kv_choice(parts.tokens, iekvd),
    }
    kv = choices[f"IE-KVD s={factor} α={alpha:g}"]
    return (
        viz.frequency_figure(parts.tokens, parts.low, parts.high, parts.score),
        viz.choices_figure(parts.tokens, choices),
        viz.kv_figure(parts.tokens, kv["kept"], kv["nearest"], kv["average"], kv["grid"], factor, alpha),
    )

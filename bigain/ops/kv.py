"""KV downsampling: ToDo (nearest-exact) and IE-KVD (α-blend of nearest and average), §D.

D_α(Z) = α·nearest(Z) + (1 − α)·avg_pool(Z) over s×s cells of the token grid. α = 1 is
ToDo, α = 0 average pooling, 0 < α < 1 interpolates and α > 1 extrapolates
(nearest + (α − 1)·(nearest − avg) amplifies the high-frequency residual).
Only keys/values are downsampled; queries keep full resolution, so nothing is unmerged.

Lean on purpose (a launch-bound GPU pays per op): when s divides the grid, nearest-exact is a
strided view, average pooling is one ``avg_pool2d`` on a channels-last view and the blend is
one ``lerp``: two kernels in all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bigain.ops.merge import constant

T_MAX = 999


def _check(n: int, h: int, w: int, factor: int) -> tuple[int, int]:
    if n != h * w:
        raise ValueError(f"kv downsample: {n} tokens do not form a {h}x{w} grid")
    if factor < 1 or h < factor or w < factor:
        raise ValueError(f"kv downsample: factor {factor} does not fit a {h}x{w} grid")
    return h // factor, w // factor


def nearest_exact_index(size: int, out: int, device: torch.device | None = None) -> torch.Tensor:
    """Source rows of PyTorch's ``nearest-exact``: floor((i + 0.5)·size/out), clamped."""
    i = torch.arange(out, device=device, dtype=torch.float64)
    return ((i + 0.5) * (size / out)).floor().clamp(max=size - 1).long()


def _nearest_grid(x: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """(B, h//s, w//s, C), a strided view when s divides both sides ((s·i + s//2) is nearest-exact)."""
    b, n, c = x.shape
    ho, wo = _check(n, h, w, factor)
    g = x.reshape(b, h, w, c)
    if h == ho * factor and w == wo * factor:
        return g[:, factor // 2 :: factor, factor // 2 :: factor]
    rows = constant(("ne", h, ho, x.device), lambda: nearest_exact_index(h, ho, x.device))
    cols = constant(("ne", w, wo, x.device), lambda: nearest_exact_index(w, wo, x.device))
    return g.index_select(1, rows).index_select(2, cols)


def _avg_grid(x: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """(B, h//s, w//s, C): ``avg_pool2d`` with kernel = stride = h // (h//s), leftovers dropped."""
    b, n, c = x.shape
    ho, wo = _check(n, h, w, factor)
    kernel = (h // ho, w // wo)
    return F.avg_pool2d(x.reshape(b, h, w, c).permute(0, 3, 1, 2), kernel).permute(0, 2, 3, 1)


def nearest_exact_tokens(x: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """(B, h·w, C) → (B, (h//s)·(w//s), C), equal to ``F.interpolate(mode="nearest-exact")``.

    For s = 2 this keeps the bottom-right token (2i+1, 2j+1) of each cell, as ToDo does."""
    return _nearest_grid(x, h, w, factor).reshape(x.shape[0], -1, x.shape[-1])


def avg_pool_tokens(x: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """(B, h·w, C) → (B, (h//s)·(w//s), C), equal to ``F.avg_pool2d`` with kernel = stride = h // (h//s).

    Rows/columns that do not fill a whole cell are dropped (floor-cropped), as in the code."""
    return _avg_grid(x, h, w, factor).reshape(x.shape[0], -1, x.shape[-1])


def blend_downsample(x: torch.Tensor, h: int, w: int, factor: int, alpha: float | torch.Tensor) -> torch.Tensor:
    """D_α: (B, h·w, C) → (B, (h//s)·(w//s), C). ``alpha`` is a float or a tensor of one α per sample
    ((B,) or already (B, 1, 1, 1), in x's dtype: :func:`alpha_weight`)."""
    b, _, c = x.shape
    if isinstance(alpha, (int, float)):
        if alpha == 1:
            return nearest_exact_tokens(x, h, w, factor)
        if alpha == 0:
            return avg_pool_tokens(x, h, w, factor)
    elif alpha.ndim != 4:
        alpha = alpha_weight(alpha, x.dtype)
    out = torch.lerp(_avg_grid(x, h, w, factor), _nearest_grid(x, h, w, factor), alpha)
    return out.reshape(b, -1, c)


def alpha_weight(alpha: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B,) α → the (B, 1, 1, 1) ``lerp`` weight in ``dtype`` (once per denoiser call, not per layer)."""
    return alpha.to(dtype).view(-1, 1, 1, 1)


def alpha_at(t: torch.Tensor | float, alpha: float, alpha_end: float | None) -> torch.Tensor | float:
    """α per sample for timesteps t (B,): constant, or linear from ``alpha`` at t = 999 to ``alpha_end`` at t = 0.

    α(t) = alpha_end + (alpha − alpha_end)·t/999, not clamped (the paper's generation schedule
    is 0.8 → 1.2). Two element-wise ops on the (B,) timesteps; a number t gives a number."""
    if not isinstance(t, torch.Tensor):
        return float(alpha) if alpha_end is None else alpha_end + (alpha - alpha_end) * float(t) / T_MAX
    if alpha_end is None:
        return torch.full(t.shape, float(alpha), device=t.device)
    return torch.mul(t, (alpha - alpha_end) / T_MAX).add_(alpha_end)

"""KV downsampling: ToDo (nearest-exact) and IE-KVD (α-blend of nearest and average), §D.

D_α(Z) = α·nearest(Z) + (1 − α)·avg_pool(Z) over s×s cells of the token grid. α = 1 is
ToDo, α = 0 average pooling, 0 < α < 1 interpolates and α > 1 extrapolates
(nearest + (α − 1)·(nearest − avg) amplifies the high-frequency residual).
Only keys/values are downsampled; queries keep full resolution, so nothing is unmerged.
"""

from __future__ import annotations

import torch

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


def nearest_exact_tokens(x: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """(B, h·w, C) → (B, (h//s)·(w//s), C), equal to ``F.interpolate(mode="nearest-exact")``.

    For s = 2 this keeps the bottom-right token (2i+1, 2j+1) of each cell, as ToDo does.
    """
    b, n, c = x.shape
    ho, wo = _check(n, h, w, factor)
    g = x.view(b, h, w, c)
    g = g.index_select(1, nearest_exact_index(h, ho, x.device))
    g = g.index_select(2, nearest_exact_index(w, wo, x.device))
    return g.reshape(b, ho * wo, c)


def avg_pool_tokens(x: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """(B, h·w, C) → (B, (h//s)·(w//s), C), equal to ``F.avg_pool2d`` with kernel = stride = h // (h//s).

    Rows/columns that do not fill a whole cell are dropped (floor-cropped), as in the code.
    """
    b, n, c = x.shape
    ho, wo = _check(n, h, w, factor)
    kh, kw = h // ho, w // wo
    g = x.view(b, h, w, c)[:, : ho * kh, : wo * kw]
    # two plain reductions in fp32 (kw, then kh): one strided 6-D mean is ~7× slower on CPU
    cells = g.reshape(b, ho, kh, wo, kw, c).sum(4, dtype=torch.float32).sum(2)
    return (cells / (kh * kw)).to(x.dtype).reshape(b, ho * wo, c)


def blend_downsample(x: torch.Tensor, h: int, w: int, factor: int, alpha: float | torch.Tensor) -> torch.Tensor:
    """D_α: (B, h·w, C) → (B, (h//s)·(w//s), C). ``alpha`` is a float or a (B,) tensor (per sample)."""
    if isinstance(alpha, (int, float)):
        if alpha == 1:
            return nearest_exact_tokens(x, h, w, factor)
        if alpha == 0:
            return avg_pool_tokens(x, h, w, factor)
        a = torch.tensor(float(alpha), dtype=x.dtype, device=x.device)
    else:
        a = alpha.to(device=x.device, dtype=x.dtype).view(-1, 1, 1)
    ne, ap = nearest_exact_tokens(x, h, w, factor), avg_pool_tokens(x, h, w, factor)
    return ap + a * (ne - ap)


def alpha_at(t: torch.Tensor, alpha: float, alpha_end: float | None) -> torch.Tensor:
    """α per sample for timesteps t (B,): constant, or linear from ``alpha`` at t = 999 to ``alpha_end`` at t = 0.

    α(t) = alpha·(t/999) + alpha_end·(1 − t/999), not clamped (the paper's generation
    schedule is 0.8 → 1.2).
    """
    t = t.float()
    if alpha_end is None:
        return torch.full_like(t, float(alpha))
    frac = t / T_MAX
    return alpha * frac + alpha_end * (1 - frac)

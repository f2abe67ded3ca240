"""Per-token high-frequency energy: the Laplacian gate of L-GTM (method doc §A.2, step 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bigain.ops.merge import constant

NORMS = ("l1", "l2")
_KERNEL = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def _grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, n, c = x.shape
    if n != h * w:
        raise ValueError(f"laplacian: {n} tokens do not form a {h}x{w} grid")
    # (B, C, h, w) as a view of the channel-last tokens: convolution reads channels_last directly
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


def laplacian_response(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """3×3 four-neighbour Laplacian of every channel on the token grid, zero padded.

    x: (B, N, C) tokens in row-major order of an h×w grid (N = h·w). Returns (B, h, w, C)
    float32: ``up + down + left + right − 4·centre``, as one depthwise convolution on a
    channels-last view (one kernel instead of a pad and five shifted adds, no copies)."""
    g = _grid(x.float(), h, w)
    c = g.shape[1]
    kernel = constant(("laplacian", c, g.device), lambda: torch.tensor(_KERNEL, device=g.device).expand(c, 1, 3, 3))
    return F.conv2d(g, kernel, padding=1, groups=c).permute(0, 2, 3, 1)


def laplacian_score(x: torch.Tensor, h: int, w: int, norm: str = "l1") -> torch.Tensor:
    """Per-token Laplacian energy s[n] = Σ_c |(x * L)[n, c]| (``l1``) or its ℓ2 version.

    x: (B, N, C), any float dtype. Returns (B, N) float32. No division by C:
    only the ranking inside each stride cell matters."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    r = laplacian_response(x, h, w)
    return torch.linalg.vector_norm(r, ord=1 if norm == "l1" else 2, dim=-1).view(x.shape[0], h * w)

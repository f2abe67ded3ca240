"""Per-token high-frequency energy: the Laplacian gate of L-GTM (method doc §A.2, step 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORMS = ("l1", "l2")


def laplacian_response(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """3×3 four-neighbour Laplacian of every channel on the token grid, zero padded.

    x: (B, N, C) tokens in row-major order of an h×w grid (N = h·w).
    Returns (B, h, w, C) in float32: ``up + down + left + right − 4·centre``.
    Works channel-last so no permute/copy of the token tensor is needed.
    """
    b, n, c = x.shape
    if n != h * w:
        raise ValueError(f"laplacian: {n} tokens do not form a {h}x{w} grid")
    g = x.float().view(b, h, w, c)
    p = F.pad(g, (0, 0, 1, 1, 1, 1))  # zero padding on the two spatial axes
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * g


def laplacian_score(x: torch.Tensor, h: int, w: int, norm: str = "l1") -> torch.Tensor:
    """Per-token Laplacian energy s[n] = Σ_c |(x * L)[n, c]| (``l1``) or its ℓ2 version.

    x: (B, N, C), any float dtype. Returns (B, N) float32. No division by C:
    only the ranking inside each stride cell matters.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    r = laplacian_response(x, h, w)
    s = r.abs().sum(-1) if norm == "l1" else r.square().sum(-1).sqrt()
    return s.reshape(x.shape[0], h * w)

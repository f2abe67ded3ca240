"""Frequency-selected KV: one key/value token per s×s cell, chosen by its score (method doc §E, Table 12).

The ablation of IE-KVD's blend: instead of mixing nearest and average, keep the single token of
each cell with the highest (``highest=True``, "high-frequency only") or lowest (``highest=False``,
"low-frequency only") Laplacian score. Queries keep full resolution, as in §D.

Border: the grid is covered by ceil(h/s)·ceil(w/s) cells; a partial cell on the bottom or right
edge (h or w not divisible by s) chooses among the tokens it does contain, so every token takes
part and the output has one token per cell. (ToDo/IE-KVD floor-crop instead, dropping the
leftover rows/columns; a selection has no reason to.) Ties go to the first token in the cell's
row-major order, as in L-GTM's destinations.

Lean: the cell table (each cell's s² token positions, out-of-grid slots repeating an in-grid
token of the same cell, so a partial cell needs no mask or padding value) is a constant per
grid; a call is one gather of the scores, one argmax/argmin, one index and one gather of the
rows: four kernels, no host read, no data-dependent shape.
"""

from __future__ import annotations

import math

import torch

from bigain.ops.merge import _arange, constant


def kv_cells(h: int, w: int, s: int) -> tuple[int, int]:
    """Cells along each axis: (ceil(h/s), ceil(w/s))."""
    return math.ceil(h / s), math.ceil(w / s)


def _table(h: int, w: int, s: int) -> torch.Tensor:
    hc, wc = kv_cells(h, w, s)
    i = torch.arange(hc).view(hc, 1, 1)
    j = torch.arange(wc).view(1, wc, 1)
    q = torch.arange(s * s).view(1, 1, -1)
    # slot q = (a, c) = (q // s, q % s); rows/cols past the grid fall back on the cell's last in-grid
    # row/col, which comes earlier in slot order, so first-on-ties never prefers the duplicate
    row = (i * s + q // s).clamp(max=h - 1)
    col = (j * s + q % s).clamp(max=w - 1)
    return (row * w + col).reshape(hc * wc, s * s)


def kv_cell_table(h: int, w: int, s: int, device: torch.device) -> torch.Tensor:
    """(M, s²) token position of slot q of every cell, M = ceil(h/s)·ceil(w/s), cells row-major;
    slot q of cell (i, j) is (i·s + q // s, j·s + q % s), clamped into the grid."""
    return constant(("kv-cells", h, w, s, device), lambda: _table(h, w, s).to(device))


def _check(x_n: int, score: torch.Tensor, h: int, w: int, s: int) -> None:
    if x_n != h * w or score.shape[-1] != h * w:
        raise ValueError(f"select_kv: {x_n} tokens / {score.shape[-1]} scores do not form a {h}x{w} grid")
    if s < 1:
        raise ValueError(f"select_kv: stride must be ≥ 1, got {s}")


def select_kv_index(score: torch.Tensor, h: int, w: int, s: int, highest: bool = True) -> torch.Tensor:
    """(B, M) position of the selected token of every cell: score (B, N) → argmax (``highest``) or
    argmin of the score over the cell's in-grid tokens, first in row-major order on ties."""
    _check(score.shape[-1], score, h, w, s)
    table = kv_cell_table(h, w, s, score.device)
    per_cell = score[:, table]  # (B, M, s²)
    slot = per_cell.argmax(-1) if highest else per_cell.argmin(-1)
    return table[_arange(table.shape[0], score.device), slot]


def select_kv(x: torch.Tensor, h: int, w: int, s: int, score: torch.Tensor, highest: bool = True) -> torch.Tensor:
    """Keys/values from one token per s×s cell: x (B, N, C), score (B, N) → (B, ceil(h/s)·ceil(w/s), C).

    ``score`` is the per-token Laplacian score (:func:`bigain.ops.laplacian.laplacian_score`, or
    any scorer of :mod:`bigain.ops.scorers`); ``highest`` keeps each cell's highest-scoring token
    (Table 12's "high frequency"), otherwise the lowest. Cells are row-major, so the output is
    again a row-major grid of ceil(h/s)×ceil(w/s) tokens."""
    b, n, c = x.shape
    _check(n, score, h, w, s)
    idx = select_kv_index(score, h, w, s, highest)
    return x.gather(1, idx.unsqueeze(-1).expand(b, idx.shape[1], c))

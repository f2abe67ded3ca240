"""SiTo, similarity-based token pruning (Table 1's pruning baseline), from method doc §J.

Per self-attention call, with metric tokens x (B, N, C) on a row-major h×w grid:

1. u = x / ‖x‖ per token; cos(i, j) = u_i · u_j.
2. SimScore s_i = Σ_j cos(i, j) (how typical token i is); score = β·s + α·ε, ε ~ N(0, 1) per
   token, sample and call.
3. Bases: in every whole sy×sx cell the token with the **highest** score (first in the cell's
   row-major order on ties). Tokens outside whole cells are never bases; all non-bases are
   candidates.
4. v_i = max over bases b of cos(i, b) for every candidate.
5. P = min(floor(N·ratio), #candidates) candidates with the highest v are pruned (ties: lower
   position first); the other N − P tokens (kept candidates and bases) are kept.
6. Attention runs on the kept tokens: :meth:`SiToPlan.prune`.
7. A pruned token's output is a copy of the output of the kept token with the highest cosine
   to it: :meth:`SiToPlan.recover`; kept tokens keep their own outputs.

No N×N matrix: Σ_j u_i·u_j = u_i · (Σ_j u_j), one (N, C)·(C,) product. The two maximisations
(step 4 over N×Nb, step 7 over P×(N − P)) go through :func:`bigain.ops.merge.row_max`, which on
CUDA streams over the second operand (nothing quadratic is stored) and elsewhere is
``bmm`` + ``max``, whose largest block is N·Nb ≤ N²/4 entries for 2×2 cells
(:func:`sito_memory`). Step 4 is evaluated for every token (bases get −inf afterwards): a third
more multiply–adds than candidates only, but no split order (three kernels fewer).

Precision: the SimScore is accumulated in float32 (for a half-precision metric the values reach
~N and float16 would round them by ~N/2¹¹, drowning α·ε); the cosines of steps 4 and 7 are in
the metric's dtype, as in ToMe's matching. Randomness: ε comes from the counter-based generator
of :mod:`bigain.ops.rng` (:func:`gaussian_noise`, Box–Muller on two 24-bit draws), seeded by
writing the key, so eager, compiled and graphed runs draw the same pattern; or pass ``noise``.

Layout of the kept sequence: the kept candidates (most similar to a base first), then the bases
in cell order. Every size is known on the host from N, the grid and the ratio; no op reads a
tensor on the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bigain.ops.merge import (
    RowMax,
    _offsets,
    _row_starts,
    _rows,
    cell_positions,
    constant,
    grid_cells,
    row_max,
    slots_to_index,
)
from bigain.ops.rng import STRIDE, draw

#: Defaults of SiTo's release (method doc §J): prune ratio, noise weight α, similarity weight β.
RATIO = 0.5
ALPHA = 0.1
BETA = 1.0
_TWO_PI_2_24 = 2.0 * math.pi / (1 << 24)
_LOG_2_48 = 48.0 * math.log(2.0)


def prune_count(n: int, ratio: float, n_base: int) -> tuple[int, int]:
    """(requested, effective) number of pruned tokens: floor(N·ratio), capped at N − Nb (the
    candidates); 0 when the grid has no whole cell (no base to compare with)."""
    requested = int(n * ratio)
    return requested, (max(0, min(requested, n - n_base)) if n_base > 0 else 0)


def gaussian_noise(key: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """(B, N) float32 standard normal draws for this call from the counter RNG; advances ``key``.

    Box–Muller on two 24-bit uniforms per value from one :func:`bigain.ops.rng.draw` over
    2·B·N ids: r = sqrt(−2 ln((k₁ + 1)/2²⁴)), θ = 2π·k₂/2²⁴, ε = r·cos θ. The integers are exact
    on every device; the float maths differs by ulps at most."""
    if 2 * b * n >= STRIDE:
        raise ValueError(f"gaussian_noise: 2·{b}·{n} draws exceed the generator's {STRIDE} ids per call")
    ids = constant(("sito-ids", b, n, key.device), lambda: torch.arange(2 * b * n, device=key.device).view(2, b, n))
    k = (draw(key, ids) >> 8).float()  # (2, B, N) integers in [0, 2²⁴), exact in float32
    # −2 ln((k₁ + 1)/2²⁴) = 48 ln 2 − 2 ln(k₁ + 1) ≥ 0; the clamp absorbs float32 rounding at k₁ = 2²⁴ − 1
    radius = torch.rsub(k[0].log1p(), _LOG_2_48, alpha=2.0).clamp_min_(0.0).sqrt_()
    return radius.mul_(k[1].mul(_TWO_PI_2_24).cos_())


def sim_score(u: torch.Tensor) -> torch.Tensor:
    """SimScore s_i = Σ_j u_i·u_j of unit rows u (B, N, C) as u_i·(Σ_j u_j): (B, N), float32 for a
    half-precision u (the float32 copy lives only inside this call), else u's dtype."""
    uf = u if u.dtype in (torch.float32, torch.float64) else u.float()
    return torch.bmm(uf, uf.sum(dim=1, keepdim=True).transpose(1, 2)).view(u.shape[0], u.shape[1])


@dataclass
class SiToPlan:
    """Which tokens attention sees and where every token's output comes from.

    ``order`` (B, N): token positions, the P pruned first, then the N − P kept in the kept layout;
    ``base`` (B, Nb) the base of every whole cell (cells row-major); ``flat`` (B·N,) the row of the
    (B·(N − P), C) kept output that each token copies; ``score`` (B, N) the noisy SimScore of
    step 2 (None when nothing is pruned)."""

    n: int
    n_prune: int
    n_prune_requested: int
    order: torch.Tensor
    base: torch.Tensor
    flat: torch.Tensor
    score: torch.Tensor | None = None

    @property
    def n_keep(self) -> int:
        return self.n - self.n_prune

    @property
    def capped(self) -> bool:
        """True when floor(N·ratio) exceeded the number of candidates."""
        return self.n_prune < self.n_prune_requested

    @property
    def kept(self) -> torch.Tensor:
        """(B, N − P) positions of the kept tokens, in the order :meth:`prune` returns them."""
        return self.order[:, self.n_prune :]

    @property
    def pruned(self) -> torch.Tensor:
        """(B, P) positions of the pruned tokens (most similar to a base first)."""
        return self.order[:, : self.n_prune]

    def prune(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, N − P, C): the kept tokens (one gather)."""
        return _rows(x, self.kept)

    def recover(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N − P, C) → (B, N, C): kept tokens get their own row, pruned ones their source's (one index)."""
        b, k, c = y.shape
        return y.reshape(b * k, c).index_select(0, self.flat).view(b, self.n, c)

    def source(self) -> torch.Tensor:
        """(B, N) position of the token whose output each token receives (itself when kept).
        For tests and pictures; the compressed forward never runs it."""
        b = self.order.shape[0]
        local = self.flat.view(b, self.n) - _row_starts(b, self.n_keep, self.flat.device)
        return self.kept.gather(1, local)


def _identity(b: int, n: int, n_req: int, device: torch.device) -> SiToPlan:
    order = constant(("sito-identity", b, n, device), lambda: torch.arange(n, device=device).expand(b, n))
    flat = _offsets(b, n, n, 0, device).view(-1)
    return SiToPlan(n=n, n_prune=0, n_prune_requested=n_req, order=order, base=order[:, :0], flat=flat)


def sito_plan(
    metric: torch.Tensor,
    h: int,
    w: int,
    ratio: float = RATIO,
    sx: int = 2,
    sy: int = 2,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    noise: torch.Tensor | None = None,
    key: torch.Tensor | None = None,
    best: RowMax = row_max,
) -> SiToPlan:
    """SiTo's pruning plan for metric tokens (B, N, C) on an h×w grid (module docstring, steps 1–7).

    Noise: ``key`` (a (1,) int64 :func:`bigain.ops.rng.new_key`, advanced in place) draws ε with
    :func:`gaussian_noise`; or ``noise`` gives ε directly, (B, N) or (1, N); neither: ε = 0
    (deterministic). P = :func:`prune_count`; when P = 0 the plan is the identity."""
    b, n, _ = metric.shape
    if n != h * w:
        raise ValueError(f"sito: {n} tokens do not form a {h}x{w} grid")
    if noise is not None and key is not None:
        raise ValueError("sito: give noise= or key=, not both")
    dev = metric.device
    hs, ws = grid_cells(h, w, sx, sy)
    p_req, p = prune_count(n, ratio, hs * ws)
    if p == 0:
        return _identity(b, n, p_req, dev)
    u = metric / metric.norm(dim=-1, keepdim=True)
    score = sim_score(u)
    if beta != 1:
        score = score.mul_(beta)
    if key is not None:
        noise = gaussian_noise(key, b, n)
    if noise is not None and alpha != 0:
        score = score.add_(noise, alpha=alpha)
    slots = score[:, cell_positions(h, w, sx, sy, dev)].argmax(-1)  # (B, Nb) highest score per cell
    base = slots_to_index(slots, h, w, sx, sy)
    v = best(u, _rows(u, base))[0].scatter_(1, base, float("-inf"))  # (B, N), bases never pruned
    order = v.sort(dim=1, descending=True, stable=True)[1]  # pruned first, then kept candidates, then bases
    ordered = _rows(u, order)
    nearest = best(ordered[:, :p], ordered[:, p:])[1]  # (B, P) most similar kept token, in the kept layout
    k = n - p
    slot = torch.cat([nearest + _row_starts(b, k, dev), _offsets(b, k, k, 0, dev)], dim=1)
    flat = torch.empty(b, n, dtype=torch.long, device=dev).scatter_(1, order, slot).view(-1)
    return SiToPlan(n=n, n_prune=p, n_prune_requested=p_req, order=order, base=base, flat=flat, score=score)


def sito_memory(
    b: int, n: int, c: int, h: int, w: int, ratio: float = RATIO, sx: int = 2, sy: int = 2, itemsize: int = 2
) -> dict[str, int]:
    """Bytes of the largest intermediate of one plan, against the N×N cosine matrix of SiTo's release.

    * ``nxn``: B·N²·itemsize, the (B, N, N) cosine matrix built to sum rows.
    * ``torch``: this plan with ``row_max`` as ``bmm`` + ``max`` (CPU, compiled, no Triton): the
      (B, N, Nb) similarity of step 4 or the (B, P, N − P) one of step 7, whichever is larger,
      or a (B, N, C) row tensor (float32 for the SimScore) if that is larger still.
    * ``fused``: with the streaming Triton ``row_max``: only (B, N, C) rows (the float32 copy for
      the SimScore when the metric is half precision, else the gathered unit rows) and (B, N) vectors.

    SD level 1 (B = 1, N = 4096, 64×64, C = 320, fp16, 2×2, ratio 0.5 or 0.7): nxn 32 MiB, torch
    8 MiB, fused 5 MiB (all ×B). Where C > N/2 (DiT-XL/2-512: N = 1024, C = 1152) the (N, C) rows,
    4.5 MiB a sample, outweigh the 2 MiB N×N matrix: the saving is a high-resolution one."""
    nb = (h // sy) * (w // sx)
    p = prune_count(n, ratio, nb)[1]
    rows = b * n * c * max(itemsize, 4)
    sim = b * max(n * nb, p * (n - p)) * itemsize
    return {"nxn": b * n * n * itemsize, "torch": max(sim, rows), "fused": rows}

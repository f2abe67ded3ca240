"""Bipartite soft matching with pluggable destinations: ToMe and L-GTM (method doc §A, §B).

Tokens are the row-major flattening of an h×w grid. The grid is cut into sy×sx cells; one
token per cell is a destination ("dst"), every other token is a source ("src"). Each source
is matched to its most similar destination (cosine) and the r most similar sources are
averaged into their destinations. Only how the destination is chosen differs between ToMe
(random or top-left cell) and L-GTM (the cell's lowest Laplacian score).

Compared with tomesd the result is the same, but merge/unmerge are single index ops driven
by one precomputed ``inverse`` map (each token → the merged slot it lives in) instead of a
chain of gathers, a ``scatter_reduce`` and three scatters into a zero tensor.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

DST_MODES = ("random", "top-left", "laplacian", "laplacian-code")


def grid_cells(h: int, w: int, sx: int, sy: int) -> tuple[int, int]:
    """Number of whole sy×sx cells along each axis: (h // sy, w // sx)."""
    return h // sy, w // sx


def merge_count(n: int, ratio: float, n_dst: int) -> tuple[int, int]:
    """(requested, effective) number of merged tokens: r = floor(N·ratio), capped at N − Nd."""
    requested = int(n * ratio)
    return requested, max(0, min(requested, n - n_dst))


def destination_slots(
    h: int,
    w: int,
    sx: int,
    sy: int,
    mode: str,
    *,
    scores: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Choose one destination per whole sy×sx cell.

    Returns slots of shape (B', h//sy, w//sx) with values in [0, sy·sx); slot ``q`` of cell
    (i, j) is the token at row ``i·sy + q // sx``, column ``j·sx + q % sx``.
    B' = 1 (one pattern for the whole batch) for ``random`` / ``top-left`` and B for the
    score-driven modes, which need ``scores`` of shape (B, h·w).

    * ``random``: one uniform slot per cell drawn from ``generator`` exactly as tomesd does,
      so a generator in the same state gives tomesd's pattern.
    * ``top-left``: slot 0 everywhere (tomesd's ``use_rand=False`` and odd batches).
    * ``laplacian``: the cell's lowest score, first index on ties (the paper).
    * ``laplacian-code``: the released code's layout quirk (method doc §A.2, §I.1): the
      scores compared for cell (i, j) are ``sy·sx`` consecutive row-major entries of the
      cropped ``sy``-row strip ``i``, and the winning slot is placed in cell (i, j).
    """
    hs, ws = grid_cells(h, w, sx, sy)
    k = sx * sy
    if mode == "random":
        dev = generator.device if generator is not None else device
        slots = torch.randint(k, size=(hs, ws, 1), device=dev, generator=generator)
        return slots.to(device if device is not None else slots.device).view(1, hs, ws)
    if mode == "top-left":
        return torch.zeros(1, hs, ws, dtype=torch.long, device=device)
    if mode not in DST_MODES:
        raise ValueError(f"dst mode must be one of {DST_MODES}, got {mode!r}")
    if scores is None:
        raise ValueError(f"dst mode {mode!r} needs per-token scores")
    b = scores.shape[0]
    cropped = scores.view(b, h, w)[:, : hs * sy, : ws * sx]
    if mode == "laplacian":
        cells = cropped.reshape(b, hs, sy, ws, sx).permute(0, 1, 3, 2, 4).reshape(b, hs, ws, k)
    else:  # two plain views, no permute: the released code's grouping
        cells = cropped.contiguous().view(b, hs, ws, k)
    return cells.argmin(-1)


def slots_to_index(slots: torch.Tensor, h: int, w: int, sx: int, sy: int) -> torch.Tensor:
    """Token positions (B', Nd) of the destinations given by ``slots`` (B', hs, ws)."""
    b, hs, ws = slots.shape
    corner, offset = _cell_geometry(hs, ws, sx, sy, w, slots.device)
    return (corner + offset[slots]).reshape(b, hs * ws)


# Small index constants, cached per shape and device: on a GPU each fresh ``arange`` is a kernel
# launch, and at these sizes launches, not arithmetic, are what merging costs.
@functools.lru_cache(maxsize=64)
def _arange(start: int, end: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, end, device=device)


@functools.lru_cache(maxsize=8)
def _ones(device: torch.device) -> torch.Tensor:
    return torch.ones(1, 1, device=device)


@functools.lru_cache(maxsize=64)
def _cell_geometry(
    hs: int, ws: int, sx: int, sy: int, w: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, hs, ws) position of each cell's top-left token, and (sx·sy,) offset of each slot from it."""
    corner = torch.arange(hs, device=device).view(hs, 1) * (sy * w) + torch.arange(ws, device=device) * sx
    q = torch.arange(sx * sy, device=device)
    return corner.view(1, hs, ws), torch.div(q, sx, rounding_mode="floor") * w + q % sx


def _flat(idx: torch.Tensor, stride: int, batch: int | None = None) -> torch.Tensor:
    """Per-sample indices (B', K) into rows of a (B·stride, C) view; a shared (1, K) pattern repeats ``batch`` times."""
    b = batch if batch is not None else idx.shape[0]
    offs = _arange(0, b * stride, idx.device)[::stride].unsqueeze(1)
    return (idx + offs).reshape(-1)


def _rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, idx[b]] for x (B, N, C) and idx (B, K) or (1, K) → contiguous (B, K, C).

    One ``index_select`` over the (B·N, C) rows: a plain row copy, cheaper than ``gather``
    with an index expanded over C.
    """
    b, n, c = x.shape
    return x.reshape(b * n, c).index_select(0, _flat(idx, n, b)).view(b, idx.shape[1], c)


def _complement(dst_idx: torch.Tensor, n: int) -> torch.Tensor:
    """Ascending positions (B', N − Nd) of the tokens that are not destinations.

    A stable sort of the destination mask puts the sources first, in order (tomesd's way):
    three kernels and no ``nonzero``, whose data-dependent size would stall a CUDA stream."""
    b, nd = dst_idx.shape
    mask = torch.zeros(b, n, dtype=torch.int8, device=dst_idx.device).scatter_(1, dst_idx, 1)
    return mask.argsort(dim=1, stable=True)[:, : n - nd]


@dataclass
class Merge:
    """A merge of N tokens into N − r, and its inverse.

    Merged sequence layout (as in tomesd): the N − Nd − r unmerged sources, then the Nd
    destinations. All index tensors hold token positions in the original grid.

    dst_idx (B, Nd), src_idx (B, N−Nd): the split. merged_src (B, r): sources that were
    merged; merged_dst (B, r): the destination each went into. inverse (B, N): slot of
    each token in the merged sequence. r_requested is floor(N·ratio) before the cap.
    """

    n: int
    r: int
    r_requested: int
    dst_idx: torch.Tensor
    src_idx: torch.Tensor
    merged_src: torch.Tensor
    merged_dst: torch.Tensor
    inverse: torch.Tensor
    inv_count: torch.Tensor  # (B, N − r): 1 / number of tokens averaged into each slot

    @property
    def capped(self) -> bool:
        """True when floor(N·ratio) exceeded N − Nd and fewer tokens were merged."""
        return self.r < self.r_requested

    @property
    def n_out(self) -> int:
        return self.n - self.r

    @functools.cached_property
    def _flat_inverse(self) -> torch.Tensor:
        """inverse as rows of the (B·(N − r), C) merged tensor; shared by merge and unmerge."""
        return _flat(self.inverse, self.n_out)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, N − r, C): unweighted mean of each destination and its sources."""
        b, n, c = x.shape
        out = x.new_zeros(b * self.n_out, c).index_add_(0, self._flat_inverse, x.reshape(b * n, c))
        return out.mul_(self.inv_count.reshape(-1, 1).to(x.dtype)).view(b, self.n_out, c)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N − r, C) → (B, N, C): every token takes the value of the slot it was merged into."""
        b, m, c = y.shape
        return y.reshape(b * m, c).index_select(0, self._flat_inverse).view(b, self.n, c)

    def groups(self) -> torch.Tensor:
        """(B, N): for every token, the grid position of the token it was merged into (itself if kept)."""
        g = torch.arange(self.n, device=self.inverse.device).expand(self.inverse.shape[0], -1).clone()
        return g.scatter_(1, self.merged_src, self.merged_dst)


def bipartite_merge(metric: torch.Tensor, dst_idx: torch.Tensor, ratio: float) -> Merge:
    """ToMe's bipartite soft matching with the destinations given.

    metric: (B, N, C) tokens used for similarity. dst_idx: (B, Nd) or (1, Nd) destination
    positions (one pattern shared by the batch). Returns a :class:`Merge` that removes
    r = min(floor(N·ratio), N − Nd) tokens.

    The arithmetic is tomesd's (cosine = x / ‖x‖ per row, one src×dst product, a descending
    argsort), so the similarities and the chosen pairs are the same; what is saved is memory
    traffic and kernel launches: one gather puts the rows in src|dst order, the slot map
    ``inverse`` comes from one scatter, and merge/unmerge are one index op each. The
    similarity product (N − Nd)·Nd·C is the irreducible cost.
    """
    b, n, _ = metric.shape
    dev = metric.device
    dst_idx = dst_idx.to(dev)
    nd = dst_idx.shape[1]
    ns = n - nd
    src_idx = _complement(dst_idx, n)
    r_req, r = merge_count(n, ratio, nd)
    u = ns - r

    split = torch.cat([src_idx, dst_idx], dim=1)  # (B', N): sources, then destinations (tomesd's order)
    m = _rows(metric / metric.norm(dim=-1, keepdim=True), split)  # (B, N, C) unit rows in that order
    node_max, node_idx = row_max(m[:, :ns], m[:, ns:])
    order = node_max.argsort(dim=-1, descending=True)
    merged_k, kept_k = order[:, :r], order[:, r:]

    slot = (node_idx + u).scatter_(1, kept_k, _arange(0, u, dev).expand(b, u))  # (B, Ns) merged slot of each source
    slot = torch.cat([slot, _arange(u, u + nd, dev).expand(b, nd)], dim=1)  # destinations keep the last Nd slots
    split = split.expand(b, n)
    inverse = torch.empty(b, n, dtype=torch.long, device=dev).scatter_(1, split, slot)
    counts = torch.zeros(b, n - r, device=dev).scatter_add_(1, inverse, _ones(dev).expand(b, n))
    return Merge(
        n=n,
        r=r,
        r_requested=r_req,
        dst_idx=split[:, ns:],
        src_idx=split[:, :ns],
        merged_src=split.gather(1, merged_k),
        merged_dst=split[:, ns:].gather(1, node_idx.gather(1, merged_k)),
        inverse=inverse,
        inv_count=counts.reciprocal_(),
    )


def row_max(a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row of a (B, Ns, C): the largest dot product with a row of d (B, Nd, C) and its index
    (first on ties). The Triton path streams over d and never materialises the (B, Ns, Nd) matrix."""
    from bigain.ops import triton as fused  # lazy: the dispatcher never imports triton for CPU tensors

    return fused.row_max(a, d)  # torch.bmm + max unless the fused CUDA path applies

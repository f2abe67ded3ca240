"""Bipartite soft matching with pluggable destinations: ToMe and L-GTM (method doc §A, §B).

Tokens are the row-major flattening of an h×w grid. The grid is cut into sy×sx cells; one
token per cell is a destination ("dst"), every other token is a source ("src"). Each source
is matched to its most similar destination (cosine) and the r most similar sources are
averaged into their destinations. Only how the destination is chosen differs between ToMe
(random or top-left cell) and L-GTM (the cell's lowest Laplacian score).

Written for a launch-bound GPU: every op counts, so index tensors that depend only on the
grid are built once per grid (:func:`cell_positions`), the split is one stable sort, the
slot map ``inverse`` (each token → its merged slot, already offset per sample) comes from
one scatter, and merge/unmerge are one ``index_add_`` / ``index_select`` over flat rows. No
op has a data-dependent shape and nothing reads a tensor on the host, so a merge compiles
into one graph and can be captured in a CUDA graph. The result is tomesd's (same cosine,
same pairs); what only pictures need (:meth:`Merge.groups`) is computed only when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

DST_MODES = ("random", "top-left", "laplacian", "laplacian-code")

# Small constants per (shape, device). A plain dict, not lru_cache, so torch.compile traces
# the lookup instead of breaking the graph; on a GPU each fresh ``arange`` is a kernel launch.
_CONSTANTS: dict[tuple, torch.Tensor] = {}


def constant(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The tensor cached under ``key`` (which must name its device), built by ``make`` once."""
    value = _CONSTANTS.get(key)
    if value is None:
        value = _CONSTANTS[key] = make()
    return value


def grid_cells(h: int, w: int, sx: int, sy: int) -> tuple[int, int]:
    """Number of whole sy×sx cells along each axis: (h // sy, w // sx)."""
    return h // sy, w // sx


def merge_count(n: int, ratio: float, n_dst: int) -> tuple[int, int]:
    """(requested, effective) number of merged tokens: r = floor(N·ratio), capped at N − Nd."""
    requested = int(n * ratio)
    return requested, max(0, min(requested, n - n_dst))


def _positions(h: int, w: int, sx: int, sy: int, code: bool) -> torch.Tensor:
    hs, ws = grid_cells(h, w, sx, sy)
    i = torch.arange(hs).view(hs, 1, 1)
    j = torch.arange(ws).view(1, ws, 1)
    q = torch.arange(sx * sy).view(1, 1, -1)
    if code:  # the released code's grouping: sy·sx consecutive row-major entries of strip i
        f = j * (sx * sy) + q
        row, col = i * sy + f // (ws * sx), f % (ws * sx)
    else:
        row, col = i * sy + q // sx, j * sx + q % sx
    return (row * w + col).reshape(hs * ws, sx * sy)


def cell_positions(h: int, w: int, sx: int, sy: int, device: torch.device, code: bool = False) -> torch.Tensor:
    """(Nd, sy·sx) token position of slot q of every whole cell (row-major cells): slot q of cell
    (i, j) is row ``i·sy + q // sx``, column ``j·sx + q % sx``. ``code=True``: the positions whose
    scores the released code compares for that cell (method doc §A.2, §I.1)."""
    return constant(("cells", h, w, sx, sy, code, device), lambda: _positions(h, w, sx, sy, code).to(device))


def _arange(n: int, device: torch.device) -> torch.Tensor:
    return constant(("arange", n, device), lambda: torch.arange(n, device=device))


def slots_to_index(slots: torch.Tensor, h: int, w: int, sx: int, sy: int) -> torch.Tensor:
    """Token positions (B', Nd) of the destinations given by ``slots`` (B', hs, ws) or (B', Nd)."""
    pos = cell_positions(h, w, sx, sy, slots.device)
    b = slots.shape[0]
    return pos[_arange(pos.shape[0], slots.device), slots.reshape(b, -1)]


def destination_slots(
    h: int,
    w: int,
    sx: int,
    sy: int,
    mode: str,
    *,
    scores: torch.Tensor | None = None,
    rand: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Choose one destination per whole sy×sx cell.

    Returns slots of shape (B', h//sy, w//sx) with values in [0, sy·sx). B' = 1 (one pattern for
    the batch) for ``random`` / ``top-left`` and B for the score-driven modes, which need
    ``scores`` of shape (B, h·w).

    * ``random``: ``rand`` (1, Nd) integer draws (:func:`bigain.ops.rng.draw`), reduced mod sy·sx.
    * ``top-left``: slot 0 everywhere (tomesd's ``use_rand=False`` and odd batches).
    * ``laplacian``: the cell's lowest score, first index on ties (the paper).
    * ``laplacian-code``: the released code's layout quirk: the scores compared for cell (i, j)
      are ``sy·sx`` consecutive row-major entries of the cropped ``sy``-row strip ``i``.
    """
    hs, ws = grid_cells(h, w, sx, sy)
    if mode == "random":
        if rand is None:
            raise ValueError("dst mode 'random' needs integer draws (rand=)")
        return (rand % (sx * sy)).view(1, hs, ws)
    if mode == "top-left":
        return torch.zeros(1, hs, ws, dtype=torch.long, device=device)
    if mode not in DST_MODES:
        raise ValueError(f"dst mode must be one of {DST_MODES}, got {mode!r}")
    if scores is None:
        raise ValueError(f"dst mode {mode!r} needs per-token scores")
    return score_slots(scores, h, w, sx, sy, mode == "laplacian-code").view(-1, hs, ws)


def score_slots(scores: torch.Tensor, h: int, w: int, sx: int, sy: int, code: bool = False) -> torch.Tensor:
    """(B, Nd) slot of the lowest score of every cell (first on ties): one gather, one argmin."""
    return scores[:, cell_positions(h, w, sx, sy, scores.device, code)].argmin(-1)


def split_order(dst_idx: torch.Tensor, n: int) -> torch.Tensor:
    """(B', N) permutation: the sources in ascending position, then the destinations in ascending position.

    A stable sort of the destination mask (tomesd's way): no ``nonzero``, whose data-dependent
    size would stall a CUDA stream and break a compiled graph."""
    mask = torch.zeros(dst_idx.shape[0], n, dtype=torch.int8, device=dst_idx.device).scatter_(1, dst_idx, 1)
    return mask.sort(dim=1, stable=True)[1]


def _offsets(b: int, step: int, width: int, start: int, device: torch.device) -> torch.Tensor:
    """(B, width) constant ``start + j + b·step``: slot numbers already offset into flat rows."""
    key = ("offsets", b, step, width, start, device)
    return constant(key, lambda: torch.arange(start, start + width, device=device) + _row_starts(b, step, device))


def _row_starts(b: int, step: int, device: torch.device) -> torch.Tensor:
    return constant(("rows", b, step, device), lambda: (torch.arange(b, device=device) * step).view(b, 1))


@dataclass
class Merge:
    """A merge of N tokens into N − r, and its inverse.

    Merged sequence layout (as in tomesd): the N − Nd − r unmerged sources, then the Nd
    destinations. ``order`` (B', N) lists token positions sources-first (B' = 1 when the
    batch shares one pattern); ``kept`` (B, N − Nd − r) indexes the unmerged sources in it.
    ``flat`` (B·N,) is the slot of every token as a row of the (B·(N − r), C) merged tensor;
    ``count`` (B·(N − r), 1) how many tokens each slot averages.
    """

    n: int
    r: int
    r_requested: int
    order: torch.Tensor
    kept: torch.Tensor
    flat: torch.Tensor
    count: torch.Tensor

    @property
    def capped(self) -> bool:
        """True when floor(N·ratio) exceeded N − Nd and fewer tokens were merged."""
        return self.r < self.r_requested

    @property
    def n_out(self) -> int:
        return self.n - self.r

    @property
    def n_dst(self) -> int:
        return self.n_out - self.kept.shape[1]

    @property
    def dst_idx(self) -> torch.Tensor:
        """(B', Nd) destination positions, ascending."""
        return self.order[:, self.n - self.n_dst :]

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, N − r, C): unweighted mean of each destination and its sources."""
        b, n, c = x.shape
        out = x.new_zeros(b * self.n_out, c).index_add_(0, self.flat, x.reshape(b * n, c))
        return out.div_(self.count).view(b, self.n_out, c)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N − r, C) → (B, N, C): every token takes the value of the slot it was merged into."""
        b, m, c = y.shape
        return y.reshape(b * m, c).index_select(0, self.flat).view(b, self.n, c)

    def groups(self) -> torch.Tensor:
        """(B, N): for every token, the grid position of the token it was merged into (itself if kept).
        For pictures only: a few extra gathers that the compressed forward never runs."""
        b = self.kept.shape[0]
        order = self.order.expand(b, self.n)
        slot_owner = torch.cat([order.gather(1, self.kept), self.dst_idx.expand(b, -1)], dim=1)
        local = self.flat.view(b, self.n) - _row_starts(b, self.n_out, self.flat.device)
        return slot_owner.gather(1, local)


def _rows(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x[b, order[b]] (B, N, C); a shared (1, N) pattern is one ``index_select``, a per-sample one a gather."""
    if order.shape[0] == 1:
        return x.index_select(1, order[0])
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def bipartite_merge(metric: torch.Tensor, dst_idx: torch.Tensor, ratio: float) -> Merge:
    """ToMe's bipartite soft matching with the destinations given (positions (B', Nd)).

    metric: (B, N, C) tokens used for similarity. Returns a :class:`Merge` that removes
    r = min(floor(N·ratio), N − Nd) tokens."""
    return match(metric, split_order(dst_idx.to(metric.device), metric.shape[1]), dst_idx.shape[1], ratio)


RowMax = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def match(metric: torch.Tensor, order: torch.Tensor, nd: int, ratio: float, best: RowMax | None = None) -> Merge:
    """Bipartite soft matching given the split ``order`` (B', N) (:func:`split_order`, Nd destinations last).

    The arithmetic is tomesd's (cosine = x / ‖x‖ per row, one src×dst product, the r sources
    with the highest best-similarity are merged), so the chosen pairs are the same; the
    similarity product (N − Nd)·Nd·C is the irreducible cost. ``best``: the best-destination search
    (default the torch :func:`row_max`; the methods pass the fused dispatcher's)."""
    best = best or row_max

    b, n, _ = metric.shape
    dev = metric.device
    ns = n - nd
    r_req, r = merge_count(n, ratio, nd)
    u, m = ns - r, n - r
    unit = _rows(metric / metric.norm(dim=-1, keepdim=True), order)  # (B, N, C) unit rows, sources first
    node_max, node_idx = best(unit[:, :ns], unit[:, ns:])
    kept = node_max.topk(u, dim=-1, largest=False)[1]  # the u least similar sources stay
    # flat slot of every source: its destination's (u + j), or its rank among the kept
    slot = (node_idx + _offsets(b, m, 1, u, dev)).scatter_(1, kept, _offsets(b, m, u, 0, dev))
    slot = torch.cat([slot, _offsets(b, m, nd, u, dev)], dim=1)
    flat = torch.empty(b, n, dtype=torch.long, device=dev).scatter_(1, order.expand(b, n), slot).view(-1)
    count = torch.zeros(b * m, 1, dtype=metric.dtype, device=dev).index_add_(0, flat, _ones(b * n, metric))
    return Merge(n=n, r=r, r_requested=r_req, order=order, kept=kept, flat=flat, count=count)


def _ones(k: int, like: torch.Tensor) -> torch.Tensor:
    return constant(
        ("ones", k, like.dtype, like.device), lambda: torch.ones(k, 1, dtype=like.dtype, device=like.device)
    )


def row_max(a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row of a (B, Ns, C): the largest dot product with a row of d (B, Nd, C) and its index
    (first on ties): ``bmm`` + ``max``, values in a's dtype. :func:`bigain.ops.fused.row_max` streams over d
    on CUDA instead and never materialises the (B, Ns, Nd) matrix."""
    return tuple(torch.bmm(a, d.transpose(1, 2)).max(dim=-1))  # type: ignore[return-value]

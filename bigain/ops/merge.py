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
    dev = slots.device
    rows = torch.arange(hs, device=dev).view(1, hs, 1) * sy + torch.div(slots, sx, rounding_mode="floor")
    cols = torch.arange(ws, device=dev).view(1, 1, ws) * sx + slots % sx
    return (rows * w + cols).reshape(b, hs * ws)


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, idx[b]] for x (B, N, C) and idx (B, K) or (1, K) → (B, K, C)."""
    if idx.shape[0] == 1:
        return x.index_select(1, idx[0])
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _flat(idx: torch.Tensor, stride: int) -> torch.Tensor:
    """Per-sample indices (B, K) into rows of a (B·stride, C) view."""
    offs = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1) * stride
    return (idx + offs).reshape(-1)


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

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, N − r, C): unweighted mean of each destination and its sources."""
        b, n, c = x.shape
        out = x.new_zeros(b * self.n_out, c)
        out.index_add_(0, _flat(self.inverse, self.n_out), x.reshape(b * n, c))
        return (out * self.inv_count.reshape(-1, 1).to(x.dtype)).view(b, self.n_out, c)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N − r, C) → (B, N, C): every token takes the value of the slot it was merged into."""
        b, m, c = y.shape
        return y.reshape(b * m, c).index_select(0, _flat(self.inverse, m)).view(b, self.n, c)

    def groups(self) -> torch.Tensor:
        """(B, N): for every token, the grid position of the token it was merged into (itself if kept)."""
        g = torch.arange(self.n, device=self.inverse.device).expand(self.inverse.shape[0], -1).clone()
        return g.scatter_(1, self.merged_src, self.merged_dst)


def bipartite_merge(metric: torch.Tensor, dst_idx: torch.Tensor, ratio: float) -> Merge:
    """ToMe's bipartite soft matching with the destinations given.

    metric: (B, N, C) tokens used for similarity. dst_idx: (B, Nd) or (1, Nd) destination
    positions (one pattern shared by the batch). Returns a :class:`Merge` that removes
    r = min(floor(N·ratio), N − Nd) tokens.
    """
    b, n, _ = metric.shape
    dev = metric.device
    dst_idx = dst_idx.to(dev)
    nd = dst_idx.shape[1]
    keep = torch.ones(dst_idx.shape[0], n, dtype=torch.bool, device=dev)
    keep.scatter_(1, dst_idx, False)
    src_idx = torch.arange(n, device=dev).expand(dst_idx.shape[0], n)[keep].view(-1, n - nd)
    r_req, r = merge_count(n, ratio, nd)

    m = metric / metric.norm(dim=-1, keepdim=True)
    sim = _take(m, src_idx) @ _take(m, dst_idx).transpose(-1, -2)  # (B, N−Nd, Nd)
    node_max, node_idx = sim.max(dim=-1)
    order = node_max.argsort(dim=-1, descending=True)
    merged_k, kept_k = order[:, :r], order[:, r:]
    dst_b, src_b = dst_idx.expand(b, nd), src_idx.expand(b, n - nd)
    merged_src = src_b.gather(1, merged_k)
    target_slot = node_idx.gather(1, merged_k)  # which destination (0..Nd−1)
    u = n - nd - r

    inverse = torch.empty(b, n, dtype=torch.long, device=dev)
    inverse.scatter_(1, src_b.gather(1, kept_k), torch.arange(u, device=dev).expand(b, u))
    inverse.scatter_(1, dst_b, torch.arange(u, u + nd, device=dev).expand(b, nd))
    inverse.scatter_(1, merged_src, target_slot + u)
    counts = torch.zeros(b, n - r, device=dev).scatter_add_(1, inverse, torch.ones(b, n, device=dev))
    return Merge(
        n=n,
        r=r,
        r_requested=r_req,
        dst_idx=dst_b,
        src_idx=src_b,
        merged_src=merged_src,
        merged_dst=dst_b.gather(1, target_slot),
        inverse=inverse,
        inv_count=counts.reciprocal(),
    )

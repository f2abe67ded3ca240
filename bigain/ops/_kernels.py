"""Triton kernels of the CUDA path. Import only through :mod:`bigain.ops.fused` (lazily).

No autotuning (the autotuner asks for a driver when it is built, which fails on machines
without a GPU); block sizes are fixed powers of two chosen from the shapes. Under
``TRITON_INTERPRET=1`` (set before this module is imported) the kernels also run on CPU
tensors, which is how the tests check them against the torch operators.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from bigain.ops.kv import _check, nearest_exact_index


@triton.jit
def _laplacian_argmin_kernel(
    x_ptr,
    scores_ptr,
    slots_ptr,
    h,
    w,
    C,
    hs,
    ws,
    stride_b,
    stride_n,
    stride_c,
    SX: tl.constexpr,
    SY: tl.constexpr,
    K2: tl.constexpr,
    BLOCK_CELLS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    CODE: tl.constexpr,
    L2: tl.constexpr,
):
    """One program = one strip of SY rows × BLOCK_CELLS cells of one sample.

    Tile (cell, slot, channel): the 3×3 four-neighbour Laplacian of every channel, |·| (or ²)
    summed over channel blocks → per-token score; argmin over the cell's slots → slot index.
    Cells past the whole-cell grid only compute scores (tokens outside whole cells)."""
    pid = tl.program_id(0)
    n_strips = tl.cdiv(h, SY)
    b = pid // n_strips
    i = pid % n_strips
    cells = tl.program_id(1) * BLOCK_CELLS + tl.arange(0, BLOCK_CELLS)
    jj = cells[:, None]  # (CELLS, 1)
    q = tl.arange(0, K2)[None, :]  # (1, K2)
    K: tl.constexpr = SX * SY
    row = i * SY + q // SX
    col = jj * SX + q % SX
    whole = (i < hs) & (jj < ws)
    if CODE:  # the released code's grouping: K consecutive row-major entries of the cropped strip
        f = jj * K + q
        wc = ws * SX
        row = tl.where(whole, i * SY + f // wc, row)
        col = tl.where(whole, f % wc, col)
    valid = (q < K) & (row < h) & (col < w)
    tok = row * w + col
    base = x_ptr + b * stride_b
    acc = tl.zeros((BLOCK_CELLS, K2), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)[None, None, :]
        cm = cc < C
        m3 = valid[:, :, None] & cm
        p = base + tok[:, :, None] * stride_n + cc * stride_c
        centre = tl.load(p, mask=m3, other=0.0).to(tl.float32)
        up = tl.load(p - w * stride_n, mask=m3 & (row[:, :, None] > 0), other=0.0).to(tl.float32)
        down = tl.load(p + w * stride_n, mask=m3 & (row[:, :, None] < h - 1), other=0.0).to(tl.float32)
        left = tl.load(p - stride_n, mask=m3 & (col[:, :, None] > 0), other=0.0).to(tl.float32)
        right = tl.load(p + stride_n, mask=m3 & (col[:, :, None] < w - 1), other=0.0).to(tl.float32)
        resp = up + down + left + right - 4.0 * centre  # the torch reference's order of additions
        if L2:
            acc += tl.sum(resp * resp, axis=2)
        else:
            acc += tl.sum(tl.abs(resp), axis=2)
    if L2:
        acc = tl.sqrt(acc)
    tl.store(scores_ptr + b * h * w + tok, acc, mask=valid)
    slot = tl.argmin(tl.where(valid, acc, float("inf")), axis=1)  # first index on ties, like torch
    ok = (cells < ws) & (cells * 0 + i < hs)
    tl.store(slots_ptr + (b * hs + i) * ws + cells, slot.to(tl.int64), mask=ok)


def _pow2(n: int, lo: int = 1, hi: int = 1 << 20) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


def laplacian_slots(
    x: torch.Tensor, h: int, w: int, sx: int, sy: int, *, code: bool = False, l2: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``laplacian_score`` + ``destination_slots``: x (B, h·w, C) → slots (B, h//sy, w//sx) int64,
    scores (B, h·w) float32."""
    b, n, c = x.shape
    if n != h * w:
        raise ValueError(f"laplacian: {n} tokens do not form a {h}x{w} grid")
    hs, ws = h // sy, w // sx
    scores = torch.empty(b, n, dtype=torch.float32, device=x.device)
    slots = torch.empty(b, hs, ws, dtype=torch.long, device=x.device)
    k2 = _pow2(sx * sy)
    block_cells = _pow2(triton.cdiv(w, sx), hi=max(1, 64 // k2))
    block_c = _pow2(c, lo=16, hi=max(16, 2048 // (block_cells * k2)))
    grid = (b * triton.cdiv(h, sy), triton.cdiv(triton.cdiv(w, sx), block_cells))
    _laplacian_argmin_kernel[grid](
        x, scores, slots, h, w, c, hs, ws, *x.stride(),
        SX=sx, SY=sy, K2=k2, BLOCK_CELLS=block_cells, BLOCK_C=block_c, CODE=code, L2=l2,
    )  # fmt: skip
    return slots, scores


@triton.jit
def _kv_blend_kernel(
    x_ptr,
    alpha_ptr,
    rows_ptr,
    cols_ptr,
    out_ptr,
    h,
    w,
    ho,
    wo,
    C,
    stride_b,
    stride_n,
    stride_c,
    KH: tl.constexpr,
    KW: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One program = BLOCK_T output tokens × BLOCK_C channels of one sample.

    Reads each KH×KW window once: the running sum gives the average and the element at the
    nearest-exact position (rows_ptr/cols_ptr: ``nearest_exact_index``) is picked on the way; a
    separate load only when that position lies outside the cropped window (odd sizes).
    out = avg + α_b·(nearest − avg), stored contiguous (B, ho·wo, C)."""
    b = tl.program_id(0)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None]
    cc = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    m = (t < ho * wo) & (cc < C)
    io = t // wo
    jo = t % wo
    ne_r = tl.load(rows_ptr + io, mask=t < ho * wo, other=0)
    ne_c = tl.load(cols_ptr + jo, mask=t < ho * wo, other=0)
    base = x_ptr + b * stride_b + cc * stride_c
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    near = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    inside = tl.zeros((BLOCK_T, 1), dtype=tl.int1)
    for dy in tl.static_range(KH):
        for dx in tl.static_range(KW):
            r = io * KH + dy
            c = jo * KW + dx
            v = tl.load(base + (r * w + c) * stride_n, mask=m, other=0.0).to(tl.float32)
            acc += v
            hit = (r == ne_r) & (c == ne_c)
            near = tl.where(hit, v, near)
            inside = inside | hit
    far = tl.load(base + (ne_r * w + ne_c) * stride_n, mask=m & ~inside, other=0.0).to(tl.float32)
    near = tl.where(inside, near, far)
    avg = acc / (KH * KW)
    a = tl.load(alpha_ptr + b)
    out = avg + a * (near - avg)
    tl.store(out_ptr + (b * ho * wo + t) * C + cc, out.to(out_ptr.dtype.element_ty), mask=m)


def kv_blend(x: torch.Tensor, h: int, w: int, factor: int, alpha: float | torch.Tensor) -> torch.Tensor:
    """Fused ``blend_downsample``: (B, h·w, C) → contiguous (B, (h//s)·(w//s), C); α float or (B,)."""
    b, n, c = x.shape
    ho, wo = _check(n, h, w, factor)
    if isinstance(alpha, torch.Tensor):
        a = alpha.to(device=x.device, dtype=torch.float32).reshape(-1).expand(b).contiguous()
    else:
        a = torch.full((b,), float(alpha), dtype=torch.float32, device=x.device)
    out = torch.empty(b, ho * wo, c, dtype=x.dtype, device=x.device)
    block_c = _pow2(c, lo=16, hi=128)
    block_t = _pow2(ho * wo, hi=max(1, 4096 // block_c))
    grid = (b, triton.cdiv(ho * wo, block_t), triton.cdiv(c, block_c))
    rows, cols = nearest_exact_index(h, ho, x.device), nearest_exact_index(w, wo, x.device)
    _kv_blend_kernel[grid](
        x, a, rows, cols, out, h, w, ho, wo, c, *x.stride(), KH=h // ho, KW=w // wo, BLOCK_T=block_t, BLOCK_C=block_c
    )
    return out


@triton.jit
def _row_max_kernel(
    a_ptr,
    d_ptr,
    val_ptr,
    idx_ptr,
    M,
    N,
    K,
    stride_ab,
    stride_am,
    stride_ak,
    stride_db,
    stride_dn,
    stride_dk,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
):
    """One program = BLOCK_M rows of a; streams over d in BLOCK_N tiles keeping a running
    (max, argmax). Each tile's products are rounded to the input dtype first, as the (B, M, N)
    output of ``torch.bmm`` would be, and earlier tiles win ties (first index)."""
    b = tl.program_id(0)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K)
    best = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    best_i = tl.zeros((BLOCK_M,), dtype=tl.int32)
    a_base = a_ptr + b * stride_ab + rm[:, None] * stride_am
    d_base = d_ptr + b * stride_db
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            at = tl.load(a_base + kk[None, :] * stride_ak, mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
            dt = tl.load(
                d_base + rn[None, :] * stride_dn + kk[:, None] * stride_dk,
                mask=(rn[None, :] < N) & (kk[:, None] < K),
                other=0.0,
            )
            if IEEE:
                acc += tl.dot(at, dt, input_precision="ieee")
            else:
                acc += tl.dot(at, dt)
        s = acc.to(a_ptr.dtype.element_ty).to(tl.float32)
        s = tl.where(rn[None, :] < N, s, float("-inf"))
        tile_best, tile_i = tl.max(s, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_best > best
        best_i = tl.where(better, tile_i + n0, best_i)
        best = tl.where(better, tile_best, best)
    tl.store(val_ptr + b * M + rm, best.to(val_ptr.dtype.element_ty), mask=rm < M)
    tl.store(idx_ptr + b * M + rm, best_i.to(tl.int64), mask=rm < M)


def row_max(a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``torch.bmm(a, d.mT).max(-1)``: a (B, M, K), d (B, N, K) → values (B, M) in a's dtype, indices (B, M)."""
    b, m, k = a.shape
    if d.shape[0] != b or d.shape[2] != k:
        raise ValueError(f"row_max: shapes {tuple(a.shape)} and {tuple(d.shape)} do not match")
    n = d.shape[1]
    vals = torch.empty(b, m, dtype=a.dtype, device=a.device)
    idx = torch.empty(b, m, dtype=torch.long, device=a.device)
    block_m, block_n = 64, 64
    block_k = _pow2(k, lo=16, hi=64)
    grid = (b, triton.cdiv(m, block_m))
    _row_max_kernel[grid](
        a, d, vals, idx, m, n, k, *a.stride(), *d.stride(),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, IEEE=a.dtype == torch.float32,
    )  # fmt: skip
    return vals, idx

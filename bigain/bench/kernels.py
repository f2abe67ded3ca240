"""``bench kernels``: the Triton kernels against their torch references on the device (CUDA, or
the Triton interpreter with ``TRITON_INTERPRET=1``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from bigain.bench.common import command, environment, parse_device
from bigain.ops import fused


def run_kernels(args: argparse.Namespace) -> dict[str, Any]:
    """Triton kernels vs their torch references on the device (odd grids, strides, fp32/fp16)."""
    from bigain.ops.kv import blend_downsample
    from bigain.ops.laplacian import laplacian_score
    from bigain.ops.merge import destination_slots

    device = parse_device(args.device)
    k = fused.load_kernels()
    if k is None or (device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1"):
        raise ValueError("kernels: needs a CUDA device with triton (or TRITON_INTERPRET=1 for CPU tensors)")
    rows: list[dict[str, Any]] = []
    g = torch.Generator().manual_seed(args.seed)
    grids = [(7, 9, 2, 2, 5), (9, 6, 3, 2, 20), (64, 64, 2, 2, 320), (96, 96, 2, 2, 320), (32, 32, 2, 2, 1152)]
    for dtype in (torch.float32, torch.float16):
        for h, w, sx, sy, c in grids[: args.cases]:
            x = torch.randn(2, h * w, c, generator=g).to(device, dtype)
            for mode in ("laplacian", "laplacian-code"):
                slots, scores = k.laplacian_slots(x, h, w, sx, sy, code=mode == "laplacian-code")
                ref_s = laplacian_score(x, h, w)
                ref = destination_slots(h, w, sx, sy, mode, scores=ref_s)
                rows.append(check_row("laplacian_slots", mode, dtype, (h, w, sx, sy, c), scores, ref_s, slots, ref))
            for f in (2, 3):
                if h >= f and w >= f:
                    a = torch.tensor([0.8, 1.2], device=device)
                    out, ref = k.kv_blend(x, h, w, f, a), blend_downsample(x, h, w, f, a)
                    rows.append(check_row("kv_blend", f"s={f}", dtype, (h, w, c), out, ref))
            n = h * w
            a_, d_ = x[:, : n - n // 4].contiguous(), x[:, n - n // 4 :].contiguous()
            a_, d_ = a_ / a_.norm(dim=-1, keepdim=True), d_ / d_.norm(dim=-1, keepdim=True)
            (v, i), (rv, ri) = k.row_max(a_, d_), torch.bmm(a_, d_.transpose(1, 2)).max(-1)
            rows.append(check_row("row_max", "", dtype, (n, c), v, rv, i, ri))
    return {
        "kind": "kernels",
        "command": command(args),
        **environment(device, command(args)),
        "results": rows,
        "all_ok": all(r["ok"] for r in rows),
    }


def check_row(
    name: str,
    mode: str,
    dtype: torch.dtype,
    shape: tuple,
    val: torch.Tensor,
    ref: torch.Tensor,
    idx: torch.Tensor | None = None,
    ref_idx: torch.Tensor | None = None,
) -> dict[str, Any]:
    err = float((val.float() - ref.float()).abs().max())
    scale = float(ref.float().abs().max()) or 1.0
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    row = {"kernel": name, "mode": mode, "dtype": str(dtype).removeprefix("torch."), "shape": list(shape)}
    row |= {"max_abs_err": err, "rel_err": err / scale}
    ok = err / scale <= tol
    if idx is not None and ref_idx is not None:
        row["index_mismatch"] = int((idx != ref_idx).sum())
        row["index_total"] = int(idx.numel())
        ok = ok and row["index_mismatch"] <= max(1, idx.numel() // 1000)  # near-ties only
    row["ok"] = bool(ok)
    return row

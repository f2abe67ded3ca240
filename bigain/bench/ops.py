"""``bench ops``: the operators alone (merge, Laplacian score, KV blend, similarity GEMM, tomesd's
merge), each as a fraction of one attention call on the same tokens."""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from bigain.bench.common import command, environment, log, parse_device, parse_dtype, triton_path
from bigain.bench.models import tomesd_available
from bigain.bench.variants import Variant
from bigain.methods import Baseline
from bigain.ops import fused
from bigain.timing import time_interleaved


def ops_cases(b: int, n: int, c: int, ratio: float, device: torch.device, dtype: torch.dtype, seed: int) -> dict:
    """Closures timing each operator on one layer's worth of tokens (a square grid of n tokens)."""
    from bigain.ops import rng
    from bigain.ops.merge import bipartite_merge, destination_slots, slots_to_index

    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"--tokens must be a square number (a square token grid), got {n}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, c, generator=g).to(device, dtype)
    heads = max(1, c // 64)
    q = torch.randn(b, heads, n, c // heads, generator=g).to(device, dtype)
    nd = (side // 2) ** 2
    r = int(n * ratio)

    def ours(dst: str) -> Callable[[], Any]:
        def f() -> Any:
            if dst == "random":
                rand = rng.draw(rng.new_key(seed, device), torch.arange(nd, device=device).view(1, nd))
                slots = destination_slots(side, side, 2, 2, "random", rand=rand)
            else:
                slots, _ = fused.laplacian_slots(x, side, side, 2, 2)
            m = bipartite_merge(x, slots_to_index(slots, side, side, 2, 2), ratio)
            return m.unmerge(m.merge(x))

        return f

    def tomesd_op(no_rand: bool = False) -> Any:
        from tomesd.merge import bipartite_soft_matching_random2d

        gen = torch.Generator(device).manual_seed(seed)
        m, u = bipartite_soft_matching_random2d(x, side, side, 2, 2, r, no_rand=no_rand, generator=gen)
        return u(m(x))

    def top_left() -> Any:
        slots = destination_slots(side, side, 2, 2, "top-left", device=device)
        m = bipartite_merge(x, slots_to_index(slots, side, side, 2, 2), ratio)
        return m.unmerge(m.merge(x))

    src, dst = x[:, : n - nd].contiguous(), x[:, :nd].contiguous()
    cases = {
        "attention (SDPA)": lambda: F.scaled_dot_product_attention(q, q, q),
        "similarity GEMM + row max": lambda: torch.bmm(src, dst.transpose(1, 2)).max(dim=-1),
        "ToMe build + merge + unmerge (ours)": ours("random"),
        "L-GTM build + merge + unmerge (ours)": ours("laplacian"),
        "Laplacian score + cell argmin": lambda: fused.laplacian_slots(x, side, side, 2, 2),
        "IE-KVD blend (α=0.9)": lambda: fused.kv_downsample(x, side, side, 2, 0.9),
    }
    if tomesd_available():
        cases["tomesd build + merge + unmerge"] = tomesd_op
        # not timed: the equality check's pair (same destinations: slot 0 of every cell)
        cases["_check"] = lambda: (top_left(), tomesd_op(no_rand=True))
    return cases


def run_ops(args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = parse_device(args.device), parse_dtype(args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = ops_cases(args.batch, args.tokens, args.channels, args.ratio, device, dtype, args.seed)
    checks = ops_checks(cases)
    paths = ["torch"]
    if device.type == "cuda" and args.triton != "off" and fused.load_kernels() is not None:
        paths = ["torch", "triton"] if args.triton == "both" else ["triton"]
    variants, fns = [], {}
    for name, fn in cases.items():
        fused_op = name not in ("attention (SDPA)", "similarity GEMM + row max", "tomesd build + merge + unmerge")
        for p in paths if fused_op else ["torch"]:
            key = f"{name} [{p}]" if fused_op and len(paths) > 1 else name
            variants.append(Variant(key, key, Baseline(), p))
            fns[key] = fn
    times = time_interleaved(variants, lambda v: on_path(v.path, fns[v.key]), device, args.rounds, args.warmup)
    attn = times["attention (SDPA)"]
    rows = []
    for v in variants:
        t = times[v.key]
        row = {"op": v.key, "path": v.path, "times_s": t, "min_s": min(t), "median_s": statistics.median(t)}
        row["of_attention"] = statistics.median([a / b for a, b in zip(t, attn, strict=True)])
        row["of_attention_min"] = min(t) / min(attn)
        rows.append(row)
        log(f"  {v.key:44s} min {row['min_s'] * 1e3:8.3f} ms  ×attention {row['of_attention']:.4f}")
    out = {
        "kind": "ops",
        "batch": args.batch,
        "tokens": args.tokens,
        "channels": args.channels,
        "ratio": args.ratio,
        "dtype": str(dtype).removeprefix("torch."),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "command": command(args),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **environment(device, command(args)),
        "results": rows,
        "checks": checks,
    }
    return out


def on_path(path: str, fn: Callable[[], Any]) -> Any:
    with triton_path(path == "triton"):
        return fn()


def ops_checks(cases: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Same result as tomesd: max |ours − tomesd| of ToMe's merge→unmerge with the same destinations."""
    check = cases.pop("_check", None)
    if check is None:
        return {}
    with triton_path(False):
        ours, ref = check()
    return {"tome_vs_tomesd_max_abs_diff": float((ours.float() - ref.float()).abs().max())}

"""``bench count``: ATen ops, kernel ops, host syncs and host-to-device copies each method adds per
compressed layer, against the issue's budgets (deterministic: no timing; protocol: :mod:`bigain.bench`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from bigain import patch
from bigain.backbones import adapter_for
from bigain.bench import models
from bigain.bench.common import command, environment, log, setup, triton_path
from bigain.bench.speed import bench_arch, blocks_of_run
from bigain.bench.variants import tomesd_copy, tomesd_ratio, tomesd_variant
from bigain.methods import Method, ToMe, parse_method
from bigain.opcount import Counts, count_ops

DEFAULT_COUNT_METHODS = [
    "tome:ratio=0.5",
    "lgtm:ratio=0.7",
    "todo",
    "iekvd",
    "iekvd:alpha=0.8;alpha_end=1.2",
    "tome:ratio=0.5;reuse=steps",
    "lgtm:ratio=0.7;reuse=steps",
]


def budget_of(m: Method | None, call: str) -> tuple[int | None, int | None]:
    """The method's declared budget for a call ("matching" or "reuse"); (None, None) for tomesd."""
    return (None, None) if m is None else m.budget(call)


def _count_row(
    spec: str, label: str, m: Method | None, call: str, layers: int, added: Counts, plain: Counts
) -> dict[str, Any]:
    per = added.per(layers)
    b_aten, b_kernels = budget_of(m, call)
    row: dict[str, Any] = {"spec": spec, "label": label, "method": "tomesd" if m is None else m.name, "call": call}
    row |= {"layers": layers, **per, "total_aten": added.aten, "total_kernels": added.kernels}
    row |= {"budget_aten": b_aten, "budget_kernels": b_kernels}
    if m is None:
        row["met"] = None  # the reference has no budget
    else:
        row["met"] = bool(
            per["syncs"] == 0
            and per["h2d"] == 0
            and (b_aten is None or per["aten"] <= b_aten)
            and (b_kernels is None or per["kernels"] <= b_kernels)
        )
    # a launch-bound GPU's speed-up if every op cost the same host time (gpu-speed.md §1)
    row["host_bound"] = plain.aten / (plain.aten + added.aten) if plain.aten + added.aten else None
    row["top_ops"] = dict(added.ops.most_common(12))
    return row


def default_res(a: Any, net: torch.nn.Module) -> int:
    """The model's fixed resolution, else at most a 32×32 latent (counts do not depend on the grid size)."""
    return models.fixed_resolution(net, a) or min(a.res, 32 * a.scale)


def run_count(args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = setup(args)
    published = models.is_published(args.model)  # counted on the config: weights change no count
    random = args.random_weights or published
    arch = bench_arch(args, random)
    if random:
        net, loaded = models.build_random(arch, device, dtype, args.seed), None
    else:
        net, loaded = models.load_denoiser(args.model, device, dtype)
    blocks = blocks_of_run(args, net, loaded)
    patch.remove(net)
    res = args.res or default_res(arch, net)
    inputs = models.make_inputs(arch, net, res, args.batch, device, dtype, args.seed)
    fn, tensors = models.call_of(net, inputs)
    methods = list(args.methods or DEFAULT_COUNT_METHODS)
    specs = ["baseline", *[s for s in methods if s.partition(":")[0].strip().lower() != "baseline"]]
    supported = models.tomesd_supported(net)
    tomesd_ratios: list[float] = []
    for s in specs:
        r = tomesd_ratio(s)
        if r is not None:
            tomesd_ratios.append(r)
        elif not args.no_tomesd and supported:
            m = parse_method(s)
            if m.name in ("tome", "lgtm"):
                tomesd_ratios.append(float(m.ratio))  # type: ignore[attr-defined]
    twins = {}
    if supported:
        level = models.tomesd_level(net)
        twins = {r: tomesd_copy(net, tomesd_variant(r, level)) for r in dict.fromkeys(tomesd_ratios)}

    def call(model: torch.nn.Module) -> Callable[[], Any]:
        return lambda: fn(model, *tensors)

    with triton_path(False):  # custom kernels are invisible to the counter: count the torch path
        with torch.no_grad():
            call(net)()
        plain = count_ops(call(net))
        rows = []
        for s in specs:
            if tomesd_ratio(s) is not None:
                continue
            m = parse_method(s)
            patch.apply(net, m, blocks=blocks)
            layers = len(patch.compressed_blocks(net, m))
            with patch.host_step(net, step=patch.Step(recompute=True)), torch.no_grad():
                call(net)()  # cached constants built, assignments kept (reuse="steps")
                matching = count_ops(call(net))
            label = m.label() if m.compresses else "Baseline (patched)"
            rows.append(_count_row(s, label, m, "matching", layers, matching.minus(plain), plain))
            if getattr(m, "reuse", "off") == "steps":
                with patch.host_step(net, step=patch.Step(recompute=False)):
                    reuse = count_ops(call(net))
                rows.append(_count_row(s, label, m, "reuse", layers, reuse.minus(plain), plain))
        first = models.first_compressed(net)
        n_tokens = models.tokens_of(net, models.capture(net, inputs), first) if first else None
        layers = len(patch.compressed_blocks(net, ToMe()))  # tomesd at its max_downsample: the same blocks
        patch.remove(net)
        for r, twin in twins.items():
            with torch.no_grad():
                call(twin)()
            added = count_ops(call(twin)).minus(plain)
            rows.append(_count_row(f"tomesd:ratio={r:g}", f"tomesd r={r:g}", None, "matching", layers, added, plain))
    for row in rows:
        kernels = "n/a" if row["budget_kernels"] is None else row["budget_kernels"]
        b = "" if row["budget_aten"] is None else f"  budget ≤ {row['budget_aten']}/{kernels}"
        ok = "" if row["met"] is None else ("  met" if row["met"] else "  NOT MET")
        log(
            f"  {row['label']:32s} {row['call']:8s} +{row['aten']:6.1f} ATen +{row['kernels']:5.1f} kernels "
            f"{row['syncs']:g} syncs {row['h2d']:g} h2d{b}{ok}"
        )
    cmd = command(args)
    return {
        "kind": "count",
        "model": args.model,
        "backbone": adapter_for(net).name,
        "weights": "random" if random else "pretrained",
        "width_scale": args.width_scale,
        "layers": getattr(args, "layers", None),
        "res": res,
        "batch": args.batch,
        "tokens": n_tokens,
        "dtype": str(dtype).removeprefix("torch."),
        "plain": {"aten": plain.aten, "kernels": plain.kernels, "syncs": plain.syncs, "h2d": plain.h2d},
        "command": cmd,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **environment(device, cmd),
        "rows": rows,
        "all_met": all(r["met"] for r in rows if r["met"] is not None),
    }

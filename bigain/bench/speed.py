"""``bench speed``: the time of one denoiser call, one compressed layer or one generation, per method,
execution mode and setting (protocol: :mod:`bigain.bench`)."""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bigain import patch
from bigain.bench import models
from bigain.bench.common import command, count_call_flops, environment, log, reason, setup, triton_path
from bigain.bench.variants import Denoisers, Variant, build_variants, mode_variants
from bigain.execution import MODES, check_mode
from bigain.methods import Baseline, ToMe
from bigain.opcount import count_ops
from bigain.ops import fused
from bigain.timing import AttnClock, paired_summary, peak_memory, sync, time_interleaved

#: untimed calls per variant before the timed rounds, by mode: compile needs a few, interleaved (a
#: compiled model recompiles its pre-hook the first times it switches between methods), a CUDA graph
#: is captured on its first
PRIME_ROUNDS = {"eager": 1, "compile": 3, "cudagraph": 2}


def parse_regimes(items: Sequence[str]) -> list[tuple[int, int]]:
    """``["512x2", "1024x2"]`` → [(512, 2), (1024, 2)]: (pixel resolution, batch) pairs."""
    out = []
    for item in items:
        res, sep, batch = item.lower().partition("x")
        if not sep or not res.isdigit() or not batch.isdigit() or int(res) < 1 or int(batch) < 1:
            raise ValueError(f"--regime takes RESxBATCH, e.g. 512x2, got {item!r}")
        out.append((int(res), int(batch)))
    return out


def bench_arch(args: argparse.Namespace, narrow_ok: bool) -> Any:
    """The architecture a run builds: the model's, at ``--width-scale`` and ``--layers``."""
    a = models.model_arch(args.model)
    if (args.width_scale != 1 or getattr(args, "layers", None)) and not narrow_ok:
        raise ValueError("--width-scale and --layers change the published config: they need --random-weights")
    return models.with_layers(models.narrow(a, args.width_scale), getattr(args, "layers", None))


def blocks_of_run(args: argparse.Namespace, net: torch.nn.Module, loaded: Any) -> tuple[int, ...] | None:
    """The transformer blocks compressed by default: ``--blocks``, every block of a ``--layers`` model,
    the model card's, or the backbone's default."""
    if getattr(args, "blocks", None):
        return tuple(args.blocks)
    if getattr(args, "layers", None):
        return models.all_blocks(net)
    return getattr(getattr(loaded, "card", None), "blocks", None)


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = setup(args)
    for mode in args.mode:
        if mode not in MODES:
            raise ValueError(f"--mode must be among {MODES}, got {mode!r}")
    arch = bench_arch(args, args.random_weights)
    regimes = (
        parse_regimes(args.regime) if args.regime else [(r, b) for r in args.res or [arch.res] for b in args.batch]
    )
    if args.random_weights:
        net, loaded = models.build_random(arch, device, dtype, args.seed), None
    else:
        net, loaded = models.load_denoiser(args.model, device, dtype)
    blocks = blocks_of_run(args, net, loaded)
    patch.remove(net)  # a loaded model comes patched: set the processors underneath, then patch again
    models.set_attention(net, args.attn)
    add_tomesd = not args.no_tomesd and models.tomesd_supported(net)
    level = models.tomesd_level(net) if models.tomesd_supported(net) else 1
    variants = build_variants(args.methods, device, args.triton, add_tomesd, level)
    dn = Denoisers(net, variants, blocks)  # tomesd's copies are taken here, from the plain model
    if args.job == "generate":
        for twin in dn.copies.values():  # generate() selects its method through bigain.compress
            patch.apply(twin, Baseline())
    cmd = command(args)
    result: dict[str, Any] = {
        "kind": "speed",
        "harness": "own-copy",  # tomesd on its own patched copy, nothing but the call timed
        "model": args.model,
        "backbone": models.adapter_for(net).name,
        "weights": "random" if args.random_weights else "pretrained",
        "width_scale": args.width_scale,
        "layers": getattr(args, "layers", None),
        "dtype": str(dtype).removeprefix("torch."),
        "attn": args.attn,
        "job": args.job,
        "modes": list(args.mode),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "seed": args.seed,
        "command": cmd,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **environment(device, cmd),
        "settings": [],
    }
    from bigain.bench.report import write_outputs

    cache: dict[tuple, Any] = {}  # FLOPs and op counts, shared by the modes of one setting
    with fused.allow(not fused.disabled()):  # Denoisers.select switches the path per variant; restored after
        for mode in args.mode:
            for res, batch in regimes:
                log(f"{args.model} {mode} {res}px batch {batch}: {len(variants)} variants × {args.rounds} rounds")
                for setting in _settings(args, arch, dn, loaded, variants, mode, res, batch, device, dtype, cache):
                    result["settings"].append(setting)
                    if args.out:  # after every setting: a run cut short keeps what it measured
                        write_outputs(result, Path(args.out), plot=False)
                if mode == "cudagraph":  # graphs of another shape are never replayed: free their pools
                    dn.forget(mode)
    return result


def compiled_graphs() -> int:
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - torch without dynamo
        return 0
    return int(counters["stats"]["unique_graphs"])


def _settings(
    args: argparse.Namespace,
    arch: Any,
    dn: Denoisers,
    loaded: Any,
    variants: list[Variant],
    mode: str,
    res: int,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    cache: dict[tuple, Any],
) -> list[dict[str, Any]]:
    if args.job == "generate":
        if loaded is None:
            raise ValueError("--job generate needs real weights (drop --random-weights)")
        return [_generate_setting(args, loaded, dn, variants, mode, batch, device)]
    inputs = models.make_inputs(arch, dn.net, res, batch, device, dtype, args.seed)
    if args.job == "layer":
        names = patch.compressed_blocks(dn.net, ToMe())
        picks = args.layer_index or [0]
        bad = [i for i in picks if not 0 <= i < len(names)]
        if bad:
            raise ValueError(f"--layer-index {bad}: the model has {len(names)} compressed layers")
        return [_layer_setting(args, dn, variants, mode, inputs, res, batch, device, names[i]) for i in picks]
    return [_call_setting(args, dn, variants, mode, inputs, res, batch, device, cache)]


def _call_setting(
    args: argparse.Namespace,
    dn: Denoisers,
    variants: list[Variant],
    mode: str,
    inputs: dict[str, Any],
    res: int,
    batch: int,
    device: torch.device,
    cache: dict[tuple, Any],
) -> dict[str, Any]:
    first = models.first_compressed(dn.net)
    n_tokens = None
    if first is not None:
        key = ("tokens", res, batch)
        if key not in cache:
            cache[key] = models.tokens_of(dn.net, models.capture(dn.net, inputs), first)
        n_tokens = cache[key]
    setting: dict[str, Any] = {"mode": mode, "res": res, "batch": batch, "tokens": n_tokens, "profiles": {}}
    setting["results"] = []
    try:
        check_mode(mode, device)
    except ValueError as err:
        setting["error"] = str(err)
        log(f"  {mode}: not run — {err}")
        return setting
    vs = mode_variants(variants, mode)
    fn, tensors = models.call_of(dn.net, inputs)
    base = next(v for v in vs if v.method is not None and v.method.name == "baseline")

    def run(v: Variant) -> torch.Tensor:  # the timed region: one denoiser call in the mode
        with torch.no_grad():
            return dn.executor(v, mode)(fn, *tensors, t_host=models.T_HOST)

    def eager(v: Variant) -> torch.Tensor:
        with torch.no_grad():
            return dn.executor(v, "eager")(fn, *tensors, t_host=models.T_HOST)

    def select(v: Variant) -> None:
        dn.select(base if v.path == "profile" else v, args.seed)

    errors = _prime(vs, run, select, device, mode, eager if mode == "compile" else None)
    if base.key in errors:
        setting["error"] = f"the baseline cannot run in {mode} mode: {errors[base.key]}"
        log(f"  {setting['error']}")
        return setting
    ok = [v for v in vs if v.key not in errors]
    clocks: dict[str, AttnClock] = {}
    if not args.no_profile:
        for v in ok:
            names = _blocks_of(v, dn.net)
            if names and ",".join(names) not in clocks:
                clocks[",".join(names)] = models.attn_clock(dn.net, names, device)
    probes = [Variant(f"profile:{k}", "Baseline (profiled, eager)", Baseline(), "profile") for k in clocks]

    def run_or_probe(v: Variant) -> Any:
        if v.path != "profile":
            return run(v)
        return clocks[v.key.removeprefix("profile:")].run(lambda: eager(base))

    graphs_before = compiled_graphs()
    times = time_interleaved([*ok, *probes], run_or_probe, device, args.rounds, args.warmup, select)
    if mode == "compile":
        setting["compiles_during_timing"] = compiled_graphs() - graphs_before
    for key, clock in clocks.items():
        setting["profiles"][key] = prof = clock.summary(args.warmup)
        log(f"  Amdahl: share {prof['share']:.3f} → ceiling {prof['ceiling']:.3f} ({len(clock.blocks)} layers)")
    ctx = _RowContext(args, dn, mode, times, base, run, eager, select, device, setting["profiles"], cache, (res, batch))
    for v in vs:
        row = _variant_row(ctx, v, errors.get(v.key))
        setting["results"].append(row)
        if row.get("error"):
            log(f"  {v.label:28s} not measured: {row['error']}")
        else:
            ms = f"min {row['min_s'] * 1e3:9.2f} ms  median {row['median_s'] * 1e3:9.2f} ms"
            hb = f"  host-bound ×{row['host_bound']:.3f}" if row.get("host_bound") else ""
            log(f"  {v.label:28s} {ms}  ×{row['speedup']:.3f}{hb}")
    return setting


def _prime(
    variants: Sequence[Variant],
    run: Callable[[Variant], Any],
    select: Callable[[Variant], Any],
    device: torch.device,
    mode: str,
    first: Callable[[Variant], Any] | None = None,
) -> dict[str, str]:
    """Untimed calls of every variant (compiling or capturing them); the reason of each that fails.
    ``first(v)`` runs once before a variant's first call (compile: one eager call, so the constants
    a method caches exist before it is traced and it compiles once, not twice)."""
    errors: dict[str, str] = {}
    for k in range(PRIME_ROUNDS[mode]):
        for v in variants:
            if v.key in errors:
                continue
            select(v)
            try:
                if k == 0 and first is not None:
                    first(v)
                    select(v)
                run(v)
                sync(device)
            except Exception as err:  # any failure is recorded in the row, not raised
                errors[v.key] = reason(err)
                log(f"  {v.label} cannot run in {mode} mode: {errors[v.key]}")
                traceback.print_exc(limit=3, file=sys.stderr)
                if device.type == "cuda":
                    with suppress(RuntimeError):
                        torch.cuda.synchronize(device)
    return errors


@dataclass
class _RowContext:
    args: argparse.Namespace
    dn: Denoisers
    mode: str
    times: dict[Any, list[float]]
    base: Variant
    run: Callable[[Variant], Any]
    eager: Callable[[Variant], Any]
    setup: Callable[[Variant], Any]
    device: torch.device
    profiles: dict[str, Any]
    cache: dict[tuple, Any]
    where: tuple = ()
    count: bool = True


def _measure_once(ctx: _RowContext, what: str, v: Variant, fn: Callable[[], Any]) -> Any:
    """FLOPs / op counts of one eager call, torch path, cached per (what, method, setting)."""
    key = (what, v.flops_key, ctx.where)
    if key not in ctx.cache:
        ctx.setup(v)
        with triton_path(False):
            ctx.cache[key] = fn()
    return ctx.cache[key]


def _variant_row(ctx: _RowContext, v: Variant, error: str | None) -> dict[str, Any]:
    args, dn = ctx.args, ctx.dn
    row: dict[str, Any] = {"key": v.key, "label": v.label, "method": v.name, "path": v.path, "ratio": v.ratio}
    row["mode"] = ctx.mode
    row["params"] = v.method.params() if v.method is not None else {"ratio": v.ratio, **v.params}
    if error is not None:
        return row | {"error": error, "speedup": None, "min_s": None, "median_s": None}
    row |= paired_summary(ctx.times[v.key], ctx.times[ctx.base.key])
    base = ctx.base
    if not args.no_flops:
        row["flops"] = _measure_once(ctx, "flops", v, lambda: count_call_flops(lambda: ctx.eager(v)))
        base_flops = _measure_once(ctx, "flops", base, lambda: count_call_flops(lambda: ctx.eager(base)))
        row["flops_ratio"] = row["flops"] / base_flops if row["flops"] and base_flops else None
    else:
        row["flops"] = row["flops_ratio"] = None
    if ctx.count and not args.no_count:
        ops = _measure_once(ctx, "ops", v, lambda: count_ops(lambda: ctx.eager(v)).aten)
        base_ops = _measure_once(ctx, "ops", base, lambda: count_ops(lambda: ctx.eager(base)).aten)
        row["ops"], row["base_ops"] = ops, base_ops
        row["host_bound"] = base_ops / ops if ops else None  # predicted t = t_base · ops / base_ops
    else:
        row["ops"] = row["base_ops"] = row["host_bound"] = None

    def measured() -> Any:
        ctx.setup(v)
        return ctx.run(v)

    row |= peak_memory(measured, ctx.device)
    row["max_abs_diff_vs_eager"] = None
    if ctx.mode != "eager" and v.method is not None:  # tomesd draws new destinations every call
        got = measured().float()
        ctx.setup(v)
        ref = ctx.eager(v).float()
        row["max_abs_diff_vs_eager"] = float((got - ref).abs().max())
    blocks = _blocks_of(v, dn.net)
    prof = ctx.profiles.get(",".join(blocks)) if blocks else None
    row["ceiling"] = prof["ceiling"] if prof else None
    row["of_ceiling"] = row["speedup"] / prof["ceiling"] if prof else None
    return row


def _blocks_of(v: Variant, net: torch.nn.Module) -> list[str]:
    if v.method is None:  # tomesd at its max_downsample merges the same blocks as our defaults
        return patch.compressed_blocks(net, ToMe())
    return patch.compressed_blocks(net, v.method) if v.method.compresses else []


def _layer_setting(
    args: argparse.Namespace,
    dn: Denoisers,
    variants: list[Variant],
    mode: str,
    inputs: dict[str, Any],
    res: int,
    batch: int,
    device: torch.device,
    name: str,
) -> dict[str, Any]:
    """One compressed transformer layer alone (its inputs captured from one baseline call), every
    variant interleaved as in ``speed`` (tomesd: the same layer of its copy): the A/B of the merge
    implementations without the rest of the network's time and noise. Eager only."""
    setting: dict[str, Any] = {"mode": mode, "res": res, "batch": batch, "layer": name, "profiles": {}, "results": []}
    if mode != "eager":
        setting["error"] = "the layer job runs one block eagerly; use --job call for compiled or graphed calls"
        return setting
    base = next(v for v in variants if v.method is not None and v.method.name == "baseline")
    dn.select(base, args.seed)
    captured = models.capture(dn.net, inputs, name)
    sample, t = captured["sample"], inputs["timestep"]  # what the model received (Flux: packed tokens)
    layers = {v.key: dn.model(v).get_submodule(name) for v in variants}

    def run(v: Variant) -> Any:
        with torch.no_grad():
            if v.method is None:
                dn.model(v)._tome_info["size"] = tuple(inputs["sample"].shape[-2:])  # what tomesd's hook stores
            else:
                patch.begin_call(dn.net, sample, t)  # what bigain's model hook does
            return layers[v.key](*captured["args"], **captured["kwargs"])

    setting["tokens"] = models.tokens_of(dn.net, captured, name)
    select = lambda v: dn.select(v, args.seed)  # noqa: E731
    times = time_interleaved(variants, run, device, args.rounds, args.warmup, select)
    # a layer's op count: see `bench count`; FLOPs of the layer alone, on the torch path
    ctx = _RowContext(args, dn, mode, times, base, run, run, select, device, {}, {}, (res, batch), count=False)
    setting["results"] = [_variant_row(ctx, v, None) for v in variants]
    log(f"  {name}: {setting['tokens']} image tokens")
    for row in setting["results"]:
        log(f"  {row['label']:28s} min {row['min_s'] * 1e3:9.2f} ms  ×{row['speedup']:.3f}")
    return setting


def _generate_setting(
    args: argparse.Namespace,
    loaded: Any,
    dn: Denoisers,
    variants: list[Variant],
    mode: str,
    batch: int,
    device: torch.device,
) -> dict[str, Any]:
    """Whole generations (``--steps`` each, ``batch`` images) in ``mode``, interleaved like single
    calls; tomesd generates with its own copy of the denoiser."""
    from bigain.pipelines.generate import generate

    setting: dict[str, Any] = {"mode": mode, "res": loaded.resolution, "batch": batch, "steps": args.steps}
    setting |= {"tokens": None, "profiles": {}, "results": []}
    try:
        check_mode(mode, device)
    except ValueError as err:
        setting["error"] = str(err)
        return setting
    shells = {}
    for v in variants:
        if v.method is None:
            shell = copy.copy(loaded)
            shell.__dict__.pop("_executors", None)  # its own executors, on its own denoiser
            shell.denoiser = dn.model(v)
            shells[v.key] = shell
    cond = list(range(batch)) if loaded.card.conditioning == "labels" else ["a photo of a cat"] * batch
    stats: dict[str, list[float]] = {v.key: [] for v in variants}

    def run(v: Variant) -> Any:
        model = shells.get(v.key, loaded)
        out = generate(model, cond, method=v.method or Baseline(), seed=args.seed, steps=args.steps, mode=mode)
        stats[v.key].append(out.denoiser_s)
        return out

    select = lambda v: dn.select(v, args.seed)  # noqa: E731
    errors = _prime(variants, run, select, device, mode)
    ok = [v for v in variants if v.key not in errors]
    for v in ok:
        stats[v.key].clear()
    base_key = next(v.key for v in variants if v.method is not None and v.method.name == "baseline")
    if base_key in errors:
        setting["error"] = f"the baseline cannot run in {mode} mode: {errors[base_key]}"
        return setting
    times = time_interleaved(ok, run, device, args.rounds, args.warmup, select)
    for v in variants:
        row = {"key": v.key, "label": v.label, "method": v.name, "path": v.path, "ratio": v.ratio, "mode": mode}
        row["params"] = v.method.params() if v.method is not None else {"ratio": v.ratio, **v.params}
        if v.key in errors:
            setting["results"].append(row | {"error": errors[v.key], "speedup": None})
            continue
        row |= paired_summary(times[v.key], times[base_key])
        row["denoiser_s"] = statistics.median(stats[v.key][args.warmup :])
        row |= {"flops": None, "flops_ratio": None, "peak_bytes": None, "ceiling": None, "of_ceiling": None}
        setting["results"].append(row)
    return setting

"""Benchmarks: how much time token compression saves, measured the way a sceptical reviewer would.

``python -m bigain.bench speed``   time of one denoiser call (or one generation) per method and setting
``python -m bigain.bench ops``     the operators alone, each as a fraction of one attention call
``python -m bigain.bench kernels`` the Triton kernels against their torch references (CUDA)
``python -m bigain.bench report``  BENCHMARKS.md and plots from the JSON files of the runs above

Protocol (``speed``): one model, patched once; every method runs through the same attention
processor (SDPA by default, ``--attn vanilla`` for diffusers' materialised-softmax
``AttnProcessor``); the same random inputs (fixed seed) for everyone; warm-up calls are not
timed; methods are interleaved round by round in an order that rotates every round, so drift
and thermal state hit everyone alike; CUDA is synchronised around every timed call. We report
min and median times and speed-ups as ratios to the baseline *of the same run* (paired per round
and from the minima), FLOPs from ``FlopCounterMode`` on one call, CUDA peak memory, ``tomesd``
as the external reference when installed, and the Amdahl ceiling 1 / (1 − share) where share is
the time the baseline spends inside the self-attention modules a method compresses.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bigain import patch
from bigain.methods import Baseline, Method, parse_method
from bigain.ops import triton as fused
from bigain.pipelines.generate import sync

# ---- published architectures (diffusers constructor arguments) -----------------------------

#: stabilityai/stable-diffusion-2-base, unet/config.json. ``attention_head_dim`` holds head
#: counts (a diffusers naming quirk): 5, 10, 20, 20 heads of 64 channels.
SD2_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
}

#: facebook/DiT-XL-2-256 (and -512 with sample_size 64), transformer/config.json.
DIT_XL2: dict[str, Any] = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "dropout": 0.0,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_num_groups": 32,
    "norm_type": "ada_norm_zero",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 32,
    "upcast_attention": False,
}


@dataclass(frozen=True)
class ModelSpec:
    """How to build a denoiser from its config and feed it: ``scale`` pixels per latent cell."""

    family: str  # "unet" or "dit"
    config: dict[str, Any]
    scale: int
    res: int
    seq_len: int = 77


def _digits_spec(name: str) -> ModelSpec:
    from bigain.models import DIGITS_ARCH, space_to_depth_of  # lazy: the model cards are another module's business

    arch = DIGITS_ARCH[name]
    cfg = dict(arch["denoiser"])
    seq = int(arch.get("tokens", {}).get("seq_len", 1))
    scale = space_to_depth_of(arch)  # the U-Net's latent is a space-to-depth of the image
    return ModelSpec(arch["family"], cfg, scale, int(cfg["sample_size"]) * scale, seq)


def model_spec(name: str) -> ModelSpec:
    """Architecture of a benchmark model name."""
    if name == "sd2-base":
        return ModelSpec("unet", SD2_UNET, 8, 512)
    if name in ("dit-xl-2-256", "dit-xl-2-512"):
        size = int(name.rsplit("-", 1)[1])
        return ModelSpec("dit", {**DIT_XL2, "sample_size": size // 8}, 8, size)
    if name.startswith("digits-"):
        return _digits_spec(name)
    raise ValueError(
        f"unknown benchmark model {name!r}; use sd2-base, dit-xl-2-256, dit-xl-2-512, digits-dit or digits-unet"
    )


def _construct(cls: type, config: dict[str, Any]) -> torch.nn.Module:
    allowed = set(inspect.signature(cls.__init__).parameters)
    return cls(**{k: v for k, v in config.items() if k in allowed})


def build_random(spec: ModelSpec, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """The full-size architecture with random weights (speed does not depend on weight values)."""
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel

    torch.manual_seed(seed)
    cls = UNet2DConditionModel if spec.family == "unet" else DiTTransformer2DModel
    with torch.device(device):
        net = _construct(cls, spec.config)
    return net.to(dtype).eval().requires_grad_(False)


def load_denoiser(name: str, device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    """Real weights through ``bigain.models.load_model`` (embedded digits models or the hub cache)."""
    from bigain.models import load_model  # lazy: only with real weights

    loaded = load_model(name, device=device, dtype=dtype)
    return patch.denoiser_of(loaded), loaded


# ---- inputs and calls -----------------------------------------------------------------------


def make_inputs(
    spec: ModelSpec, net: torch.nn.Module, res: int, batch: int, device: torch.device, dtype: torch.dtype, seed: int
) -> dict[str, Any]:
    """Random denoiser inputs for one call at ``res`` pixels (t = 500 for every sample)."""
    if res % spec.scale:
        raise ValueError(f"resolution {res} is not a multiple of the latent scale {spec.scale}")
    size = res // spec.scale
    cfg = net.config
    if spec.family == "dit" and size != int(cfg.sample_size):
        raise ValueError(f"DiT has a fixed resolution: {int(cfg.sample_size) * spec.scale} px, got {res}")
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, int(cfg.in_channels), size, size, generator=g)
    t = torch.full((batch,), 500, dtype=torch.long)
    if spec.family == "unet":
        enc = torch.randn(batch, spec.seq_len, int(cfg.cross_attention_dim), generator=g)
        return {"sample": sample.to(device, dtype), "timestep": t.to(device), "enc": enc.to(device, dtype)}
    labels = torch.randint(int(cfg.num_embeds_ada_norm or 1000), (batch,), generator=g)
    return {"sample": sample.to(device, dtype), "timestep": t.to(device), "labels": labels.to(device)}


def denoiser_call(net: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """One denoiser call. The latent goes positionally: tomesd's hook reads ``args[0]``."""
    with torch.inference_mode():
        if "enc" in inputs:
            return net(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["enc"], return_dict=False)[0]
        return net(inputs["sample"], timestep=inputs["timestep"], class_labels=inputs["labels"], return_dict=False)[0]


def set_attention(net: torch.nn.Module, kind: str) -> None:
    """Give every attention module the same processor: ``sdpa`` (AttnProcessor2_0) or ``vanilla``."""
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    if kind not in ("sdpa", "vanilla"):
        raise ValueError(f"--attn must be sdpa or vanilla, got {kind!r}")
    for m in net.modules():
        if isinstance(m, Attention):
            m.set_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())


@contextmanager
def triton_path(on: bool) -> Iterator[None]:
    """Run the block with the fused kernels allowed (on) or forced off (BIGAIN_DISABLE_TRITON=1)."""
    old = os.environ.get(fused.ENV_DISABLE)
    os.environ[fused.ENV_DISABLE] = "0" if on else "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ[fused.ENV_DISABLE]
        else:
            os.environ[fused.ENV_DISABLE] = old


# ---- what is measured: variants --------------------------------------------------------------


@dataclass
class Variant:
    """One measured configuration: a bigain method on a path, or tomesd at a ratio."""

    key: str
    label: str
    method: Method | None  # None: tomesd
    path: str  # "torch", "triton" or "tomesd"
    ratio: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "tomesd" if self.method is None else self.method.name

    @contextmanager
    def active(self, net: torch.nn.Module) -> Iterator[None]:
        """Make this variant the model's behaviour for the calls inside the block."""
        if self.method is None:
            import tomesd

            blocks = patch._state(net).default_blocks if patch.is_patched(net) else None
            patch.remove(net)  # tomesd runs on the plain model, as its users run it
            tomesd.apply_patch(net, ratio=self.ratio, **self.params)
            try:
                yield
            finally:
                tomesd.remove_patch(net)
                patch.apply(net, Baseline(), blocks=blocks)
        else:
            patch.apply(net, self.method)
            with triton_path(self.path == "triton"):
                yield


def _ratio_of(m: Method) -> float | None:
    return float(m.ratio) if hasattr(m, "ratio") else None


def _uses_triton(m: Method) -> bool:
    """Whether a method has a fused kernel on its path (ToDo's α = 1 and the baseline do not)."""
    if m.name in ("tome", "lgtm"):
        return True
    return m.name == "iekvd" and not (m.alpha_end is None and m.alpha in (0, 1))  # type: ignore[attr-defined]


def tomesd_available() -> bool:
    try:
        import tomesd  # noqa: F401
    except ImportError:
        return False
    return True


def build_variants(
    specs: Sequence[str], family: str, device: torch.device, triton_mode: str, add_tomesd: bool
) -> list[Variant]:
    """Parse ``--methods``. ``tomesd:ratio=0.7`` is the external reference; with ``add_tomesd`` it is
    added for every ToMe/L-GTM ratio on U-Nets (tomesd does not patch DiT's paper blocks)."""
    out: list[Variant] = []
    ratios: list[float] = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        if name.strip().lower() == "tomesd":
            opts = parse_method("tome:" + rest)
            out.append(_tomesd_variant(float(opts.ratio)))  # type: ignore[attr-defined]
            continue
        m = parse_method(spec)
        paths = ["torch"]
        if device.type == "cuda" and _uses_triton(m) and triton_mode != "off":
            paths = ["torch", "triton"] if triton_mode == "both" else ["triton"]
        for p in paths:
            label = m.label() + (f" [{p}]" if device.type == "cuda" and _uses_triton(m) else "")
            out.append(Variant(f"{spec}@{p}", label, m, p, _ratio_of(m)))
        if m.name in ("tome", "lgtm") and _ratio_of(m) is not None:
            ratios.append(float(m.ratio))  # type: ignore[attr-defined]
    if add_tomesd and family == "unet" and tomesd_available():
        have = {v.ratio for v in out if v.method is None}
        out += [_tomesd_variant(r) for r in dict.fromkeys(ratios) if r not in have]
    if not any(v.method is not None and v.method.name == "baseline" for v in out):
        out.insert(0, Variant("baseline@torch", "Baseline", Baseline(), "torch"))
    return out


def _tomesd_variant(ratio: float) -> Variant:
    params = {"max_downsample": 1, "sx": 2, "sy": 2, "use_rand": True}
    return Variant(f"tomesd:ratio={ratio:g}", f"tomesd r={ratio:g}", None, "tomesd", ratio, params)


# ---- measurements -----------------------------------------------------------------------------


def time_interleaved(
    variants: Sequence[Variant], run: Callable[[Variant], Any], device: torch.device, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of every variant; warm-up rounds untimed; the order rotates each round."""
    times: dict[str, list[float]] = {v.key: [] for v in variants}
    for k in range(warmup + rounds):
        shift = k % len(variants)
        for v in list(variants[shift:]) + list(variants[:shift]):
            sync(device)
            t0 = time.perf_counter()
            run(v)
            sync(device)
            if k >= warmup:
                times[v.key].append(time.perf_counter() - t0)
    return times


class AttnClock:
    """Time spent inside the ``attn1`` modules of ``blocks`` during one call (synchronised forward
    hooks). Run as an extra, untimed-for-ranking entry of the interleaved rounds, so the Amdahl
    share comes from the same rounds and conditions as the speed-ups."""

    def __init__(self, net: torch.nn.Module, blocks: Sequence[str], device: torch.device) -> None:
        mods = dict(net.named_modules())
        self.attns = [mods[name].attn1 for name in blocks]
        self.blocks = list(blocks)
        self.device = device
        self.inside: list[float] = []
        self.total: list[float] = []
        self._t0 = 0.0
        self._acc = 0.0

    def _pre(self, *_: Any) -> None:
        sync(self.device)
        self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        sync(self.device)
        self._acc += time.perf_counter() - self._t0

    def run(self, call: Callable[[], Any]) -> Any:
        handles = [a.register_forward_pre_hook(self._pre) for a in self.attns]
        handles += [a.register_forward_hook(self._post) for a in self.attns]
        self._acc = 0.0
        try:
            sync(self.device)
            t0 = time.perf_counter()
            out = call()
            sync(self.device)
            self.total.append(time.perf_counter() - t0)
            self.inside.append(self._acc)
        finally:
            for h in handles:
                h.remove()
        return out

    def summary(self, skip: int) -> dict[str, Any]:
        """Median share over the timed rounds (the first ``skip`` are warm-up); ceiling = 1/(1 − share)."""
        inside, total = self.inside[skip:], self.total[skip:]
        share = statistics.median(i / t for i, t in zip(inside, total, strict=True))
        return {
            "share": share,
            "ceiling": 1.0 / (1.0 - share),
            "attn_s": statistics.median(inside),
            "call_s": statistics.median(total),
            "blocks": self.blocks,
            "rounds": len(inside),
        }


def peak_memory(call: Callable[[], Any], device: torch.device) -> dict[str, int | None]:
    """CUDA peak bytes of one call (absolute and above what was allocated before). None on CPU:
    torch's CPU allocator keeps no peak and ru_maxrss is a process-wide high-water mark."""
    if device.type != "cuda":
        return {"peak_bytes": None, "peak_extra_bytes": None}
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_bytes": int(peak), "peak_extra_bytes": int(peak - before)}


def count_call_flops(call: Callable[[], Any]) -> int:
    from bigain.flops import count_flops  # adds the CPU attention formula FlopCounterMode lacks

    with triton_path(False):  # custom kernels are invisible to the counter: count the torch path
        return count_flops(call)


def _summary(times: list[float], base: list[float]) -> dict[str, Any]:
    paired = [b / t for b, t in zip(base, times, strict=True)]
    return {
        "times_s": times,
        "min_s": min(times),
        "median_s": statistics.median(times),
        "speedup": statistics.median(paired),
        "speedup_min": min(base) / min(times),
        "speedup_iqr": _iqr(paired),
    }


def _iqr(v: list[float]) -> list[float]:
    if len(v) < 4:
        return [min(v), max(v)]
    q = statistics.quantiles(v, n=4)
    return [q[0], q[2]]


# ---- the speed command ----------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = torch.get_num_threads()
    return f"{cpu} ({n} thread{'s' if n != 1 else ''})"


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and machine, recorded with every result."""
    env: dict[str, Any] = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__}
    for mod in ("diffusers", "tomesd", "triton"):
        try:
            env[mod] = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            env[mod] = None
    env["python"] = platform.python_version()
    env["git"] = _git_version()
    env["threads"] = torch.get_num_threads()
    env["cpu_count"] = os.cpu_count()
    try:
        env["loadavg_start"] = list(os.getloadavg())
    except OSError:
        env["loadavg_start"] = None
    return env


def _git_version() -> str | None:
    """Commit of the checkout the benchmark ran from, "+dirty" when files differ from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)

    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", "bigain")
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _parse_dtype(name: str) -> torch.dtype:
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
    table |= {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"--dtype must be one of fp32, fp16, bf16, got {name!r}")
    return table[name]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return dev


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = _device(args.device), _parse_dtype(args.dtype)
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("fp16 is for CUDA; on the CPU use fp32 (or bf16)")
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = model_spec(args.model)
    if args.random_weights:
        net, loaded = build_random(spec, device, dtype, args.seed), None
    else:
        net, loaded = load_denoiser(args.model, device, dtype)
    blocks = getattr(getattr(loaded, "card", None), "blocks", None)
    patch.remove(net)  # a loaded model comes patched: set the processors underneath, then patch again
    set_attention(net, args.attn)
    patch.apply(net, Baseline(), blocks=blocks)
    variants = build_variants(args.methods, spec.family, device, args.triton, not args.no_tomesd)
    result: dict[str, Any] = {
        "kind": "speed",
        "model": args.model,
        "weights": "random" if args.random_weights else "pretrained",
        "dtype": str(dtype).removeprefix("torch."),
        "attn": args.attn,
        "job": args.job,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "seed": args.seed,
        "command": "python -m bigain.bench " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **environment(device),
        "settings": [],
    }
    for res in args.res or [spec.res]:
        for batch in args.batch:
            log(f"{args.model} {res}px batch {batch}: {len(variants)} variants × {args.rounds} rounds")
            result["settings"].append(_speed_setting(args, spec, net, loaded, variants, res, batch, device, dtype))
    return result


def _speed_setting(
    args: argparse.Namespace,
    spec: ModelSpec,
    net: torch.nn.Module,
    loaded: Any,
    variants: list[Variant],
    res: int,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, Any]:
    if args.job == "generate":
        if loaded is None:
            raise ValueError("--job generate needs real weights (drop --random-weights)")
        return _generate_setting(args, loaded, variants, batch, device)
    inputs = make_inputs(spec, net, res, batch, device, dtype, args.seed)
    if args.job == "layer":
        return _layer_setting(args, spec, net, variants, inputs, res, batch, device)

    def call() -> Any:
        return denoiser_call(net, inputs)

    def run(v: Variant) -> Any:
        with v.active(net):
            patch.seed(net, args.seed)
            return call()

    n_tokens = (res // spec.scale // (int(net.config.patch_size) if spec.family == "dit" else 1)) ** 2
    setting: dict[str, Any] = {"res": res, "batch": batch, "tokens": n_tokens, "profiles": {}, "results": []}
    clocks: dict[str, AttnClock] = {}
    if not args.no_profile:
        patch.apply(net, Baseline())
        for v in variants:
            names = _blocks_of(v, net)
            if names and ",".join(names) not in clocks:
                clocks[",".join(names)] = AttnClock(net, names, device)
    probes = [Variant(f"profile:{k}", "Baseline (profiled)", Baseline(), "profile") for k in clocks]

    def run_or_probe(v: Variant) -> Any:
        if v.path != "profile":
            return run(v)
        with v.active(net):
            return clocks[v.key.removeprefix("profile:")].run(call)

    times = time_interleaved([*variants, *probes], run_or_probe, device, args.rounds, args.warmup)
    for key, clock in clocks.items():
        setting["profiles"][key] = prof = clock.summary(args.warmup)
        log(f"  Amdahl: share {prof['share']:.3f} → ceiling {prof['ceiling']:.3f} ({len(clock.blocks)} layers)")
    base_key = next(v.key for v in variants if v.method is not None and v.method.name == "baseline")
    flops_cache: dict[str, int] = {}
    for v in variants:
        row = _variant_row(args, v, net, times, base_key, run, device, flops_cache, setting["profiles"])
        setting["results"].append(row)
        ms = f"min {row['min_s'] * 1e3:9.1f} ms  median {row['median_s'] * 1e3:9.1f} ms"
        log(f"  {v.label:28s} {ms}  ×{row['speedup']:.3f}")
    return setting


def _variant_row(
    args: argparse.Namespace,
    v: Variant,
    net: torch.nn.Module,
    times: dict[str, list[float]],
    base_key: str,
    run: Callable[[Variant], Any],
    device: torch.device,
    flops_cache: dict[str, int],
    profiles: dict[str, Any],
) -> dict[str, Any]:
    row: dict[str, Any] = {"key": v.key, "label": v.label, "method": v.name, "path": v.path, "ratio": v.ratio}
    row["params"] = v.method.params() if v.method is not None else {"ratio": v.ratio, **v.params}
    row |= _summary(times[v.key], times[base_key])
    fkey = v.key.split("@")[0]
    if not args.no_flops and fkey not in flops_cache:
        flops_cache[fkey] = count_call_flops(lambda: run(v))
    row["flops"] = flops_cache.get(fkey)
    base_flops = flops_cache.get(base_key.split("@")[0])
    row["flops_ratio"] = row["flops"] / base_flops if row["flops"] and base_flops else None
    row |= peak_memory(lambda: run(v), device)
    blocks = _blocks_of(v, net)
    prof = profiles.get(",".join(blocks)) if blocks else None
    row["ceiling"] = prof["ceiling"] if prof else None
    row["of_ceiling"] = row["speedup"] / prof["ceiling"] if prof else None
    return row


def _blocks_of(v: Variant, net: torch.nn.Module) -> list[str]:
    if v.method is None:  # tomesd at max_downsample=1 merges the same level-1 blocks as our defaults
        from bigain.methods import ToMe

        return patch.compressed_blocks(net, ToMe())
    return patch.compressed_blocks(net, v.method) if v.method.compresses else []


def _layer_setting(
    args: argparse.Namespace,
    spec: ModelSpec,
    net: torch.nn.Module,
    variants: list[Variant],
    inputs: dict[str, Any],
    res: int,
    batch: int,
    device: torch.device,
) -> dict[str, Any]:
    """One compressed transformer layer alone (its inputs captured from one baseline call), every
    variant interleaved as in ``speed``: the A/B of the merge implementations without the rest of
    the network's time and noise."""
    from bigain.methods import ToMe

    name = patch.compressed_blocks(net, ToMe())[0]
    block = net.get_submodule(name)
    captured: dict[str, Any] = {}
    hook = block.register_forward_pre_hook(lambda m, a, kw: captured.update(args=a, kwargs=dict(kw)), with_kwargs=True)
    patch.apply(net, Baseline())
    try:
        denoiser_call(net, inputs)
    finally:
        hook.remove()
    sample, t = inputs["sample"], inputs["timestep"]

    def run(v: Variant) -> Any:
        with v.active(net):
            if v.method is None:
                net._tome_info["size"] = tuple(sample.shape[-2:])  # what tomesd's model hook would have stored
            else:
                patch.begin_call(net, sample, t)  # what bigain's model hook does
            patch.seed(net, args.seed)
            with torch.inference_mode():
                return block(*captured["args"], **captured["kwargs"])

    n_tokens = int(captured["args"][0].shape[1] if captured["args"] else captured["kwargs"]["hidden_states"].shape[1])
    setting: dict[str, Any] = {"res": res, "batch": batch, "tokens": n_tokens, "layer": name, "profiles": {}}
    times = time_interleaved(variants, run, device, args.rounds, args.warmup)
    base_key = next(v.key for v in variants if v.method is not None and v.method.name == "baseline")
    flops_cache: dict[str, int] = {}
    setting["results"] = [_variant_row(args, v, net, times, base_key, run, device, flops_cache, {}) for v in variants]
    for row in setting["results"]:
        log(f"  {row['label']:28s} min {row['min_s'] * 1e3:9.2f} ms  ×{row['speedup']:.3f}")
    return setting


def _generate_setting(
    args: argparse.Namespace, loaded: Any, variants: list[Variant], batch: int, device: torch.device
) -> dict[str, Any]:
    """Whole generations (``--steps`` each, ``batch`` images), interleaved like single calls."""
    from bigain.pipelines.generate import generate

    net = patch.denoiser_of(loaded)
    cond = list(range(batch)) if loaded.card.conditioning == "labels" else ["a photo of a cat"] * batch
    stats: dict[str, list[float]] = {v.key: [] for v in variants}

    def run(v: Variant) -> Any:
        with v.active(net):
            out = generate(loaded, cond, method=v.method or Baseline(), seed=args.seed, steps=args.steps)
        stats[v.key].append(out.denoiser_s)
        return out

    times = time_interleaved(variants, run, device, args.rounds, args.warmup)
    base_key = next(v.key for v in variants if v.method is not None and v.method.name == "baseline")
    results = []
    for v in variants:
        row = {"key": v.key, "label": v.label, "method": v.name, "path": v.path, "ratio": v.ratio}
        row["params"] = v.method.params() if v.method is not None else {"ratio": v.ratio, **v.params}
        row |= _summary(times[v.key], times[base_key])
        row["denoiser_s"] = statistics.median(stats[v.key][args.warmup :])
        row |= {"flops": None, "flops_ratio": None, "peak_bytes": None, "ceiling": None, "of_ceiling": None}
        results.append(row)
    setting = {"res": loaded.resolution, "batch": batch, "steps": args.steps, "tokens": None}
    return {**setting, "profiles": {}, "results": results}


# ---- the ops command ------------------------------------------------------------------------


def _ops_cases(b: int, n: int, c: int, ratio: float, device: torch.device, dtype: torch.dtype, seed: int) -> dict:
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
    device, dtype = _device(args.device), _parse_dtype(args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = _ops_cases(args.batch, args.tokens, args.channels, args.ratio, device, dtype, args.seed)
    checks = _ops_checks(cases)
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
    times = time_interleaved(variants, lambda v: _on_path(v.path, fns[v.key]), device, args.rounds, args.warmup)
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
        "command": "python -m bigain.bench " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **environment(device),
        "results": rows,
        "checks": checks,
    }
    return out


def _on_path(path: str, fn: Callable[[], Any]) -> Any:
    with triton_path(path == "triton"):
        return fn()


def _ops_checks(cases: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Same result as tomesd: max |ours − tomesd| of ToMe's merge→unmerge with the same destinations."""
    check = cases.pop("_check", None)
    if check is None:
        return {}
    with triton_path(False):
        ours, ref = check()
    return {"tome_vs_tomesd_max_abs_diff": float((ours.float() - ref.float()).abs().max())}


# ---- the kernels command (CUDA correctness) ---------------------------------------------------


def run_kernels(args: argparse.Namespace) -> dict[str, Any]:
    """Triton kernels vs their torch references on the device (odd grids, strides, fp32/fp16)."""
    from bigain.ops.kv import blend_downsample
    from bigain.ops.laplacian import laplacian_score
    from bigain.ops.merge import destination_slots

    device = _device(args.device)
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
                rows.append(_check_row("laplacian_slots", mode, dtype, (h, w, sx, sy, c), scores, ref_s, slots, ref))
            for f in (2, 3):
                if h >= f and w >= f:
                    a = torch.tensor([0.8, 1.2], device=device)
                    out, ref = k.kv_blend(x, h, w, f, a), blend_downsample(x, h, w, f, a)
                    rows.append(_check_row("kv_blend", f"s={f}", dtype, (h, w, c), out, ref))
            n = h * w
            a_, d_ = x[:, : n - n // 4].contiguous(), x[:, n - n // 4 :].contiguous()
            a_, d_ = a_ / a_.norm(dim=-1, keepdim=True), d_ / d_.norm(dim=-1, keepdim=True)
            (v, i), (rv, ri) = k.row_max(a_, d_), torch.bmm(a_, d_.transpose(1, 2)).max(-1)
            rows.append(_check_row("row_max", "", dtype, (n, c), v, rv, i, ri))
    return {"kind": "kernels", **environment(device), "results": rows, "all_ok": all(r["ok"] for r in rows)}


def _check_row(
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


# ---- reports: Markdown and plots --------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}" if s >= 0.01 else f"{s * 1e3:.3f}"


def speed_markdown(res: dict[str, Any]) -> str:
    """Tables of one speed run (one per setting)."""
    head = (
        f"### {res['model']} ({res['weights']} weights), {res['dtype']}, {res['attn']} attention"
        f" — {res['device_name']}\n\n"
        f"`{res['command']}`  \n{res['date']}; torch {res['torch']}, diffusers {res['diffusers']}, "
        f"tomesd {res['tomesd']}, triton {res['triton']}; {res['rounds']} timed rounds after {res['warmup']} warm-up, "
        f"methods interleaved (order rotating), speed-up = median over rounds of t(baseline)/t(method).\n"
    )
    parts = [head]
    for s in res["settings"]:
        parts.append(_setting_markdown(res, s))
    return "\n".join(parts)


def _setting_markdown(res: dict[str, Any], s: dict[str, Any]) -> str:
    prof = next(iter(s["profiles"].values()), None)
    if s.get("steps"):
        what = f"whole generation, {s['steps']} steps"
    elif s.get("layer"):
        what = f"one compressed layer alone, `{s['layer']}`, {s['tokens']} tokens"
    else:
        what = f"{s['tokens']} tokens per compressed layer"
    lines = [f"**{s['res']} px, batch {s['batch']}** ({what})"]
    if prof:
        lines[0] += (
            f" — Amdahl: the compressed self-attention layers take {prof['share'] * 100:.1f}% of the baseline call "
            f"({_ms(prof['attn_s'])} of {_ms(prof['call_s'])} ms) → ceiling ×{prof['ceiling']:.3f}"
        )
    lines += [
        "",
        "| Method | path | min ms | median ms | speed-up | speed-up (min) | of ceiling | GFLOPs | FLOPs vs base "
        "| peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["results"]:
        gflops = _fmt(r["flops"] / 1e9, 1) if r.get("flops") else "n/a"
        peak = _fmt(r["peak_bytes"] / 2**20, 0) if r.get("peak_bytes") else "n/a"
        lines.append(
            f"| {r['label']} | {r['path']} | {_ms(r['min_s'])} | {_ms(r['median_s'])} | ×{r['speedup']:.3f} | "
            f"×{r['speedup_min']:.3f} | {_pct(r.get('of_ceiling'))} | {gflops} | {_fmt(r.get('flops_ratio'))} "
            f"| {peak} |"
        )
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def ops_markdown(res: dict[str, Any]) -> str:
    lines = [
        f"### Operators at {res['tokens']} tokens × {res['channels']} channels, batch {res['batch']}, "
        f"{res['dtype']}, ratio {res['ratio']:g} — {res['device_name']}",
        "",
        f"`{res['command']}`  \n{res['date']}; {res['rounds']} interleaved rounds after {res['warmup']} warm-up; "
        "'× attention' = median over rounds of t(op)/t(attention call).",
        "",
        "| Operator | min ms | median ms | × attention | × attention (min) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in res["results"]:
        lines.append(
            f"| {r['op']} | {_ms(r['min_s'])} | {_ms(r['median_s'])} | {r['of_attention']:.4f} | "
            f"{r['of_attention_min']:.4f} |"
        )
    ratios = _ours_vs_tomesd(res)
    if ratios:
        lines += [
            "",
            "Ours / tomesd (median of paired rounds): " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()),
        ]
    if res.get("checks"):
        lines += ["", "Checks: " + ", ".join(f"{k} = {v:.3g}" for k, v in res["checks"].items())]
    return "\n".join(lines) + "\n"


def _ours_vs_tomesd(res: dict[str, Any]) -> dict[str, float]:
    rows = {r["op"]: r for r in res["results"]}
    ref = rows.get("tomesd build + merge + unmerge")
    if ref is None:
        return {}
    out = {}
    for key, r in rows.items():
        if key == "similarity GEMM + row max":
            out["similarity GEMM"] = statistics.median(a / b for a, b in zip(r["times_s"], ref["times_s"], strict=True))
        if "(ours)" in key:
            paired = [a / b for a, b in zip(r["times_s"], ref["times_s"], strict=True)]
            out[key.replace(" build + merge + unmerge (ours)", "")] = statistics.median(paired)
    return out


def kernels_markdown(res: dict[str, Any]) -> str:
    lines = [
        f"### Triton kernels vs torch references — {res['device_name']} (triton {res['triton']})",
        "",
        "| Kernel | mode | dtype | shape | max abs err | rel err | index mismatches | ok |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in res["results"]:
        mism = f"{r['index_mismatch']}/{r['index_total']}" if "index_mismatch" in r else "–"
        lines.append(
            f"| {r['kernel']} | {r['mode']} | {r['dtype']} | {'×'.join(map(str, r['shape']))} | "
            f"{r['max_abs_err']:.3g} | {r['rel_err']:.3g} | {mism} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def to_markdown(res: dict[str, Any]) -> str:
    return {"speed": speed_markdown, "ops": ops_markdown, "kernels": kernels_markdown}[res["kind"]](res)


COLORS = {"tome": "tab:blue", "lgtm": "tab:red", "tomesd": "tab:gray", "todo": "tab:green", "iekvd": "tab:purple"}
STYLES = {"torch": "-", "triton": "--", "tomesd": ":"}


def plot_speed(res: dict[str, Any], path: Path) -> Path | None:
    """Speed-up vs tokens removed, one panel per setting: colour = method, line style = path
    (solid torch, dashed Triton, dotted tomesd), dashed grey = the Amdahl ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in res["settings"] if any(_x_of(r) is not None for r in s["results"])]
    if not settings:
        return None
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings) + 1.8, 3.6), sharey=True, squeeze=False)
    for ax, s in zip(axes[0], settings, strict=True):
        series: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in s["results"]:
            x = _x_of(r)
            if x is not None:
                series.setdefault((r["method"], r["path"]), []).append((x, r["speedup"]))
        for (method, p), pts in series.items():
            pts.sort()
            xs, ys = [q[0] for q in pts], [q[1] for q in pts]
            ax.plot(xs, ys, STYLES.get(p, "-"), marker="o", color=COLORS.get(method), label=f"{method} [{p}]")
        for prof in s["profiles"].values():
            ax.axhline(prof["ceiling"], ls="--", lw=0.8, color="grey")
            ax.text(0.02, prof["ceiling"], f" Amdahl ceiling ×{prof['ceiling']:.2f}", fontsize=7, color="grey",
                    va="bottom", transform=ax.get_yaxis_transform())  # fmt: skip
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set_title(f"{s['res']} px, batch {s['batch']}", fontsize=9)
        ax.set_xlabel("tokens removed (merge ratio; KV: 1 − 1/s²)", fontsize=8)
    axes[0][0].set_ylabel("speed-up vs baseline (same run)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(f"{res['model']}, {res['dtype']}, {res['device_name']}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _x_of(r: dict[str, Any]) -> float | None:
    return r["ratio"] if r["ratio"] is not None else _kv_reduction(r)


def _kv_reduction(r: dict[str, Any]) -> float | None:
    f = r.get("params", {}).get("factor")
    return 1 - 1 / f**2 if f else None


def plot_accuracy(results: Sequence[dict[str, Any]], eval_rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy (from evaluation runs) against measured speed-up, where model and method label match.
    One colour per (model, setting); None when nothing pairs up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = {(e.get("model"), e.get("method")): e["acc"] for e in eval_rows if e.get("acc") is not None}
    groups: dict[str, list[tuple[float, float, str]]] = {}
    for res in (r for r in results if r.get("kind") == "speed"):
        for s in res["settings"]:
            for r in s["results"]:
                a = acc.get((res["model"], r["label"].split(" [")[0]))
                if a is not None:
                    key = f"{res['model']} {s['res']}px b{s['batch']}, {res['device_name']}"
                    groups.setdefault(key, []).append((r["speedup"], a, r["label"]))
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for key, pts in groups.items():
        sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=key)
        for x, y, name in pts:
            ax.annotate(
                name, (x, y), fontsize=6, color=sc.get_facecolor()[0], xytext=(3, 2), textcoords="offset points"
            )
    ax.axvline(1.0, color="black", lw=0.6)
    ax.set_xlabel("speed-up vs baseline (one denoiser call, same run)")
    ax.set_ylabel("accuracy (%) from the evaluation run")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def eval_rows(folder: Path) -> list[dict[str, Any]]:
    """Rows {model, method (label), acc} from evaluation results under ``folder``: the ``rows`` of
    ``python -m bigain eval`` results, and the classification table of ``eval digits``; [] if none."""
    rows: list[dict[str, Any]] = []
    for f in sorted(glob.glob(str(folder / "**" / "*.json"), recursive=True)):
        try:
            data = json.loads(Path(f).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if isinstance(data.get("rows"), list):
            rows += [r for r in data["rows"] if isinstance(r, dict) and "method" in r]
        methods = (
            (data.get("classification") or {}).get("methods") if isinstance(data.get("classification"), dict) else None
        )
        if isinstance(methods, dict):
            for m in methods.values():
                if isinstance(m, dict) and "method" in m and m.get("acc") is not None:
                    rows.append({"model": data.get("model"), "method": m["method"], "acc": m["acc"]})
    return rows


def write_outputs(res: dict[str, Any], out: Path) -> list[Path]:
    """JSON, Markdown and (speed) PNG next to each other: out.json, out.md, out.png."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(res, indent=1) + "\n")
    md = out.with_suffix(".md")
    md.write_text(to_markdown(res))
    written = [json_path, md]
    if res["kind"] == "speed":
        png = plot_speed(res, out.with_suffix(".png"))
        written += [png] if png else []
    return written


def run_report(args: argparse.Namespace) -> Path:
    """BENCHMARKS.md (every JSON result in the folders, grouped by kind and device) and plots."""
    files = sorted({p for folder in args.inputs for p in Path(folder).glob("*.json")})
    results = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("kind") in ("speed", "ops", "kernels"):
            data["_file"] = str(f)
            results.append(data)
    order = {"speed": 0, "ops": 1, "kernels": 2}
    results.sort(key=lambda r: (r["device"].startswith("cpu"), order[r["kind"]], r["_file"]))
    parts = [REPORT_HEAD.format(cmd="python -m bigain.bench report " + " ".join(args.inputs))]
    parts.append(summary_markdown(results))
    for r in results:
        parts += [to_markdown(r), f"Source: `{r['_file']}`\n"]
        png = Path(r["_file"]).with_suffix(".png")
        if png.exists():
            parts.append(f"![speed-up vs ratio]({os.path.relpath(png, Path(args.md).parent)})\n")
    acc_png = plot_accuracy(results, eval_rows(Path(args.eval)), Path(args.inputs[0]) / "accuracy_vs_speedup.png")
    if acc_png:
        parts.append(f"![accuracy vs speed-up]({os.path.relpath(acc_png, Path(args.md).parent)})\n")
    else:
        parts.append(
            f"_No accuracy-vs-speed-up plot: no evaluation results with matching methods under {args.eval}._\n"
        )
    Path(args.md).write_text("\n".join(parts))
    return Path(args.md)


def _row_of(setting: dict[str, Any], method: str, ratio: float = 0.7, path: str | None = None) -> dict | None:
    for r in setting["results"]:
        same_ratio = r["ratio"] is None or abs(r["ratio"] - ratio) < 1e-9
        if r["method"] == method and same_ratio and (path is None or r["path"] == path):
            return r
    return None


def _times(row: dict[str, Any] | None) -> str:
    return "n/a" if row is None else f"×{row['speedup']:.3f}"


def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def summary_markdown(results: Sequence[dict[str, Any]]) -> str:
    """The issue's three speed questions, answered from the results (nothing typed by hand):
    merge cost vs tomesd, L-GTM vs tomesd end to end at ratio 0.7, and L-GTM vs the ceiling."""
    lines = [
        "## Summary",
        "",
        "End to end, ratio 0.7 (L-GTM on its fastest path; speed-ups are paired medians):",
        "",
        "| Model, setting | device | ceiling | L-GTM | of ceiling | ≥ 95%? | tomesd | L-GTM ≥ tomesd? | IE-KVD |",
        "|---|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for res in (r for r in results if r["kind"] == "speed"):
        for st in res["settings"]:
            lg = max(
                (r for r in st["results"] if r["method"] == "lgtm" and r["ratio"] == 0.7),
                key=lambda r: r["speedup"],
                default=None,
            )
            if lg is None:
                continue
            ts, kv = _row_of(st, "tomesd"), _row_of(st, "iekvd", path="triton") or _row_of(st, "iekvd")
            ceil = lg.get("ceiling")
            job = " (one layer)" if st.get("layer") else ""
            lines.append(
                f"| {res['model']} {st['res']} px b{st['batch']} {res['dtype']}{job} | {res['device_name']} | "
                f"{_fmt(ceil)} | ×{lg['speedup']:.3f} ({lg['path']}) | {_pct(lg.get('of_ceiling'))} | "
                f"{_yes(None if ceil is None else lg['of_ceiling'] >= 0.95)} | "
                f"{_times(ts)} | "
                f"{_yes(None if ts is None else lg['speedup'] >= ts['speedup'])} | "
                f"{_times(kv)} |"
            )
    lines += [
        "",
        "Operator cost per layer (build + merge + unmerge), ours / tomesd, paired medians; the last column is the "
        "src×dst similarity product + row max alone, which both implementations must compute (a floor for an "
        "exact merge):",
        "",
    ]
    lines += ["| Setting | device | ToMe | L-GTM | ≤ 0.5? | similarity GEMM alone |", "|---|---|---:|---:|---|---:|"]
    for res in (r for r in results if r["kind"] == "ops"):
        ratios = _ours_vs_tomesd(res)
        if not ratios:
            continue
        tome = min((v for k, v in ratios.items() if k.startswith("ToMe")), default=None)
        lgtm = min((v for k, v in ratios.items() if k.startswith("L-GTM")), default=None)
        best = min(v for v in (tome, lgtm) if v is not None)
        lines.append(
            f"| {res['tokens']} tokens × {res['channels']}, b{res['batch']}, {res['dtype']} | {res['device_name']} | "
            f"{_fmt(tome)} | {_fmt(lgtm)} | {_yes(best <= 0.5)} | {_fmt(ratios.get('similarity GEMM'))} |"
        )
    return "\n".join(lines) + "\n"


REPORT_HEAD = """# Benchmarks

Written by `{cmd}` from the JSON files of `python -m bigain.bench speed|ops|kernels`; every
figure below comes from those files (commands, dates and machines are given with each table).
Speed-ups are ratios to the baseline measured in the same run, methods interleaved; "of
ceiling" divides the speed-up by the Amdahl ceiling 1/(1 − share), share = the baseline's time
inside the self-attention layers the method compresses. CPU timings on a shared 2-core machine
are noisy: compare ratios within one table, not absolute times across tables.
"""


# ---- command line ---------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bigain.bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed", help="time one denoiser call (or a generation) per method")
    sp.add_argument("--model", default="sd2-base")
    sp.add_argument("--random-weights", action="store_true", help="published config, random weights")
    sp.add_argument("--res", type=int, nargs="*", help="pixel resolutions (default: the model's)")
    sp.add_argument("--batch", type=int, nargs="+", default=[2])
    sp.add_argument("--methods", nargs="+", default=["baseline", "tome:ratio=0.7", "lgtm:ratio=0.7", "todo", "iekvd"])
    sp.add_argument("--rounds", type=int, default=5)
    sp.add_argument("--warmup", type=int, default=1)
    sp.add_argument(
        "--job",
        choices=["call", "layer", "generate"],
        default="call",
        help="call: one denoiser call; layer: the first compressed transformer layer alone; generate: a generation",
    )
    sp.add_argument("--steps", type=int, default=10, help="--job generate: steps per generation")
    sp.add_argument("--attn", choices=["sdpa", "vanilla"], default="sdpa")
    sp.add_argument("--no-tomesd", action="store_true", help="do not add tomesd at the ToMe/L-GTM ratios")
    sp.add_argument("--no-flops", action="store_true")
    sp.add_argument("--no-profile", action="store_true")
    sp.add_argument("--out", default="assets/bench/speed")
    _common(sp)
    op = sub.add_parser("ops", help="time the operators alone, as fractions of one attention call")
    op.add_argument("--tokens", type=int, default=4096)
    op.add_argument("--channels", type=int, default=320)
    op.add_argument("--batch", type=int, default=2)
    op.add_argument("--ratio", type=float, default=0.7)
    op.add_argument("--rounds", type=int, default=20)
    op.add_argument("--warmup", type=int, default=3)
    op.add_argument("--out", default="assets/bench/ops")
    _common(op)
    kp = sub.add_parser("kernels", help="Triton kernels vs torch on the device")
    kp.add_argument("--cases", type=int, default=5)
    kp.add_argument("--out", default="assets/bench/kernels")
    _common(kp)
    rp = sub.add_parser("report", help="BENCHMARKS.md from the JSON results")
    rp.add_argument("inputs", nargs="*", default=["assets/bench"])
    rp.add_argument("--md", default="BENCHMARKS.md")
    rp.add_argument("--eval", default="assets/eval")
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--triton", choices=["both", "on", "off"], default="both", help="CUDA: which paths to time")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "report":
        log(f"wrote {run_report(args)}")
        return 0
    runner = {"speed": run_speed, "ops": run_ops, "kernels": run_kernels}[args.cmd]
    res = runner(args)
    for path in write_outputs(res, Path(args.out)):
        log(f"wrote {path}")
    if args.cmd == "kernels" and not res["all_ok"]:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What is measured: variants (a bigain method on a path, or tomesd at a ratio) and the denoisers they run on."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bigain import patch
from bigain.execution import Executor
from bigain.methods import Baseline, Method, parse_method
from bigain.ops import fused


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

    @property
    def flops_key(self) -> str:
        """Same work whatever the path: FLOPs and op counts are shared by a method's paths."""
        return self.key.split("@")[0]


def ratio_of(m: Method) -> float | None:
    return float(m.ratio) if hasattr(m, "ratio") else None


def uses_triton(m: Method) -> bool:
    """Whether a method has a fused kernel on its path (the method says: ``Method.has_kernels``)."""
    return m.has_kernels()


#: tomesd's settings; ``max_downsample`` is set per model (:func:`bigain.bench.models.tomesd_level`)
TOMESD_PARAMS: dict[str, Any] = {"max_downsample": 1, "sx": 2, "sy": 2, "use_rand": True}


def tomesd_variant(ratio: float, level: int = 1) -> Variant:
    params = {**TOMESD_PARAMS, "max_downsample": level}
    return Variant(f"tomesd:ratio={ratio:g}", f"tomesd r={ratio:g}", None, "tomesd", ratio, params)


def tomesd_ratio(spec: str) -> float | None:
    """The ratio of a ``tomesd:ratio=…`` spec, None for a bigain method."""
    name, _, rest = spec.partition(":")
    if name.strip().lower() != "tomesd":
        return None
    return float(parse_method("tome:" + rest).ratio)  # type: ignore[attr-defined]


def build_variants(
    specs: Sequence[str], device: torch.device, triton_mode: str, add_tomesd: bool, tomesd_level: int = 1
) -> list[Variant]:
    """Parse ``--methods``. ``tomesd:ratio=0.7`` is the external reference; with ``add_tomesd`` (a model
    tomesd patches: :func:`bigain.bench.models.tomesd_supported`) it is added for every ToMe/L-GTM ratio."""
    out: list[Variant] = []
    ratios: list[float] = []
    for spec in specs:
        r = tomesd_ratio(spec)
        if r is not None:
            out.append(tomesd_variant(r, tomesd_level))
            continue
        m = parse_method(spec)
        paths = ["torch"]
        if device.type == "cuda" and uses_triton(m) and triton_mode != "off":
            paths = ["torch", "triton"] if triton_mode == "both" else ["triton"]
        for p in paths:
            label = m.label() + (f" [{p}]" if device.type == "cuda" and uses_triton(m) else "")
            out.append(Variant(f"{spec}@{p}", label, m, p, ratio_of(m)))
        if m.name in ("tome", "lgtm") and ratio_of(m) is not None:
            ratios.append(float(m.ratio))  # type: ignore[attr-defined]
    if add_tomesd:
        have = {v.ratio for v in out if v.method is None}
        out += [tomesd_variant(r, tomesd_level) for r in dict.fromkeys(ratios) if r not in have]
    if not any(v.method is not None and v.method.name == "baseline" for v in out):
        out.insert(0, Variant("baseline@torch", "Baseline", Baseline(), "torch"))
    return out


def mode_variants(variants: Sequence[Variant], mode: str) -> list[Variant]:
    """The variants that differ in ``mode``: compiled code never takes the fused Triton path
    (inductor generates its own kernels), so a compiled method runs once, on the torch path."""
    if mode != "compile":
        return list(variants)
    out: list[Variant] = []
    seen: set[str] = set()
    for v in variants:
        if v.method is None:
            out.append(v)
        elif v.flops_key not in seen:
            seen.add(v.flops_key)
            out.append(Variant(f"{v.flops_key}@torch", v.method.label(), v.method, "torch", v.ratio, v.params))
    return out


def tomesd_copy(net: torch.nn.Module, v: Variant) -> torch.nn.Module:
    """A copy of the plain (unpatched) model, patched once by tomesd at the variant's settings."""
    import tomesd

    if patch.is_patched(net):
        raise RuntimeError("bigain: copy the model for tomesd before bigain patches it")
    twin = copy.deepcopy(net)
    tomesd.apply_patch(twin, ratio=v.ratio, **v.params)
    return twin


class Denoisers:
    """The models the variants run on: ``net``, patched once by bigain (every bigain method, selected
    by switching its default method), and one tomesd-patched copy per tomesd variant, each copied
    from the plain model before bigain patches it. Executors are cached per model, mode and (for
    CUDA graphs, which capture the path) fused path."""

    def __init__(
        self, net: torch.nn.Module, variants: Sequence[Variant], blocks: tuple[int, ...] | None = None
    ) -> None:
        patch.remove(net)
        self.copies = {v.key: tomesd_copy(net, v) for v in variants if v.method is None}
        patch.apply(net, Baseline(), blocks=blocks)
        self.net = net
        self._executors: dict[tuple[str, str, str], Executor] = {}

    def model(self, v: Variant) -> torch.nn.Module:
        return self.copies.get(v.key, self.net)

    def select(self, v: Variant, seed: int) -> None:
        """Make ``v`` the behaviour of its model for the next calls (untimed): the method, its seed
        (ToMe's random destinations; also restarts the cached-assignment schedule) and the path."""
        fused.set_allowed(v.path == "triton")
        if v.method is not None:
            patch.apply(self.net, v.method)
            patch.seed(self.net, seed)

    def forget(self, mode: str) -> None:
        """Drop the executors of ``mode`` (their CUDA graphs and memory pools, compiled code)."""
        for key in [k for k in self._executors if k[2] == mode]:
            del self._executors[key]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def executor(self, v: Variant, mode: str) -> Executor:
        key = (v.key if v.method is None else "bigain", v.path if mode == "cudagraph" else "", mode)
        ex = self._executors.get(key)
        if ex is None:
            ex = self._executors[key] = Executor(self.model(v), mode)
        return ex

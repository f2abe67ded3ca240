"""The compression methods, as data: frozen, validated dataclasses with the paper's defaults.

Every method turns one self-attention call (:class:`AttnCall`) into a :class:`Plan`: the
tokens the queries see, the tokens keys/values are computed from, and how to bring the
output back to N tokens. Patching (``bigain.patch``) only runs plans; it never asks which
method it has.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch

from bigain.ops import triton as fused  # torch ops, or fused kernels for CUDA tensors
from bigain.ops.kv import alpha_at
from bigain.ops.merge import Merge, bipartite_merge, destination_slots, slots_to_index

#: DiT blocks compressed by the paper's scripts (0-indexed), filtered to those that exist.
PAPER_DIT_BLOCKS: tuple[int, ...] = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)
MAX_DOWNSAMPLES = (1, 2, 4, 8)
MAX_FACTOR = 8


@dataclass
class AttnCall:
    """What a method may look at in one self-attention call.

    x: (B, N, C) attention input; metric: (B, N, C) tokens that drive merging (SD: the block
    input, DiT: the modulated attention input); (h, w): the token grid; t: (B,) timesteps or
    None; generator: returns the random generator for ToMe's destinations.
    """

    x: torch.Tensor
    metric: torch.Tensor
    h: int
    w: int
    t: torch.Tensor | None
    generator: Callable[[], torch.Generator]


@dataclass
class Plan:
    """How to run one attention call: q tokens (B, Nq, C), kv tokens (B, Nkv, C) or None
    (= q), and ``unmerge`` mapping the (B, Nq, C) output back to (B, N, C)."""

    q: torch.Tensor
    kv: torch.Tensor | None = None
    unmerge: Callable[[torch.Tensor], torch.Tensor] | None = None
    merge: Merge | None = None
    scores: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_kv(self) -> int:
        return (self.kv if self.kv is not None else self.q).shape[1]


def _fail(method: str, arg: str, allowed: str, got: object) -> ValueError:
    return ValueError(f"{method}: {arg} must be {allowed}, got {got!r}")


@dataclass(frozen=True)
class Method:
    """Base class. ``max_downsample`` picks U-Net levels (1 = highest resolution only);
    ``blocks`` picks DiT blocks (None = the model's default, the paper's 1–5 and 7–11)."""

    name: ClassVar[str] = "method"
    title: ClassVar[str] = "Method"
    compresses: ClassVar[bool] = True

    max_downsample: int = 1
    blocks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_downsample not in MAX_DOWNSAMPLES:
            raise _fail(self.title, "max_downsample", f"one of {MAX_DOWNSAMPLES}", self.max_downsample)
        if self.blocks is not None:
            blocks = tuple(self.blocks)
            if not blocks or any(not isinstance(b, int) or b < 0 for b in blocks):
                raise _fail(self.title, "blocks", "a non-empty tuple of block indices ≥ 0", self.blocks)
            object.__setattr__(self, "blocks", tuple(sorted(set(blocks))))

    def plan(self, call: AttnCall) -> Plan:
        return Plan(q=call.x)

    def params(self) -> dict[str, Any]:
        """Constructor arguments, for JSON records and the UI."""
        return asdict(self)

    def label(self) -> str:
        return self.title


@dataclass(frozen=True)
class Baseline(Method):
    """No compression: the model's own attention, bit for bit."""

    name: ClassVar[str] = "baseline"
    title: ClassVar[str] = "Baseline"
    compresses: ClassVar[bool] = False


def _check_stride(title: str, ratio: float, sx: int, sy: int) -> None:
    for arg, v in (("sx", sx), ("sy", sy)):
        if not isinstance(v, int) or not 1 <= v <= 8:
            raise _fail(title, arg, "an integer in [1, 8]", v)
    if sx * sy < 2:
        raise _fail(title, "sx·sy", "at least 2 (one destination per cell)", sx * sy)
    cap = 1 - 1 / (sx * sy)
    if not isinstance(ratio, (int, float)) or not 0 <= ratio <= cap + 1e-12:
        raise _fail(title, "ratio", f"in [0, {cap:g}] for a {sx}x{sy} stride", ratio)


@dataclass(frozen=True)
class ToMe(Method):
    """Token merging for SD (Bolya & Hoffman, tomesd): random destination per sx×sy cell,
    one pattern per batch, top-left when ``use_rand`` is off or the batch is odd."""

    name: ClassVar[str] = "tome"
    title: ClassVar[str] = "ToMe"

    ratio: float = 0.5
    sx: int = 2
    sy: int = 2
    use_rand: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_stride(self.title, self.ratio, self.sx, self.sy)

    def destinations(self, call: AttnCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Slots (B', hs, ws) and the scores that chose them (None here)."""
        rand = self.use_rand and call.x.shape[0] % 2 == 0
        mode = "random" if rand else "top-left"
        gen = call.generator() if rand else None
        return destination_slots(call.h, call.w, self.sx, self.sy, mode, generator=gen, device=call.x.device), None

    def plan(self, call: AttnCall) -> Plan:
        if self.ratio == 0 or call.h < self.sy or call.w < self.sx:
            return Plan(q=call.x)
        slots, scores = self.destinations(call)
        m = bipartite_merge(call.metric, slots_to_index(slots, call.h, call.w, self.sx, self.sy), self.ratio)
        return Plan(q=m.merge(call.x), unmerge=m.unmerge, merge=m, scores=scores)

    def label(self) -> str:
        return f"{self.title} r={self.ratio:g}"


@dataclass(frozen=True)
class LGTM(ToMe):
    """L-GTM, Laplacian-gated token merging (BiGain_TM): in every sx×sy cell the token with
    the lowest Laplacian ℓ1 energy (the smoothest) becomes the destination, so merges land
    on low-frequency anchors and high-contrast tokens are never destinations.

    ``dst="laplacian"`` is the paper; ``"laplacian-code"`` reproduces the released code's
    1×4 grouping quirk (method doc §I.1)."""

    name: ClassVar[str] = "lgtm"
    title: ClassVar[str] = "L-GTM"
    DST: ClassVar[tuple[str, ...]] = ("laplacian", "laplacian-code")

    ratio: float = 0.7
    dst: str = "laplacian"
    use_rand: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dst not in self.DST:
            raise _fail(self.title, "dst", f"one of {self.DST}", self.dst)

    def destinations(self, call: AttnCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        return fused.laplacian_slots(call.metric, call.h, call.w, self.sx, self.sy, self.dst)


@dataclass(frozen=True)
class IEKVD(Method):
    """IE-KVD, interpolate–extrapolate KV downsampling (BiGain_TD): keys/values come from
    α·nearest + (1 − α)·average over factor×factor cells; queries keep full resolution.
    ``alpha_end`` set → α goes linearly from ``alpha`` at t = 999 to ``alpha_end`` at t = 0
    (paper, generation: 0.8 → 1.2). No compression at t = 0, as in the paper's code."""

    name: ClassVar[str] = "iekvd"
    title: ClassVar[str] = "IE-KVD"

    factor: int = 2
    alpha: float = 0.9
    alpha_end: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.factor, int) or isinstance(self.factor, bool) or not 2 <= self.factor <= MAX_FACTOR:
            raise _fail(self.title, "factor", f"an integer in [2, {MAX_FACTOR}]", self.factor)
        for arg in ("alpha", "alpha_end"):
            v = getattr(self, arg)
            if v is None and arg == "alpha_end":
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise _fail(self.title, arg, "a finite real number", v)

    def plan(self, call: AttnCall) -> Plan:
        if call.h < self.factor or call.w < self.factor:
            return Plan(q=call.x)
        if call.t is not None and bool((call.t == 0).all()):
            return Plan(q=call.x)  # the last denoising step runs at full resolution
        if self.alpha_end is None or call.t is None:
            alpha: float | torch.Tensor = float(self.alpha)
        else:
            alpha = alpha_at(call.t, self.alpha, self.alpha_end)
        kv = fused.kv_downsample(call.x, call.h, call.w, self.factor, alpha)
        shown = alpha if isinstance(alpha, torch.Tensor) else torch.tensor([alpha])
        return Plan(q=call.x, kv=kv, alpha=shown)

    def label(self) -> str:
        a = f"{self.alpha:g}" if self.alpha_end is None else f"{self.alpha:g}→{self.alpha_end:g}"
        return f"{self.title} s={self.factor} α={a}"


@dataclass(frozen=True)
class ToDo(IEKVD):
    """ToDo (Smith et al. 2024): keys/values from nearest-exact downsampling, i.e. IE-KVD with α ≡ 1."""

    name: ClassVar[str] = "todo"
    title: ClassVar[str] = "ToDo"

    alpha: float = field(default=1.0, init=False)
    alpha_end: float | None = field(default=None, init=False)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k not in ("alpha", "alpha_end")}

    def label(self) -> str:
        return f"{self.title} s={self.factor}"


#: name → class; the only place that lists the methods.
METHODS: dict[str, type[Method]] = {m.name: m for m in (Baseline, ToMe, LGTM, ToDo, IEKVD)}


def make_method(name: str, **params: Any) -> Method:
    """Build a method from its registry name and keyword arguments (validated)."""
    cls = METHODS.get(name.lower().replace("-", ""))
    if cls is None:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    allowed = {f.name for f in fields(cls) if f.init}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"{cls.title} takes {sorted(allowed)}, not {sorted(unknown)}")
    return cls(**params)


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if "," in text or text.startswith("("):
        return tuple(int(v) for v in text.strip("()").split(",") if v)
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_method(spec: str) -> Method:
    """Parse ``"name"`` or ``"name:key=value;key=value"``, e.g. ``"iekvd:alpha=0.8;alpha_end=1.2"``."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(";")):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"method option {item!r} is not key=value")
        params[key.strip()] = _value(val.strip())
    return make_method(name.strip(), **params)

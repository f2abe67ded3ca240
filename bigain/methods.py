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
from bigain.ops.kv import alpha_at, alpha_weight
from bigain.ops.merge import Merge, cell_positions, constant, grid_cells, match, slots_to_index, split_order
from bigain.ops.rng import draw

#: DiT blocks compressed by the paper's scripts (0-indexed), filtered to those that exist.
PAPER_DIT_BLOCKS: tuple[int, ...] = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)
MAX_DOWNSAMPLES = (1, 2, 4, 8)
MAX_FACTOR = 8
REUSE = ("off", "call", "steps")


@dataclass
class CallInfo:
    """One denoiser call, as the model's pre-hook saw it (built once per call, read by every layer).

    hw: latent (H, W); t: (B,) or 0-d timesteps tensor or None; final: the host decided this is
    a t = 0 step; recompute: cached assignments must be rebuilt (new batch or schedule);
    shared: what the method computed once for the call (:meth:`Method.prepare`: α, random
    destinations); cache: merges reused inside this call; steps: merges kept across calls
    (per model and thread); key: the (1,) int64 state of the random destinations."""

    hw: tuple[int, int]
    t: torch.Tensor | float | None
    batch: int
    dtype: torch.dtype
    final: bool
    recompute: bool
    key: torch.Tensor
    grids: dict[int, tuple[int, int]]
    shared: dict[Any, Any] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)
    steps: dict[Any, Any] = field(default_factory=dict)
    prepared: bool = False


@dataclass
class AttnCall:
    """What a method may look at in one self-attention call.

    x: (B, N, C) attention input; metric: (B, N, C) tokens that drive merging (SD: the block
    input, DiT: the modulated attention input); (h, w): the token grid; target: the index of
    this layer among the model's targets; info: the call it belongs to."""

    x: torch.Tensor
    metric: torch.Tensor
    h: int
    w: int
    target: int
    info: CallInfo

    @property
    def t(self) -> torch.Tensor | float | None:
        return self.info.t


@dataclass
class Plan:
    """How to run one attention call: q tokens (B, Nq, C), kv tokens (B, Nkv, C) or None
    (= q), and ``unmerge`` mapping the (B, Nq, C) output back to (B, N, C)."""

    q: torch.Tensor
    kv: torch.Tensor | None = None
    unmerge: Callable[[torch.Tensor], torch.Tensor] | None = None
    merge: Merge | None = None
    scores: torch.Tensor | None = None
    alpha: torch.Tensor | float | None = None

    @property
    def n_kv(self) -> int:
        return (self.kv if self.kv is not None else self.q).shape[1]


QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None, Plan]


def _fail(method: str, arg: str, allowed: str, got: object) -> ValueError:
    return ValueError(f"{method}: {arg} must be {allowed}, got {got!r}")


@dataclass(frozen=True)
class Method:
    """Base class. ``max_downsample`` picks U-Net levels (None = the backbone's default, the
    highest-resolution level with self-attention; 1 = full resolution only); ``blocks`` picks
    transformer blocks (None = the model's default, the paper's 1–5 and 7–11).

    A method sees each denoiser call twice: :meth:`prepare` once per call (the model's
    pre-hook: what every layer shares, e.g. α or the random destinations) and :meth:`plan`
    once per compressed layer. Both run inside the compiled/captured graph, so neither may
    read a tensor on the host; host decisions arrive as ``CallInfo.final``/``recompute``."""

    name: ClassVar[str] = "method"
    title: ClassVar[str] = "Method"
    compresses: ClassVar[bool] = True
    skips_final_step: ClassVar[bool] = False  # runs uncompressed at t = 0 (the host decides)

    max_downsample: int | None = None
    blocks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_downsample is not None and self.max_downsample not in MAX_DOWNSAMPLES:
            raise _fail(self.title, "max_downsample", f"one of {MAX_DOWNSAMPLES}", self.max_downsample)
        if self.blocks is not None:
            blocks = tuple(self.blocks)
            if not blocks or any(not isinstance(b, int) or isinstance(b, bool) or b < 0 for b in blocks):
                raise _fail(self.title, "blocks", "a non-empty tuple of block indices ≥ 0", self.blocks)
            object.__setattr__(self, "blocks", tuple(sorted(set(blocks))))

    @property
    def reuse_every(self) -> int:
        """Calls between two matchings when assignments are reused across steps (1: every call)."""
        return 1

    def prepare(self, info: CallInfo) -> None:
        """Compute what every layer of this call shares into ``info.shared`` (default: nothing)."""

    def plan(self, call: AttnCall) -> Plan:
        return Plan(q=call.x)

    def plan_qkv(self, call: AttnCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> QKV:
        """Joint attention (method doc §K): the same compression on the image tokens' projected
        q, k, v (B, N, C'), after positions are applied. Returns (q, k, v, unmerge or None, plan)."""
        return q, k, v, None, Plan(q=q)

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
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 8:
            raise _fail(title, arg, "an integer in [1, 8]", v)
    if sx * sy < 2:
        raise _fail(title, "sx·sy", "at least 2 (one destination per cell)", sx * sy)
    cap = 1 - 1 / (sx * sy)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= cap + 1e-12:
        raise _fail(title, "ratio", f"in [0, {cap:g}] for a {sx}x{sy} stride", ratio)


@dataclass(frozen=True)
class ToMe(Method):
    """Token merging for SD (Bolya & Hoffman, tomesd): random destination per sx×sy cell,
    one pattern per batch, top-left when ``use_rand`` is off or the batch is odd.

    ``reuse`` caches the assignment (method doc §L), off by default: ``"call"`` computes it
    once per token grid in a denoiser call and reuses it in the other layers on that grid
    (BiGain's cached-assignment merge); ``"steps"`` keeps each layer's assignment for
    ``every`` consecutive calls while batch and grid are unchanged (generation)."""

    name: ClassVar[str] = "tome"
    title: ClassVar[str] = "ToMe"

    ratio: float = 0.5
    sx: int = 2
    sy: int = 2
    use_rand: bool = True
    reuse: str = "off"
    every: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_stride(self.title, self.ratio, self.sx, self.sy)
        if self.reuse not in REUSE:
            raise _fail(self.title, "reuse", f"one of {REUSE}", self.reuse)
        if not isinstance(self.every, int) or isinstance(self.every, bool) or not 1 <= self.every <= 100:
            raise _fail(self.title, "every", "an integer in [1, 100]", self.every)

    @property
    def reuse_every(self) -> int:
        return self.every if self.reuse == "steps" else 1

    def _random(self, batch: int) -> bool:
        return self.use_rand and batch % 2 == 0

    def prepare(self, info: CallInfo) -> None:
        if self.ratio == 0 or not self._random(info.batch):
            return
        if self.reuse == "steps" and not info.recompute and info.steps:
            return  # every layer reuses its assignment: no destinations to draw
        grids = {t: g for t, g in info.grids.items() if g[0] >= self.sy and g[1] >= self.sx}
        if grids:
            info.shared["orders"] = random_orders(grids, self.sx, self.sy, info.key)

    def order(self, call: AttnCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The split (B', N) (sources first, then the Nd destinations) and the scores behind it."""
        if self._random(call.x.shape[0]):
            orders = call.info.shared.get("orders")
            if orders is not None and call.target in orders:
                return orders[call.target], None
            return random_orders({0: (call.h, call.w)}, self.sx, self.sy, call.info.key)[0], None
        return top_left_order(call.h, call.w, self.sx, self.sy, call.x.device), None

    def plan(self, call: AttnCall) -> Plan:
        if self.ratio == 0 or call.h < self.sy or call.w < self.sx:
            return Plan(q=call.x)
        m, scores = self._assignment(call)
        return Plan(q=m.merge(call.x), unmerge=m.unmerge, merge=m, scores=scores)

    def plan_qkv(self, call: AttnCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> QKV:
        if self.ratio == 0 or call.h < self.sy or call.w < self.sx:
            return q, k, v, None, Plan(q=q)
        m, scores = self._assignment(call)
        mq = m.merge(q)
        return mq, m.merge(k), m.merge(v), m.unmerge, Plan(q=mq, unmerge=m.unmerge, merge=m, scores=scores)

    def _assignment(self, call: AttnCall) -> tuple[Merge, torch.Tensor | None]:
        b = call.x.shape[0]
        if self.reuse == "call":
            key: Any = ("grid", b, call.h, call.w)
            store = call.info.cache
        else:
            key, store = (call.target, b, call.h, call.w), call.info.steps
        if self.reuse != "off":
            hit = store.get(key)
            if hit is not None and (self.reuse == "call" or not call.info.recompute):
                return hit, None
        order, scores = self.order(call)
        nd = grid_cells(call.h, call.w, self.sx, self.sy)
        m = match(call.metric, order, nd[0] * nd[1], self.ratio)
        if self.reuse != "off":
            store[key] = m
        return m, scores

    def label(self) -> str:
        extra = {"off": "", "call": " cached/call", "steps": f" cached/{self.every} steps"}[self.reuse]
        return f"{self.title} r={self.ratio:g}{extra}"


def random_orders(grids: dict[int, tuple[int, int]], sx: int, sy: int, key: torch.Tensor) -> dict[int, torch.Tensor]:
    """A random destination per cell for every target (tomesd's rule, one pattern per batch), drawn
    once per call for all targets that share a grid: target → split order (1, N)."""
    out: dict[int, torch.Tensor] = {}
    by_grid: dict[tuple[int, int], list[int]] = {}
    for target, g in grids.items():
        by_grid.setdefault(g, []).append(target)
    for (h, w), targets in by_grid.items():
        hs, ws = grid_cells(h, w, sx, sy)
        shape = (len(targets), hs * ws)  # one id per (target, cell): distinct draws per layer
        ids = constant(
            ("rng-ids", *shape, key.device), lambda s=shape: torch.arange(s[0] * s[1], device=key.device).view(s)
        )
        slots = draw(key, ids) % (sx * sy)
        orders = split_order(slots_to_index(slots, h, w, sx, sy), h * w)  # (T, N)
        for i, target in enumerate(targets):
            out[target] = orders[i : i + 1]
    return out


def top_left_order(h: int, w: int, sx: int, sy: int, device: torch.device) -> torch.Tensor:
    """The split (1, N) of tomesd's ``use_rand=False`` (slot 0 of every cell): a constant per grid."""

    def make() -> torch.Tensor:
        return split_order(cell_positions(h, w, sx, sy, device)[:, :1].T.contiguous(), h * w)

    return constant(("top-left", h, w, sx, sy, device), make)


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

    def prepare(self, info: CallInfo) -> None:
        return None  # destinations depend on each layer's tokens

    def order(self, call: AttnCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        slots, scores = fused.laplacian_slots(call.metric, call.h, call.w, self.sx, self.sy, self.dst)
        dst = slots_to_index(slots, call.h, call.w, self.sx, self.sy)
        return split_order(dst, call.h * call.w), scores


@dataclass(frozen=True)
class IEKVD(Method):
    """IE-KVD, interpolate–extrapolate KV downsampling (BiGain_TD): keys/values come from
    α·nearest + (1 − α)·average over factor×factor cells; queries keep full resolution.
    ``alpha_end`` set → α goes linearly from ``alpha`` at t = 999 to ``alpha_end`` at t = 0
    (paper, generation: 0.8 → 1.2), computed once per denoiser call. No compression at
    t = 0, as in the paper's code; the host decides it (``CallInfo.final``)."""

    name: ClassVar[str] = "iekvd"
    title: ClassVar[str] = "IE-KVD"
    skips_final_step: ClassVar[bool] = True

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
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise _fail(self.title, arg, "a finite real number", v)

    def prepare(self, info: CallInfo) -> None:
        if self.alpha_end is None or info.t is None or info.final:
            return
        alpha = alpha_at(info.t, self.alpha, self.alpha_end)  # a host number t gives a number
        weight = alpha_weight(alpha, info.dtype) if isinstance(alpha, torch.Tensor) else alpha
        info.shared["alpha"] = alpha, weight

    def plan(self, call: AttnCall) -> Plan:
        if call.h < self.factor or call.w < self.factor or call.info.final:
            return Plan(q=call.x)  # the last denoising step runs at full resolution
        alpha, weight = self._alpha(call, call.x.dtype)
        return Plan(q=call.x, kv=fused.kv_downsample(call.x, call.h, call.w, self.factor, weight), alpha=alpha)

    def plan_qkv(self, call: AttnCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> QKV:
        if call.h < self.factor or call.w < self.factor or call.info.final:
            return q, k, v, None, Plan(q=q)
        alpha, weight = self._alpha(call, k.dtype)
        dk, dv = (fused.kv_downsample(t, call.h, call.w, self.factor, weight) for t in (k, v))
        return q, dk, dv, None, Plan(q=q, kv=dk, alpha=alpha)

    def _alpha(self, call: AttnCall, dtype: torch.dtype) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """(α for records, the lerp weight): the call's scheduled α (computed once per call) or the constant."""
        if "alpha" not in call.info.shared:
            return float(self.alpha), float(self.alpha)
        alpha, weight = call.info.shared["alpha"]
        if isinstance(weight, torch.Tensor) and weight.dtype != dtype:
            weight = alpha_weight(alpha, dtype)
        return alpha, weight

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

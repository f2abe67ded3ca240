"""The compression methods, as data: frozen, validated dataclasses with the paper's defaults.

Every method turns one self-attention call (:class:`AttnCall`) into a :class:`Plan`: the
tokens the queries see, the tokens keys/values are computed from, and how to bring the
output back to N tokens. Patching (``bigain.patch``) only runs plans; it never asks which
method it has.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import torch

from bigain.errors import BadInput, BadType, excerpt
from bigain.ops import fused  # torch ops, or fused kernels for CUDA tensors
from bigain.ops.kv import alpha_at, alpha_weight
from bigain.ops.kv_select import select_kv_index
from bigain.ops.laplacian import laplacian_score
from bigain.ops.merge import (
    Merge,
    cell_positions,
    constant,
    destination_slots,
    grid_cells,
    match,
    slots_to_index,
    split_order,
)
from bigain.ops.rng import draw
from bigain.ops.scorers import SCORERS, token_score
from bigain.ops.sito import SiToPlan, sito_plan

#: DiT blocks compressed by the paper's scripts (0-indexed), filtered to those that exist.
PAPER_DIT_BLOCKS: tuple[int, ...] = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)
MAX_DOWNSAMPLES = (1, 2, 4, 8)
MAX_FACTOR = 8
REUSE = ("off", "call", "steps")
#: a call that applies kept merge assignments (reuse="steps") instead of matching
REUSE_BUDGET = (12, 6)
DST = ("laplacian", "laplacian-code")


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
    t_scale: float = 1.0  # Flux passes t / 1000: scaled only where a method reads t (no op otherwise)

    @property
    def timestep(self) -> torch.Tensor | float | None:
        """The timesteps on the 999 → 0 scale (one element-wise op for a rescaled tensor, where asked)."""
        if self.t is None or self.t_scale == 1:
            return self.t
        return self.t * self.t_scale


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
        return self.info.timestep


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


def _fail(method: str, arg: str, allowed: str, got: object) -> BadInput:
    return BadInput(f"{method}: {arg} must be {allowed}, got {got!r}")


@dataclass(frozen=True)
class Param:
    """One declared parameter of a method: what the app, the CLI, the benchmark and the evaluations
    build their knobs and validation from. ``kind``: float, int, bool, str or tuple; ``lo``/``hi``:
    the allowed range (numbers); ``choices``: the allowed values (str); ``optional``: None allowed
    (meaning "the default behaviour", see ``help``); ``knob``: shown in the app's settings."""

    name: str
    kind: type
    default: Any
    label: str
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    knob: bool = True

    def allowed(self) -> str:
        """The allowed values in words (for error messages and help texts)."""
        if self.choices is not None:
            text = f"one of {self.choices}"
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is tuple:
            text = "a tuple of integers"
        else:
            what = "an integer" if self.kind is int else "a number"
            text = f"{what} in [{self.lo:g}, {self.hi:g}]" if self.lo is not None and self.hi is not None else what
        return text + (" or None" if self.optional else "")

    def check(self, title: str, v: Any) -> None:
        """Raise a ValueError naming the method, the parameter and the allowed values unless ``v`` fits.
        Types are checked, not coerced (True is not 1, 2.5 is not an integer)."""
        if v is None and self.optional:
            return
        ok = {
            bool: isinstance(v, bool),
            int: isinstance(v, int) and not isinstance(v, bool),
            float: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
            str: isinstance(v, str),
            tuple: isinstance(v, tuple),
        }[self.kind]
        if ok and self.choices is not None:
            ok = v in self.choices
        if ok and self.kind in (int, float):
            ok = (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)
        if not ok:
            raise _fail(title, self.name, self.allowed(), v)


def param(default: Any, label: str, help: str = "", *, kind: type | None = None, **spec: Any) -> Any:
    """A dataclass field that declares a :class:`Param` (its name is the field's)."""
    kind = kind or (type(default) if default is not None else float)
    return field(default=default, metadata={"param": Param("", kind, default, label, help, **spec)})


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
    #: (ATen ops, kernel ops) one compressed layer may add over the unpatched model on a call that
    #: computes its plan (None: no budget); host syncs and host-to-device copies: 0 for every method.
    #: Checked by tests/test_capture.py and ``python -m bigain.bench count``.
    ops_budget: ClassVar[tuple[int | None, int | None]] = (None, None)

    max_downsample: int | None = param(
        None,
        "U-Net levels (max downsample)",
        "compress U-Net levels up to this downsample (None: the highest-resolution level with attention)",
        kind=int,
        choices=MAX_DOWNSAMPLES,
        optional=True,
        knob=False,
    )
    blocks: tuple[int, ...] | None = param(
        None, "Transformer blocks", "block indices (None: the paper's 1–5, 7–11)", kind=tuple, optional=True, knob=False
    )

    @classmethod
    def parameters(cls) -> list[Param]:
        """The declared parameters, in field order, with this class's defaults."""
        out = []
        for f in fields(cls):
            meta = next((c.__dataclass_fields__[f.name].metadata.get("param") for c in cls.__mro__
                         if f.name in getattr(c, "__dataclass_fields__", {})
                         and "param" in c.__dataclass_fields__[f.name].metadata), None)  # fmt: skip
            if f.init and meta is not None:
                out.append(replace(meta, name=f.name, default=f.default))
        return out

    def __post_init__(self) -> None:
        for p in self.parameters():
            p.check(self.title, getattr(self, p.name))
        if self.blocks is not None:
            blocks = tuple(self.blocks)
            if not blocks or any(not isinstance(b, int) or isinstance(b, bool) or b < 0 for b in blocks):
                raise _fail(self.title, "blocks", "a non-empty tuple of block indices ≥ 0", self.blocks)
            object.__setattr__(self, "blocks", tuple(sorted(set(blocks))))

    @property
    def reuse_every(self) -> int:
        """Calls between two matchings when assignments are reused across steps (1: every call)."""
        return 1

    def budget(self, call: str = "matching") -> tuple[int | None, int | None]:
        """The op budget of a call that computes the plan ("matching") or reuses kept assignments ("reuse")."""
        return REUSE_BUDGET if call == "reuse" else self.ops_budget

    def has_kernels(self) -> bool:
        """Whether this method's path runs a fused Triton kernel of :mod:`bigain.ops.fused` on CUDA (the
        benchmarks time those methods with the kernels on and off; ``kernels`` says it per class)."""
        return self.kernels

    #: whether the class's plans go through :mod:`bigain.ops.fused` (an instance may say otherwise)
    kernels: ClassVar[bool] = False
    #: one of BiGain's own operators (L-GTM, IE-KVD), not a baseline: what the app features first
    bigain: ClassVar[bool] = False

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
    ops_budget: ClassVar[tuple[int | None, int | None]] = (0, 0)  # exactly the unpatched model
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
    ops_budget: ClassVar[tuple[int | None, int | None]] = (42, 24)
    kernels: ClassVar[bool] = True  # fused.row_max (and L-GTM's fused.laplacian_slots)

    ratio: float = param(0.5, "Merge ratio", "fraction of tokens merged away (at most 1 − 1/(sx·sy))", lo=0, hi=0.98)
    sx: int = param(2, "Stride x", "cell width: one destination per sx×sy cell", lo=1, hi=8)
    sy: int = param(2, "Stride y", "cell height", lo=1, hi=8)
    use_rand: bool = param(True, "Random destinations", "tomesd's random destination per cell (else top-left)")
    reuse: str = param("off", "Cached assignments", "off, once per call, or kept for `every` steps", choices=REUSE)
    every: int = param(3, "Reuse every", "calls between two matchings with reuse='steps'", lo=1, hi=100)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_stride(self.title, self.ratio, self.sx, self.sy)

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
        m = match(call.metric, order, nd[0] * nd[1], self.ratio, best=fused.row_max)
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
    1×4 grouping quirk (method doc §I.1). ``scorer`` swaps the Laplacian ℓ1 for one of the paper's
    ablation scores (Table 8, :mod:`bigain.ops.scorers`)."""

    name: ClassVar[str] = "lgtm"
    title: ClassVar[str] = "L-GTM"
    ops_budget: ClassVar[tuple[int | None, int | None]] = (48, 28)  # every scorer of Table 8 fits it
    bigain: ClassVar[bool] = True

    ratio: float = 0.7
    dst: str = param("laplacian", "Destination layout", "the paper, or the released code's 1×4 quirk", choices=DST)
    scorer: str = param(
        "laplacian",
        "Token scorer",
        "the destination score (Table 8): the lowest-scoring token of a cell becomes its destination",
        choices=tuple(SCORERS),
    )
    use_rand: bool = field(default=False, init=False)  # destinations come from the scores

    def prepare(self, info: CallInfo) -> None:
        return None  # destinations depend on each layer's tokens

    def order(self, call: AttnCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.scorer == "laplacian":
            slots, scores = fused.laplacian_slots(call.metric, call.h, call.w, self.sx, self.sy, self.dst)
        else:
            scores = token_score(call.metric, call.h, call.w, self.scorer)
            slots = destination_slots(call.h, call.w, self.sx, self.sy, self.dst, scores=scores)
        dst = slots_to_index(slots, call.h, call.w, self.sx, self.sy)
        return split_order(dst, call.h * call.w), scores

    def label(self) -> str:
        base = super().label()
        return base if self.scorer == "laplacian" else f"{base} [{self.scorer}]"


@dataclass(frozen=True)
class IEKVD(Method):
    """IE-KVD, interpolate–extrapolate KV downsampling (BiGain_TD): keys/values come from
    α·nearest + (1 − α)·average over factor×factor cells; queries keep full resolution.
    ``alpha_end`` set → α goes linearly from ``alpha`` at t = 999 to ``alpha_end`` at t = 0
    (paper, generation: 0.8 → 1.2), computed once per denoiser call. No compression at
    t = 0, as in the paper's code; the host decides it (``CallInfo.final``)."""

    name: ClassVar[str] = "iekvd"
    title: ClassVar[str] = "IE-KVD"
    ops_budget: ClassVar[tuple[int | None, int | None]] = (10, None)
    skips_final_step: ClassVar[bool] = True
    kernels: ClassVar[bool] = True  # fused.kv_downsample
    bigain: ClassVar[bool] = True

    def has_kernels(self) -> bool:  # α ∈ {0, 1} constant is plain pooling / striding: no kernel
        return not (self.alpha_end is None and self.alpha in (0, 1))

    factor: int = param(2, "KV stride", "keys/values from factor×factor cells", lo=2, hi=MAX_FACTOR)
    alpha: float = param(0.9, "α (nearest weight)", "1: nearest (ToDo), 0: average, >1 extrapolates", lo=-2, hi=3)
    alpha_end: float | None = param(
        None, "α at t = 0", "α goes linearly from `alpha` at t = 999 to this at t = 0 (None: constant)", lo=-2, hi=3,
        optional=True,
    )  # fmt: skip

    def budget(self, call: str = "matching") -> tuple[int | None, int | None]:
        return (12, None) if self.alpha_end is not None and call == "matching" else super().budget(call)

    def prepare(self, info: CallInfo) -> None:
        if self.alpha_end is None or info.t is None or info.final:
            return
        alpha = alpha_at(info.timestep, self.alpha, self.alpha_end)  # a host number t gives a number
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
    ops_budget: ClassVar[tuple[int | None, int | None]] = (5, None)
    bigain: ClassVar[bool] = False  # the baseline IE-KVD is compared with

    alpha: float = field(default=1.0, init=False)
    alpha_end: float | None = field(default=None, init=False)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k not in ("alpha", "alpha_end")}

    def label(self) -> str:
        return f"{self.title} s={self.factor}"


@dataclass(frozen=True)
class FreqKV(Method):
    """Frequency-selected keys/values (the paper's Table 12 ablation): from every factor×factor cell
    keys/values keep the one token with the highest (``keep="high"``) or lowest (``"low"``) Laplacian
    ℓ1 score; queries keep full resolution. Either extreme drops a band ("balanced spectral retention",
    which IE-KVD's blend keeps). Border cells that the grid cuts choose among the tokens they have."""

    name: ClassVar[str] = "freqkv"
    title: ClassVar[str] = "Freq-KV"
    ops_budget: ClassVar[tuple[int | None, int | None]] = (12, 6)
    factor: int = param(2, "KV stride", "one key/value token per factor×factor cell", lo=2, hi=MAX_FACTOR)
    keep: str = param("high", "Keep", "the cell's highest- or lowest-frequency token", choices=("high", "low"))

    def _index(self, call: AttnCall) -> tuple[torch.Tensor, torch.Tensor]:
        scores = laplacian_score(call.metric, call.h, call.w)
        return select_kv_index(scores, call.h, call.w, self.factor, self.keep == "high"), scores

    def plan(self, call: AttnCall) -> Plan:
        if call.h < self.factor or call.w < self.factor:
            return Plan(q=call.x)
        idx, scores = self._index(call)
        return Plan(q=call.x, kv=_gather(call.x, idx), scores=scores)

    def plan_qkv(self, call: AttnCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> QKV:
        if call.h < self.factor or call.w < self.factor:
            return q, k, v, None, Plan(q=q)
        idx, scores = self._index(call)
        dk = _gather(k, idx)
        return q, dk, _gather(v, idx), None, Plan(q=q, kv=dk, scores=scores)

    def label(self) -> str:
        return f"{self.title} s={self.factor} {self.keep}"


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (B, M) of x (B, N, C) → (B, M, C)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@dataclass(frozen=True)
class SiTo(Method):
    """SiTo, similarity-based token pruning (Zhang et al., AAAI 2025; method doc §J): per sx×sy cell
    the most typical token (highest summed cosine similarity, plus α-scaled Gaussian noise) is a base;
    the ``ratio`` of tokens most similar to a base are pruned, attention runs over the kept ones, and
    each pruned token's output is copied from its most similar kept token. Defaults of its release."""

    name: ClassVar[str] = "sito"
    title: ClassVar[str] = "SiTo"
    ops_budget: ClassVar[tuple[int | None, int | None]] = (68, 48)  # 27 kernels are its Gaussian noise
    kernels: ClassVar[bool] = True  # fused.row_max

    ratio: float = param(0.5, "Prune ratio", "fraction of tokens pruned (at most the non-base tokens)", lo=0, hi=0.98)
    sx: int = param(2, "Stride x", "cell width: one base token per sx×sy cell", lo=1, hi=8)
    sy: int = param(2, "Stride y", "cell height", lo=1, hi=8)
    alpha: float = param(0.1, "Noise α", "weight of the Gaussian noise added to the similarity score", lo=0, hi=10)
    beta: float = param(1.0, "Similarity β", "weight of the similarity score", lo=0, hi=10)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_stride(self.title, self.ratio, self.sx, self.sy)

    def _plan(self, call: AttnCall) -> SiToPlan:
        key = call.info.key if self.alpha != 0 else None
        return sito_plan(
            call.metric,
            call.h,
            call.w,
            self.ratio,
            self.sx,
            self.sy,
            alpha=self.alpha,
            beta=self.beta,
            key=key,
            best=fused.row_max,
        )

    def plan(self, call: AttnCall) -> Plan:
        if self.ratio == 0 or call.h < self.sy or call.w < self.sx:
            return Plan(q=call.x)
        p = self._plan(call)
        return Plan(q=p.prune(call.x), unmerge=p.recover, scores=p.score)

    def plan_qkv(self, call: AttnCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> QKV:
        if self.ratio == 0 or call.h < self.sy or call.w < self.sx:
            return q, k, v, None, Plan(q=q)
        p = self._plan(call)
        pq = p.prune(q)
        return pq, p.prune(k), p.prune(v), p.recover, Plan(q=pq, unmerge=p.recover, scores=p.score)

    def label(self) -> str:
        return f"{self.title} r={self.ratio:g}"


#: name → class; the only place that lists the methods (the app, CLI, bench and evaluations read it).
METHODS: dict[str, type[Method]] = {m.name: m for m in (Baseline, ToMe, LGTM, ToDo, IEKVD, FreqKV, SiTo)}


def describe_methods() -> str:
    """Every registered method with its declared parameters and defaults, in one line each (CLI help)."""
    lines = []
    for name, cls in METHODS.items():
        opts = ", ".join(f"{p.name}={p.default!r}" for p in cls.parameters() if p.knob)
        lines.append(f"{name} ({cls.title}{': ' + opts if opts else ''})")
    return "; ".join(lines)


def method_class(name: str) -> type[Method]:
    """The registered class of a method name ("L-GTM", "lgtm", "IE-KVD" …); a ValueError listing them."""
    if not isinstance(name, str):
        raise BadType(f"a method name must be a str, got {type(name).__name__}")
    cls = METHODS.get(name.strip().lower().replace("-", ""))
    if cls is None:
        raise BadInput(f"unknown method {excerpt(name)}; choose one of {sorted(METHODS)}")
    return cls


def make_method(name: str, **params: Any) -> Method:
    """Build a method from its registry name and keyword arguments (validated)."""
    cls = method_class(name)
    allowed = [p.name for p in cls.parameters()]
    unknown = set(params) - set(allowed)
    if unknown:
        raise BadInput(f"{cls.title} takes {allowed}, not {sorted(unknown)}")
    return cls(**params)


def parse_value(p: Param, text: str) -> Any:
    """A parameter's value from text, by its declared kind (a clear ValueError otherwise)."""
    text = text.strip()
    if p.optional and text.lower() in ("none", "null", ""):
        return None
    try:
        if p.kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise BadInput(text)
            return text.lower() in ("true", "1", "yes")
        if p.kind is tuple:
            return tuple(int(v) for v in text.strip("()").replace(" ", "").split(",") if v)
        if p.kind is int:
            return int(text)
        if p.kind is float:
            return float(text)
    except ValueError:
        raise BadInput(f"{p.name} must be {p.allowed()}, got {text!r}") from None
    return text


def parse_method(spec: str) -> Method:
    """Parse ``"name"`` or ``"name:key=value;key=value"`` (``,`` also separates options), e.g.
    ``"iekvd:alpha=0.8;alpha_end=1.2"``; values are read by each parameter's declared kind."""
    if not isinstance(spec, str):
        raise BadType(f"a method spec must be a str like 'lgtm:ratio=0.7', got {excerpt(spec)}")
    name, _, rest = spec.partition(":")
    cls = method_class(name)
    declared = {p.name: p for p in cls.parameters()}
    params = {}
    # ";" separates options, and so does "," before the next "key=" (a tuple value keeps its commas: blocks=1,2)
    for item in filter(None, (i.strip() for i in re.split(r";|,(?=\s*[A-Za-z_]\w*\s*=)", rest))):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq:
            raise BadInput(f"method option {excerpt(item)} is not key=value")
        if key not in declared:
            raise BadInput(f"{cls.title} takes {list(declared)}, not {excerpt(key)}")
        params[key] = parse_value(declared[key], val)
    return cls(**params)

"""Applying a method to a diffusers denoiser: the only module that knows diffusers' internals.

One :class:`BigainProcessor` wraps the original processor of every self-attention (``attn1``)
of the model's ``BasicTransformerBlock``s. A forward pre-hook on the model reads, once per
denoiser call, which method runs, the latent size, the timesteps and the host's decisions
(:class:`~bigain.methods.CallInfo`), and lets the method prepare what all layers share; block
pre-hooks hand U-Net processors their block input (the merge metric). The processor asks the
method for a :class:`~bigain.methods.Plan` and runs the *original* processor on it, so every
method uses the same attention kernel as the baseline:

* merge methods: ``unmerge(original(attn, merge(x)))`` — exactly tomesd's ``merge_attn``;
* KV methods: ``original(attn, x, encoder_hidden_states=D(x))`` — to_k/to_v see D(x).

Capturable by construction: the hot path reads only plain and thread-local attributes (which
``torch.compile`` traces and guards), never a ``ContextVar``, a host value of a tensor or a
``torch.Generator``; random destinations come from a key tensor (:mod:`bigain.ops.rng`); what
depends on host values (is this the t = 0 step? recompute cached assignments?) is decided
before the call (:func:`host_step`) or, in eager mode, from a timestep that lives on the CPU.

Which method runs is state, not structure: ``apply`` sets the model's default and
``compress`` overrides it for the current thread only, so one patched model serves every
method side by side. ``remove`` restores the original processors and drops every hook.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from bigain.backbones import Backbone, JointProcessor, Target, adapter_for
from bigain.backbones.base import WrappedProcessor
from bigain.errors import BadInput, BadType, excerpt
from bigain.methods import AttnCall, Baseline, CallInfo, Method, parse_method
from bigain.ops import rng
from bigain.record import current as current_recorder
from bigain.record import emit

_ATTR = "_bigain_state"


def denoiser_of(obj: Any) -> torch.nn.Module:
    """The denoiser inside a pipeline (``.unet`` / ``.transformer``), a loaded model (``.denoiser``) or itself."""
    for attr in ("denoiser", "unet", "transformer"):
        sub = getattr(obj, attr, None)
        if isinstance(sub, torch.nn.Module):
            return sub
    if isinstance(obj, torch.nn.Module):
        return obj
    raise BadType(f"bigain: expected a diffusers model or pipeline, got {type(obj).__name__}")


@dataclass(frozen=True)
class Step:
    """What the host decided about a denoiser call: the t = 0 step, rebuild cached assignments."""

    final: bool = False
    recompute: bool = True


def _grid(hw: tuple[int, int], n: int, downsample: int) -> tuple[int, int]:
    """Token grid (h, w) of a layer with n tokens, given the latent size: tomesd's rule."""
    h0, w0 = hw
    for ds in (downsample, math.ceil(math.sqrt(h0 * w0 / n))):
        h, w = math.ceil(h0 / ds), math.ceil(w0 / ds)
        if h * w == n:
            return h, w
    raise RuntimeError(f"bigain: cannot lay {n} tokens on a grid of latent {h0}x{w0}")


_NO_COPY = (
    "bigain: a patched model cannot be pickled or deep-copied (its patch holds per-thread state): save "
    "model.state_dict(), or copy bigain.patch.unpatched_copy(model), or bigain.remove(model) first"
)


class _State:
    """Per-model patch state. Per-call data lives in thread-local storage (``local``)."""

    def __init__(self, model: torch.nn.Module, blocks: tuple[int, ...] | None) -> None:
        self.model = model
        self.backbone: Backbone = adapter_for(model)(model, blocks)  # targets discovered once
        self.default: Method = Baseline()
        self.local = threading.local()
        self.originals: dict[torch.nn.Module, Any] = {}
        self.hooks: list[Any] = []
        self.targets: list[Target] = self.backbone.targets
        self.default_blocks = self.backbone.default_blocks
        self.users = 0  # open compress() blocks
        self.auto = False  # installed by compress(), removed when its last block exits
        self.key = rng.new_key(_fork_seed(_device_of(model)), _device_of(model))

    def __deepcopy__(self, memo: dict) -> _State:
        raise BadType(_NO_COPY)

    def __reduce_ex__(self, protocol: Any) -> Any:  # pickle and torch.save
        raise BadType(_NO_COPY)

    # ---- which method, where --------------------------------------------------------------
    def method(self) -> Method:
        override = getattr(self.local, "override", None)
        return self.default if override is None else override

    def active(self, method: Method) -> tuple[int, ...]:
        """Indices (into ``targets``) of the layers ``method`` compresses; cached per method."""
        cache = self.__dict__.setdefault("_active", {})
        hit = cache.get(method)
        if hit is None:
            selects = self.backbone.selects
            hit = cache[method] = tuple(
                i for i, t in enumerate(self.targets) if method.compresses and selects(method, t)
            )
        return hit

    def check(self, method: Method) -> None:
        """Raise ValueError if ``method`` cannot run on this model (nothing is changed)."""
        if not isinstance(method, Method):
            raise BadType(f"bigain: expected a bigain Method (e.g. bigain.LGTM()), got {type(method).__name__}")
        if not method.compresses:
            return
        self.backbone.check(method)
        if not self.active(method):
            raise BadInput(f"{method.title} would compress nothing in {self.backbone.describe()}")

    def key_for(self, device: torch.device) -> torch.Tensor:
        """This thread's key tensor of the random destinations: a copy of the model's on first use (so
        threads don't advance one another's stream), moved along if the model moved. While compiling,
        only read (the hook is traced; a captured graph reads the tensor that exists before capture)."""
        key = getattr(self.local, "key", None)
        if torch.compiler.is_compiling():
            return self.key if key is None else key
        if key is None or key.device != device:
            key = self.local.key = (self.key if key is None else key).to(device, copy=True)
        return key


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _fork_seed(device: torch.device) -> int:
    """A key seed from the global RNG state (as tomesd forks it), without consuming it."""
    state = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
    return rng.seed_from_state(state)


def _state(model: torch.nn.Module) -> _State | None:
    return model.__dict__.get(_ATTR)


_INTERNED: dict[Method, Method] = {}


def _intern(method: Method) -> Method:
    """One object per distinct method, so compiled graphs guard on identity and are reused."""
    return _INTERNED.setdefault(method, method)


# ---- the host side of a call --------------------------------------------------------------------


def _host_value(t: Any) -> list[float] | None:
    """Timesteps the host can read for free: Python numbers or CPU tensors (never a device tensor)."""
    if isinstance(t, (int, float)):
        return [float(t)]
    if isinstance(t, torch.Tensor) and t.device.type == "cpu":
        v = t.tolist()  # no dispatched op: nothing for a counter (or a GPU) to wait on
        return [float(x) for x in (v if isinstance(v, list) else [v])] if t.ndim <= 1 else None
    if isinstance(t, Sequence) and all(isinstance(v, (int, float)) for v in t):
        return [float(v) for v in t]
    return None


def decide_step(model: Any, t: Any = None, fresh: bool = False) -> Step:
    """The host's decisions for the next call of ``model``, advancing its cached-assignment schedule.

    t: the timesteps as the host knows them (number, list or CPU tensor; None: unknown, which
    counts as t > 0). fresh: the batch is new (the classifier), so cached assignments are rebuilt."""
    state = _state(denoiser_of(model))
    values = _host_value(t)
    final = values is not None and len(values) > 0 and all(v == 0 for v in values)
    if state is None:
        return Step(final=final)
    method = state.method()
    every = method.reuse_every
    n = getattr(state.local, "calls", 0)
    state.local.calls = n + 1
    # only what the method reads may vary, so compiled and captured graphs are not multiplied for nothing
    return Step(final=final and method.skips_final_step, recompute=fresh or n % every == 0)


@contextmanager
def host_step(model: Any, t: Any = None, fresh: bool = False, step: Step | None = None) -> Iterator[Step]:
    """Run the denoiser calls inside with the host's decisions made from ``t`` (see :func:`decide_step`),
    or the ``step`` given.

    Pipelines call this around every denoiser call with the timestep they hold on the host, so
    no patched layer ever reads a device tensor; compiled and graphed calls need it."""
    state = _state(denoiser_of(model))
    if step is None:
        step = decide_step(model, t, fresh)
    if state is None:
        yield step
        return
    with _thread_value(state, "step", step):
        yield step


@contextmanager
def _thread_value(state: _State, name: str, value: Any) -> Iterator[None]:
    """Set a per-thread attribute for the block, then restore what was there (nesting works)."""
    old = getattr(state.local, name, None)
    setattr(state.local, name, value)
    try:
        yield
    finally:
        setattr(state.local, name, old)


def own_key(model: Any) -> torch.Tensor | None:
    """This thread's key tensor of the random destinations, created (from the model's) if missing:
    a captured graph reads it, so it must exist before capture and be seeded in place after."""
    net = denoiser_of(model)
    state = _state(net)
    return None if state is None else state.key_for(_device_of(net))


def recording(model: Any) -> bool:
    """Whether a :func:`bigain.record` block is open in this thread (pictures need eager calls)."""
    return current_recorder() is not None


def cached_assignments(model: Any) -> dict[Any, Any]:
    """A copy of this thread's assignments kept across calls (``reuse="steps"``)."""
    state = _state(denoiser_of(model))
    return {} if state is None else dict(getattr(state.local, "steps", {}))


def _call_info(state: _State, sample: torch.Tensor, t: Any, method: Method, kwargs: dict[str, Any]) -> CallInfo:
    loc = state.local
    step = getattr(loc, "step", None)
    if step is None:
        # eager without a host_step: decide here from a host-side timestep; while compiling the
        # hook is traced, so only what host_step said (or the defaults) can be used
        step = Step() if torch.compiler.is_compiling() else decide_step(state.model, t)
    hw = state.backbone.latent_hw(sample, kwargs)
    grids = {i: state.backbone.grid(hw, state.targets[i]) for i in state.active(method)}
    key = state.key_for(sample.device)
    if getattr(loc, "steps_of", None) is not method:  # assignments kept across calls belong to one method
        loc.steps, loc.steps_of = {}, method
    scale = 1.0 if isinstance(t, (int, float)) else float(state.backbone.timestep_scale)
    b, final, again = int(sample.shape[0]), step.final, step.recompute
    return CallInfo(hw, t, b, sample.dtype, final, again, key, grids, steps=loc.steps, t_scale=scale)


class BigainProcessor(WrappedProcessor):
    """Wraps one ``attn1`` processor; compresses when the active method targets this block."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        kw = dict(encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs)
        if temb is not None:
            kw["temb"] = temb
        loc = self.state.local
        method = getattr(loc, "method", None)
        info = getattr(loc, "info", None)
        usable = encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3
        if method is None or info is None or not usable or self.index not in info.grids:
            return self.original(attn, hidden_states, **kw)  # not compressed here, or called outside a forward
        n = hidden_states.shape[1]
        h, w = info.grids[self.index]
        if h * w != n:
            h, w = _grid(info.hw, n, self.target.downsample)
        metric = getattr(loc, "metric", None)
        loc.metric = None
        if metric is None or metric.shape != hidden_states.shape:
            metric = hidden_states  # DiT: the modulated attention input
        if not info.prepared:
            info.prepared = True
            method.prepare(info)
        plan = method.plan(AttnCall(hidden_states, metric, h, w, self.index, info))
        rec = getattr(loc, "recorder", None)
        if rec is not None:
            emit(rec, self.target.name, info.timestep, h, w, n, plan, method.label())
        if plan.kv is None and plan.unmerge is None:
            return self.original(attn, hidden_states, **kw)
        if plan.kv is not None:
            kw["encoder_hidden_states"] = plan.kv
        out = self.original(attn, plan.q, **kw)
        return plan.unmerge(out) if plan.unmerge is not None else out


# The hooks are partials of module-level functions, not closures: pickling a patched model then reaches
# _State.__reduce_ex__ and its message, not "Can't pickle local object".


def _on_model(state: _State, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    sample = kwargs.get("sample", kwargs.get("hidden_states", args[0] if args else None))
    _begin(state, sample, state.backbone.timestep(args, kwargs), kwargs)


def _model_hook(state: _State) -> Any:
    return functools.partial(_on_model, state)


def begin_call(model: Any, sample: torch.Tensor, timestep: Any) -> None:
    """Set up a denoiser call as the model's pre-hook does, so one block can run on its own
    (the benchmark's layer job). A no-op if the model is not patched."""
    state = _state(denoiser_of(model))
    if state is not None:
        _begin(state, sample, timestep, {})


def _begin(state: _State, sample: torch.Tensor, t: Any, kwargs: dict[str, Any]) -> None:
    loc = state.local
    method = state.method()
    loc.metric = None
    if torch.compiler.is_compiling():
        loc.recorder = None  # pictures are an eager-mode affair
    else:
        loc.recorder = current_recorder()
        if loc.recorder is not None:
            loc.recorder.new_call()
    if not method.compresses:
        loc.method, loc.info = None, None
        return
    # only Python here: tensor work of the call (α, random draws) runs lazily in the first
    # compressed layer, so the forward stays one graph even where hooks are traced apart
    loc.method, loc.info = method, _call_info(state, sample, t, method, kwargs)


def _on_model_end(state: _State, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
    state.local.method, state.local.info = None, None


def _end_hook(state: _State) -> Any:
    """After the forward: a block called on its own later runs uncompressed (no grid is known for it)."""
    return functools.partial(_on_model_end, state)


def _on_block(state: _State, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    state.local.metric = kwargs.get("hidden_states", args[0] if args else None)


def _block_hook(state: _State) -> Any:
    return functools.partial(_on_block, state)


def _on_joint_block(state: _State, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
    state.local.text_len = None if text is None else int(text.shape[1])


def _text_len_hook(state: _State) -> Any:
    """Single-stream joint blocks hold [text, image] in one sequence: remember where the image starts."""
    return functools.partial(_on_joint_block, state)


def _install(model: torch.nn.Module, blocks: tuple[int, ...] | None) -> _State:
    return _attach(_State(model, blocks))


def _attach(state: _State) -> _State:
    """Wrap the processors and register the hooks of ``state`` on its model (the inverse of _uninstall)."""
    model = state.model
    state.originals, state.hooks = {}, []
    state.hooks.append(model.register_forward_pre_hook(_model_hook(state), with_kwargs=True))
    state.hooks.append(model.register_forward_hook(_end_hook(state), with_kwargs=True))
    for i, site in enumerate(state.backbone.sites):
        wrapper = BigainProcessor if site.target.kind == "self" else JointProcessor
        state.originals[site.attn] = site.attn.processor
        site.attn.set_processor(wrapper(state, site.target, i, site.attn.processor))
        if state.backbone.block_input_metric:  # SD merges on the block input (pre-norm residual stream)
            state.hooks.append(site.block.register_forward_pre_hook(_block_hook(state), with_kwargs=True))
        if site.target.kind == "flux-single":
            state.hooks.append(site.block.register_forward_pre_hook(_text_len_hook(state), with_kwargs=True))
    model.__dict__[_ATTR] = state
    return state


def _checked(net: torch.nn.Module, method: Method | str, blocks: tuple[int, ...] | None = None) -> Method:
    """Validate ``method`` (a Method or a spec string such as ``"lgtm:ratio=0.5"``) for ``net`` without
    touching it (a throwaway state if it is not patched)."""
    if isinstance(method, str):
        method = parse_method(method)
    state = _state(net) or _State(net, blocks)
    state.check(method)
    return _intern(method)


def apply(model: Any, method: Method | str, blocks: tuple[int, ...] | None = None) -> torch.nn.Module:
    """Patch ``model`` (a denoiser, a pipeline or a loaded model) and make ``method`` its default.

    On an already patched model this only switches the method (cheap). ``blocks`` sets the
    DiT blocks compressed when a method leaves ``blocks=None`` (default: the paper's 1–5, 7–11).
    A method that cannot run on the model raises before anything is changed. Returns the denoiser.
    """
    net = denoiser_of(model)
    with _LOCK:
        method = _checked(net, method, blocks)
        state = _state(net) or _install(net, blocks)
        state.auto = False  # the user's patch now: compress() blocks never remove it
        state.default = method
    return net


def remove(model: Any) -> None:
    """Undo :func:`apply`: original processors back, every hook removed. A no-op if not patched."""
    net = denoiser_of(model)
    with _LOCK:
        _uninstall(net)


def _uninstall(net: torch.nn.Module) -> None:
    state = _state(net)
    if state is None:
        return
    for attn, original in state.originals.items():
        attn.set_processor(original)
    for handle in state.hooks:
        handle.remove()
    del net.__dict__[_ATTR]


def unpatched_copy(model: Any) -> torch.nn.Module:
    """A deep copy of ``model``'s denoiser without bigain's patch. The original is never touched (other
    threads may be computing with it): the copy is made with bigain's processors replaced by copies of
    the ones they wrap, and without bigain's state and hooks."""
    import copy

    net = denoiser_of(model)
    with _LOCK:  # against a concurrent apply/remove changing the patch mid-copy
        state = _state(net)
        if state is None:
            return copy.deepcopy(net)
        memo: dict[int, Any] = {id(state): None}
        for attn, original in state.originals.items():
            memo[id(attn.processor)] = copy.deepcopy(original, memo)
        out = copy.deepcopy(net, memo)
        hook_ids = {h.id for h in state.hooks}
        for attn in state.originals:  # an nn.Module processor (IP-Adapter, LoRA) is a registered submodule
            twin = memo[id(attn)]
            twin.set_processor(twin.processor)
    out.__dict__.pop(_ATTR, None)
    for m in out.modules():  # the hooks were copied as references to the original's state: drop them
        for name in _HOOK_DICTS:
            hooks = getattr(m, name, None)
            for i in hook_ids & set(hooks or ()):
                del hooks[i]
    return out


#: nn.Module's hook tables (``RemovableHandle.id`` keys) that bigain's forward hooks are entered in.
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def is_patched(model: Any) -> bool:
    return _state(denoiser_of(model)) is not None


def active_method(model: Any) -> Method | None:
    """The method a call in this thread would run now (None if not patched)."""
    state = _state(denoiser_of(model))
    return None if state is None else state.method()


def compressed_blocks(model: Any, method: Method) -> list[str]:
    """Names of the transformer blocks ``method`` would compress in ``model`` (a Method instance:
    ``parse_method("lgtm")`` for a name)."""
    if not isinstance(method, Method):
        raise BadType(f"compressed_blocks takes a Method (e.g. bigain.LGTM()), got {excerpt(method)}")
    net = denoiser_of(model)
    state = _state(net) or _State(net, None)
    return [state.targets[i].name for i in state.active(method)]


def image_grid(model: Any, h: int, w: int) -> None:
    """Tell a patched model that takes packed image tokens (Flux) its (h, w) token grid, for
    non-square images (square grids are found from the token count)."""
    state = _state(denoiser_of(model))
    if state is None:
        raise BadInput("bigain: patch the model first (bigain.apply / bigain.compress)")
    state.backbone.image_grid = (int(h), int(w))  # type: ignore[attr-defined]


def seed(model: Any, seed: int) -> None:
    """Seed ToMe's random destinations for this thread (deterministic runs); the global RNG is untouched."""
    net = denoiser_of(model)
    state = _state(net)
    if state is None:
        return
    key = getattr(state.local, "key", None)
    if key is None or key.device != _device_of(net):
        state.local.key = rng.new_key(int(seed), _device_of(net))
    else:
        key.fill_(int(seed) & rng.MASK)  # in place: a captured graph keeps reading this tensor
    state.local.calls = 0


@contextmanager
def compress(model: Any, method: Method | str) -> Iterator[torch.nn.Module]:
    """Run ``method`` inside the block, for this thread only; patches on entry if needed and
    unpatches on exit if it did (other threads keep their own method). A method that cannot
    run on the model raises before anything is changed."""
    net = denoiser_of(model)
    with _LOCK:
        method = _checked(net, method)
        state = _state(net)
        if state is None:
            state = _install(net, None)
            state.auto = True
        state.users += 1
    try:
        with _thread_value(state, "override", method):
            yield net
    finally:
        with _LOCK:
            state.users -= 1
            if state.auto and state.users == 0 and _state(net) is state:
                _uninstall(net)


_LOCK = threading.RLock()

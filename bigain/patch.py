"""Applying a method to a diffusers denoiser: the only module that knows diffusers' internals.

One :class:`BigainProcessor` wraps the original processor of every self-attention (``attn1``)
of the model's ``BasicTransformerBlock``s. Forward pre-hooks give it the latent size and the
timesteps (model hook) and, for U-Nets, the block input used as the merge metric (block
hooks). The processor asks the active method for a :class:`~bigain.methods.Plan` and runs
the *original* processor on it, so every method uses the same attention kernel as the
baseline:

* merge methods: ``unmerge(original(attn, merge(x)))`` — exactly tomesd's ``merge_attn``;
* KV methods: ``original(attn, x, encoder_hidden_states=D(x))`` — to_k/to_v see D(x).

Which method runs is state, not structure: ``apply`` sets the model's default and
``compress`` overrides it for the current thread/task only, so one patched model serves
every method side by side. ``remove`` restores the original processors and drops every hook.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock

from bigain import record
from bigain.methods import PAPER_DIT_BLOCKS, AttnCall, Baseline, Method, Plan

_ATTR = "_bigain_state"


def denoiser_of(obj: Any) -> torch.nn.Module:
    """The denoiser inside a pipeline (``.unet`` / ``.transformer``), a loaded model (``.denoiser``) or itself."""
    for attr in ("denoiser", "unet", "transformer"):
        sub = getattr(obj, attr, None)
        if isinstance(sub, torch.nn.Module):
            return sub
    if isinstance(obj, torch.nn.Module):
        return obj
    raise TypeError(f"bigain: expected a diffusers model or pipeline, got {type(obj).__name__}")


@dataclass(frozen=True)
class Target:
    """A self-attention that can be compressed: its block's name, DiT index and U-Net level."""

    name: str
    index: int  # position among the model's transformer blocks
    downsample: int  # U-Net: 2**level of the resolution it runs at; DiT: 1


def _family(model: torch.nn.Module) -> str:
    if hasattr(model, "down_blocks") and hasattr(model, "up_blocks"):
        return "unet"
    if hasattr(model, "transformer_blocks") and getattr(model.config, "patch_size", None):
        return "dit"
    raise TypeError(
        f"bigain: don't know how to patch {type(model).__name__}; supported are U-Nets "
        "(UNet2DConditionModel: SD 1.x/2.x/XL) and DiT transformers (DiTTransformer2DModel)"
    )


def _unet_downsample(name: str, n_levels: int) -> int:
    m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.", name)
    if m is None:  # mid block
        return 2 ** (n_levels - 1)
    i = int(m.group(2))
    return 2**i if m.group(1) == "down_blocks" else 2 ** (n_levels - 1 - i)


def _targets(model: torch.nn.Module, family: str) -> list[tuple[Target, BasicTransformerBlock]]:
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, BasicTransformerBlock)]
    found = []
    for i, (name, block) in enumerate(blocks):
        attn = getattr(block, "attn1", None)
        if attn is None or getattr(attn, "is_cross_attention", False) or block.only_cross_attention:
            continue
        ds = _unet_downsample(name, len(model.down_blocks)) if family == "unet" else 1
        found.append((Target(name, i, ds), block))
    if not found:
        raise TypeError(f"bigain: {type(model).__name__} has no self-attention transformer blocks to compress")
    return found


def _grid(hw: tuple[int, int], n: int, downsample: int) -> tuple[int, int]:
    """Token grid (h, w) of a layer with n tokens, given the latent size: tomesd's rule."""
    h0, w0 = hw
    for ds in (downsample, math.ceil(math.sqrt(h0 * w0 / n))):
        h, w = math.ceil(h0 / ds), math.ceil(w0 / ds)
        if h * w == n:
            return h, w
    raise RuntimeError(f"bigain: cannot lay {n} tokens on a grid of latent {h0}x{w0}")


def _timesteps(t: Any, batch: int, device: torch.device) -> torch.Tensor | None:
    if t is None:
        return None
    t = torch.as_tensor(t, device=device).float().flatten()
    return t.expand(batch) if t.numel() == 1 else t


class _State:
    """Per-model patch state. Per-call data lives in thread-local storage."""

    def __init__(self, model: torch.nn.Module, family: str, blocks: tuple[int, ...] | None) -> None:
        self.model = model
        self.family = family
        self.default: Method = Baseline()
        self.override: ContextVar[Method | None] = ContextVar(f"bigain_method_{id(model)}", default=None)
        self.local = threading.local()
        self.originals: dict[torch.nn.Module, Any] = {}
        self.hooks: list[Any] = []
        self.found = _targets(model, family)  # (target, block) pairs, discovered once
        self.targets = [t for t, _ in self.found]
        n_blocks = max(t.index for t in self.targets) + 1
        self.default_blocks = blocks if blocks is not None else tuple(b for b in PAPER_DIT_BLOCKS if b < n_blocks)
        self.n_blocks = n_blocks
        self.users = 0
        self.lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> _State:
        raise TypeError("bigain: call bigain.remove(model) before copying a patched model, then patch the copy")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("bigain: call bigain.remove(model) before pickling a patched model")

    # ---- which method, where --------------------------------------------------------------
    def method(self) -> Method:
        return self.override.get() or self.default

    def active_targets(self, method: Method) -> list[Target]:
        if self.family == "dit":
            chosen = set(method.blocks if method.blocks is not None else self.default_blocks)
            return [t for t in self.targets if t.index in chosen]
        return [t for t in self.targets if t.downsample <= method.max_downsample]

    def check(self, method: Method) -> None:
        if not method.compresses:
            return
        if self.family == "dit" and method.blocks is not None:
            bad = [b for b in method.blocks if b >= self.n_blocks]
            if bad:
                raise ValueError(f"{method.title}: blocks {bad} do not exist; the model has {self.n_blocks} blocks")
        if not self.active_targets(method):
            levels = sorted({t.downsample for t in self.targets})
            raise ValueError(
                f"{method.title} would compress nothing in {type(self.model).__name__}: its attention runs at "
                f"downsample {levels}, but max_downsample={method.max_downsample}"
            )

    # ---- per-call data --------------------------------------------------------------------
    def generator(self, device: torch.device) -> torch.Generator:
        """ToMe's generator: forked from the global RNG on first use (tomesd), so the caller's stream is untouched."""
        gen = getattr(self.local, "generator", None)
        if gen is None or gen.device != device:
            gen = torch.Generator(device=device)
            state = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
            gen.set_state(state)
            self.local.generator = gen
        return gen

    def seed(self, seed: int, device: torch.device) -> None:
        self.local.generator = torch.Generator(device=device).manual_seed(seed)


def _state(model: torch.nn.Module) -> _State | None:
    return model.__dict__.get(_ATTR)


class BigainProcessor:
    """Wraps one ``attn1`` processor; compresses when the active method targets this block."""

    def __init__(self, state: _State, target: Target, original: Any) -> None:
        self.state = state
        self.target = target
        self.original = original

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        st, method = self.state, self.state.method()
        kw = dict(encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs)
        if temb is not None:
            kw["temb"] = temb
        usable = encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3
        if not usable or self.target not in st.active_targets(method):
            return self.original(attn, hidden_states, **kw)
        b, n, _ = hidden_states.shape
        hw = getattr(st.local, "hw", None)
        if hw is None:  # block called outside the model's forward: no grid known, run as is
            return self.original(attn, hidden_states, **kw)
        h, w = _grid(hw, n, self.target.downsample if st.family == "unet" else st.model.config.patch_size)
        t = _timesteps(st.local.t, b, hidden_states.device)
        plan: Plan | None = None
        if method.compresses:
            metric = st.local.block_input.pop(self.target.name, None) if st.family == "unet" else None
            call = AttnCall(
                hidden_states,
                metric if metric is not None else hidden_states,
                h,
                w,
                t,
                lambda: st.generator(hidden_states.device),
            )
            plan = method.plan(call)
        record.emit(self.target.name, t, h, w, n, plan, method.label())
        if plan is None or (plan.kv is None and plan.unmerge is None):
            return self.original(attn, hidden_states, **kw)
        if plan.kv is not None:
            kw["encoder_hidden_states"] = plan.kv
        out = self.original(attn, plan.q, **kw)
        return plan.unmerge(out) if plan.unmerge is not None else out


def _model_hook(state: _State):
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = kwargs.get("sample", kwargs.get("hidden_states", args[0] if args else None))
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        state.local.hw = tuple(sample.shape[-2:])
        state.local.t = t
        state.local.block_input = {}
        record.new_call()

    return hook


def _block_hook(state: _State, name: str):
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        state.local.block_input[name] = kwargs.get("hidden_states", args[0] if args else None)

    return hook


def _install(model: torch.nn.Module, blocks: tuple[int, ...] | None) -> _State:
    state = _State(model, _family(model), blocks)
    state.hooks.append(model.register_forward_pre_hook(_model_hook(state), with_kwargs=True))
    for target, block in state.found:
        state.originals[block.attn1] = block.attn1.processor
        block.attn1.set_processor(BigainProcessor(state, target, block.attn1.processor))
        if state.family == "unet":  # SD merges on the block input (pre-norm residual stream)
            state.hooks.append(block.register_forward_pre_hook(_block_hook(state, target.name), with_kwargs=True))
    model.__dict__[_ATTR] = state
    return state


def apply(model: Any, method: Method, blocks: tuple[int, ...] | None = None) -> torch.nn.Module:
    """Patch ``model`` (a denoiser, a pipeline or a loaded model) and make ``method`` its default.

    On an already patched model this only switches the method (cheap). ``blocks`` sets the
    DiT blocks compressed when a method leaves ``blocks=None`` (default: the paper's 1–5, 7–11).
    Returns the denoiser.
    """
    net = denoiser_of(model)
    state = _state(net) or _install(net, blocks)
    state.check(method)
    state.default = method
    return net


def remove(model: Any) -> None:
    """Undo :func:`apply`: original processors back, every hook removed. A no-op if not patched."""
    net = denoiser_of(model)
    state = _state(net)
    if state is None:
        return
    for attn, original in state.originals.items():
        attn.set_processor(original)
    for handle in state.hooks:
        handle.remove()
    del net.__dict__[_ATTR]


def is_patched(model: Any) -> bool:
    return _state(denoiser_of(model)) is not None


def active_method(model: Any) -> Method | None:
    """The method a call in this thread would run now (None if not patched)."""
    state = _state(denoiser_of(model))
    return None if state is None else state.method()


def compressed_blocks(model: Any, method: Method) -> list[str]:
    """Names of the transformer blocks ``method`` would compress in ``model``."""
    net = denoiser_of(model)
    state = _state(net) or _State(net, _family(net), None)
    return [t.name for t in state.active_targets(method)] if method.compresses else []


def seed(model: Any, seed: int) -> None:
    """Seed the generator of ToMe's random destinations for this thread (deterministic runs)."""
    net = denoiser_of(model)
    state = _state(net)
    if state is not None:
        state.seed(seed, next(net.parameters()).device)


@contextmanager
def compress(model: Any, method: Method) -> Iterator[torch.nn.Module]:
    """Run ``method`` inside the block, for this thread/task only; patches on entry if needed
    and unpatches on exit if it did (other threads keep their own method)."""
    net = denoiser_of(model)
    with _LOCK:
        state = _state(net)
        owned = state is None
        if owned:
            state = _install(net, None)
            state.auto = True  # type: ignore[attr-defined]
        state.users += 1
    state.check(method)
    token = state.override.set(method)
    try:
        yield net
    finally:
        state.override.reset(token)
        with _LOCK:
            state.users -= 1
            if getattr(state, "auto", False) and state.users == 0:
                remove(net)


_LOCK = threading.Lock()

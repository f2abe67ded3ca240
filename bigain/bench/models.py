"""The benchmark's denoisers and their inputs: architectures from :mod:`bigain.zoo`, calls and random
conditions from the backbone adapters (:mod:`bigain.backbones`). Nothing here tests a model family."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from bigain import patch, zoo
from bigain.backbones import Backbone, adapter_for
from bigain.methods import ToMe
from bigain.timing import AttnClock

#: the host's value of the timestep of every benchmarked call (t > 0: methods compress)
T_HOST = 500
#: config entries that set a transformer's depth (``--layers`` overrides them all)
DEPTH_KEYS = ("num_layers", "num_single_layers")


def model_arch(name: str) -> zoo.Arch:
    """The architecture of a benchmark model name (every :data:`bigain.zoo.ARCHS` entry)."""
    if name not in zoo.ARCHS:
        raise ValueError(f"unknown benchmark model {name!r}; use one of {', '.join(zoo.ARCHS)}")
    return zoo.ARCHS[name]


def narrow(a: zoo.Arch, k: int) -> zoo.Arch:
    """:func:`bigain.zoo.narrow`, its errors naming the ``--width-scale`` option."""
    try:
        return zoo.narrow(a, k)
    except ValueError as err:
        raise ValueError(f"--width-scale: {err}") from None


def with_layers(a: zoo.Arch, n: int | None) -> zoo.Arch:
    """The architecture with ``n`` transformer layers of each kind (Flux: n double- and n single-stream
    blocks) at full width: one layer's speed at the real width and token count, cheaply."""
    if n is None:
        return a
    keys = [k for k in DEPTH_KEYS if k in a.config]
    if not keys or n < 1:
        raise ValueError(f"--layers {n}: needs a transformer with num_layers (and n ≥ 1), not {a.cls}")
    return replace(a, config={**a.config, **dict.fromkeys(keys, n)})


def is_published(name: str) -> bool:
    """Whether a model is a published config (weights change no count) rather than an embedded model."""
    card = zoo.CARDS.get(name)
    return card is None or card.source != "embedded"


def build_random(a: zoo.Arch, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """The architecture with random weights (speed does not depend on weight values)."""
    return zoo.build(a, device=device, dtype=dtype, seed=seed)[0]


def load_denoiser(name: str, device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    """Real weights through ``bigain.models.load_model`` (embedded digits models or the hub cache)."""
    from bigain.models import load_model  # lazy: only with real weights

    loaded = load_model(name, device=device, dtype=dtype)
    return patch.unpatched_copy(loaded), loaded  # a private copy: the loader's cached model stays patched


def backbone(net: torch.nn.Module) -> Backbone:
    """The adapter of ``net`` as an instance (its targets and grids; nothing is patched)."""
    return adapter_for(net)(net)


def all_blocks(net: torch.nn.Module) -> tuple[int, ...]:
    """Every attention block of a transformer (the compressed blocks of a ``--layers`` model)."""
    return tuple(range(backbone(net).n_blocks))


def fixed_resolution(net: torch.nn.Module, a: zoo.Arch) -> int | None:
    """The one resolution a model runs at, in pixels: that of a fixed sin-cos position table (DiT,
    PixArt: a patch embedding without ``pos_embed_max_size``), None for models that take any size."""
    pe = getattr(net, "pos_embed", None)
    if pe is None or getattr(pe, "pos_embed_max_size", 0) is not None or getattr(pe, "height", None) is None:
        return None
    return int(pe.height) * int(pe.patch_size) * a.scale


def make_inputs(
    a: zoo.Arch, net: torch.nn.Module, res: int, batch: int, device: torch.device, dtype: torch.dtype, seed: int
) -> dict[str, Any]:
    """Random inputs of one call at ``res`` pixels: latents (B, C, H, W), t = 500 for every sample and
    the adapter's example condition (``cond``: a dict of batch-first tensors)."""
    if res % a.scale:
        raise ValueError(f"resolution {res} is not a multiple of the latent scale {a.scale}")
    fixed = fixed_resolution(net, a)
    if fixed is not None and res != fixed:
        raise ValueError(f"{type(net).__name__} has a fixed resolution: {fixed} px, got {res}")
    adapter = adapter_for(net)
    size = res // a.scale
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, adapter.latent_channels(net), size, size, generator=g)
    t = torch.full((batch,), T_HOST, dtype=torch.long)
    cond = adapter.example_condition(net, batch, a.text, res, g)
    cond = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in cond.items()}
    return {"sample": sample.to(device, dtype), "timestep": t.to(device), "cond": cond}


def call_of(net: torch.nn.Module, inputs: dict[str, Any]) -> tuple[Callable[..., torch.Tensor], tuple[Any, ...]]:
    """The ``call(net, *inputs)`` of :class:`bigain.execution.Executor` (the adapter's) and its inputs."""
    return adapter_for(net).call, (inputs["sample"], inputs["timestep"], inputs["cond"])


def denoiser_call(net: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """One eager denoiser call under ``torch.no_grad`` (what the pipelines run)."""
    fn, tensors = call_of(net, inputs)
    with torch.no_grad():
        return fn(net, *tensors)


#: the processors ``--attn`` replaces; joint-attention processors (SD3, Flux) are SDPA already and stay
PLAIN_PROCESSORS = ("AttnProcessor", "AttnProcessor2_0")


def set_attention(net: torch.nn.Module, kind: str) -> None:
    """Give every plain attention module the same processor: ``sdpa`` (AttnProcessor2_0) or ``vanilla``."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if kind not in ("sdpa", "vanilla"):
        raise ValueError(f"--attn must be sdpa or vanilla, got {kind!r}")
    for m in net.modules():
        proc = getattr(m, "processor", None)
        if proc is not None and type(proc).__name__ in PLAIN_PROCESSORS and hasattr(m, "set_processor"):
            m.set_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())


def attention_modules(net: torch.nn.Module, blocks: Sequence[str]) -> dict[str, torch.nn.Module]:
    """The attention module of each named block (``attn1`` of a U-Net/DiT block, ``attn`` of a joint block)."""
    sites = {s.target.name: s.attn for s in backbone(net).sites}
    return {b: sites[b] for b in blocks}


def attn_clock(net: torch.nn.Module, blocks: Sequence[str], device: torch.device) -> AttnClock:
    """An :class:`bigain.timing.AttnClock` on the attention of ``blocks``."""
    return AttnClock(attention_modules(net, blocks), device)


def tomesd_available() -> bool:
    try:
        import tomesd  # noqa: F401
    except ImportError:
        return False
    return True


def tomesd_supported(net: torch.nn.Module) -> bool:
    """tomesd patches diffusers U-Nets only (``UNet2DConditionModel``), and only where it is installed."""
    return adapter_for(net).name == "unet" and tomesd_available()


def tomesd_level(net: torch.nn.Module) -> int:
    """tomesd's ``max_downsample`` that merges the same layers as bigain's defaults: the finest level
    with self-attention (SD 1/2: 1, SDXL: 2)."""
    bb = backbone(net)
    return min(t.downsample for t in bb.targets if bb.selects(ToMe(), t))


def capture(net: torch.nn.Module, inputs: dict[str, Any], block: str | None = None) -> dict[str, Any]:
    """One eager call; what the model (``sample``, ``kwargs``) and ``block`` (``args``, ``kwargs``) received."""
    got: dict[str, Any] = {}

    def model_hook(m: Any, args: tuple, kw: dict) -> None:
        got["sample"] = kw.get("sample", kw.get("hidden_states", args[0] if args else None))
        got["model_kwargs"] = dict(kw)

    def block_hook(m: Any, args: tuple, kw: dict) -> None:
        got.setdefault("args", args)
        got.setdefault("kwargs", dict(kw))

    hooks = [net.register_forward_pre_hook(model_hook, with_kwargs=True)]
    if block is not None:
        hooks.append(net.get_submodule(block).register_forward_pre_hook(block_hook, with_kwargs=True))
    try:
        denoiser_call(net, inputs)
    finally:
        for h in hooks:
            h.remove()
    return got


def tokens_of(net: torch.nn.Module, captured: dict[str, Any], block: str) -> int:
    """Image tokens of ``block`` in the captured call (the adapter's grid of the model's input)."""
    bb = backbone(net)
    target = next(t for t in bb.targets if t.name == block)
    h, w = bb.grid(bb.latent_hw(captured["sample"], captured["model_kwargs"]), target)
    return h * w


def first_compressed(net: torch.nn.Module) -> str | None:
    """The first block the default ToMe compresses (the layer job's layer; the tokens reported)."""
    names = patch.compressed_blocks(net, ToMe())
    return names[0] if names else None

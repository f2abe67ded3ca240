"""Backbone adapters, registered by model class: the only code that knows model families.

* ``unet``: ``UNet2DConditionModel`` (SD 1.x/2.x, SDXL): ``attn1`` of every transformer block; default
  the highest-resolution level with self-attention.
* ``dit``: ``DiTTransformer2DModel``; ``pixart``: ``PixArtTransformer2DModel`` (PixArt-α/Σ): ``attn1`` per
  block; default blocks 1–5, 7–11.
* ``sd3``: ``SD3Transformer2DModel`` (SD3, SD3.5); ``flux``: ``FluxTransformer2DModel`` (Flux.1, double- and
  single-stream): joint ``attn``, image tokens only; default blocks 1–5, 7–11.
"""

from __future__ import annotations

from torch import nn

from bigain.backbones.base import Backbone, Site, Target
from bigain.backbones.dit import DiT, PixArt
from bigain.backbones.mmdit import SD3, Flux, JointProcessor
from bigain.backbones.unet import UNet
from bigain.errors import BadType

#: Every adapter; the first whose class names appear in a model's class hierarchy handles it.
BACKBONES: tuple[type[Backbone], ...] = (UNet, DiT, PixArt, SD3, Flux)


def adapter_for(model: nn.Module) -> type[Backbone]:
    """The adapter class for ``model`` (by its class or a base class), or one TypeError naming what is supported."""
    names = {c.__name__ for c in type(model).__mro__}
    for adapter in BACKBONES:
        if names & set(adapter.classes):
            return adapter
    raise BadType(f"bigain: don't know how to patch {type(model).__name__}; supported are {_supported()}")


def adapter_for_class(name: str) -> type[Backbone]:
    """The adapter for a diffusers model class name (e.g. ``"SD3Transformer2DModel"``)."""
    for adapter in BACKBONES:
        if name in adapter.classes:
            return adapter
    raise BadType(f"bigain: don't know the model class {name!r}; supported are {_supported()}")


def _supported() -> str:
    return ", ".join(c for a in BACKBONES for c in a.classes)


__all__ = [
    "BACKBONES",
    "SD3",
    "Backbone",
    "DiT",
    "Flux",
    "JointProcessor",
    "PixArt",
    "Site",
    "Target",
    "UNet",
    "adapter_for",
    "adapter_for_class",
]

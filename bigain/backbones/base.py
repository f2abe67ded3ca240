"""What every backbone adapter says: which attention modules are targets, their token grids, which
tokens drive merging, where compression goes by default, and (joint attention) which tokens are the image's.

``bigain.patch`` is backbone-agnostic: it asks the adapter of a model (:func:`bigain.backbones.adapter_for`)
and never which family a model is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bigain.errors import BadInput, BadType
from bigain.methods import PAPER_DIT_BLOCKS, Method


@dataclass(frozen=True)
class Target:
    """One compressible attention: its block's module path, its index among the backbone's attention
    blocks (what ``blocks=`` counts), and how many latent cells one of its tokens spans per side
    (U-Net: 2**level; transformers: the patch size). ``kind``: ``self`` (self-attention through the
    original processor) or the joint layout of an MMDiT (``sd3``, ``flux``, ``flux-single``)."""

    name: str
    index: int
    downsample: int
    kind: str = "self"


@dataclass
class Site:
    """Where a target is installed: the attention module whose processor is wrapped and the block whose
    pre-hook sees the block input (U-Net metric) or the text length (Flux single-stream)."""

    target: Target
    attn: nn.Module
    block: nn.Module


class WrappedProcessor:
    """Base of the processors patching installs: the original processor and what it stands for."""

    def __init__(self, state: Any, target: Target, index: int, original: Any) -> None:
        self.state = state  # the model's patch state (bigain.patch._State)
        self.target = target
        self.index = index  # position among the model's targets
        self.original = original


class Backbone:
    """Base adapter. One instance per patched model; subclasses are registered by model class name."""

    name: ClassVar[str] = "backbone"
    classes: ClassVar[tuple[str, ...]] = ()
    #: merge on the block input (SD's pre-norm residual stream) rather than the attention input
    block_input_metric: ClassVar[bool] = False
    #: positional index of ``timestep`` in the model's forward (when not passed by keyword)
    timestep_arg: ClassVar[int] = 1
    #: the scheduler's timesteps are multiplied by this to reach the 999 → 0 convention (Flux: 1000)
    timestep_scale: ClassVar[float] = 1.0

    def __init__(self, model: nn.Module, blocks: tuple[int, ...] | None = None) -> None:
        self.model = model
        self.sites = self.find(model)
        if not self.sites:
            raise BadType(f"bigain: {type(model).__name__} has no self-attention blocks to compress")
        self.targets = [s.target for s in self.sites]
        self.n_blocks = max(t.index for t in self.targets) + 1
        paper = tuple(b for b in PAPER_DIT_BLOCKS if b < self.n_blocks)
        self.default_blocks = blocks if blocks is not None else paper

    def find(self, model: nn.Module) -> list[Site]:
        raise NotImplementedError

    def selects(self, method: Method, target: Target) -> bool:
        """Whether ``method`` compresses ``target`` (transformers: by block index, the paper's 1–5, 7–11)."""
        chosen = method.blocks if method.blocks is not None else self.default_blocks
        return target.index in chosen

    def check(self, method: Method) -> None:
        """Raise ValueError when ``method`` names targets this model does not have."""
        if method.blocks is not None:
            bad = [b for b in method.blocks if b >= self.n_blocks]
            if bad:
                raise BadInput(f"{method.title}: blocks {bad} do not exist; the model has {self.n_blocks} blocks")

    def latent_hw(self, sample: torch.Tensor, kwargs: dict[str, Any]) -> tuple[int, int]:
        """(H, W) of the latent the grids are derived from, from the model's input (static shapes only)."""
        return int(sample.shape[-2]), int(sample.shape[-1])

    def grid(self, hw: tuple[int, int], target: Target) -> tuple[int, int]:
        """The (h, w) token grid of ``target`` (tomesd's rule: ceil of the latent over the downsample)."""
        ds = target.downsample
        return math.ceil(hw[0] / ds), math.ceil(hw[1] / ds)

    def timestep(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        t = kwargs.get("timestep", args[self.timestep_arg] if len(args) > self.timestep_arg else None)
        if t is not None and self.timestep_scale != 1 and isinstance(t, (int, float)):
            return t * self.timestep_scale
        return t  # a tensor stays as it is: CallInfo.timestep scales it only where a method reads it

    def describe(self) -> str:
        return f"{self.name} ({type(self.model).__name__}, {len(self.targets)} attention blocks)"

    # ---- how the family is called and conditioned (used by bigain.models, the bench and the tests) ----
    #: what the denoiser predicts: "epsilon" (or the scheduler's prediction_type) or "flow" (velocity ε − x0)
    prediction: ClassVar[str] = "epsilon"

    @staticmethod
    def call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """One denoiser call: latents (B, C, H, W), timesteps (B,) in the scheduler's convention and the
        condition (batch-first tensors named as in :meth:`condition`) → the raw output (B, C_out, H, W)."""
        raise NotImplementedError

    @staticmethod
    def latent_channels(net: nn.Module) -> int:
        """Channels of the (unpacked) latent the pipelines hold."""
        return int(net.config.in_channels)

    @staticmethod
    def narrow(config: dict[str, Any], k: int) -> dict[str, Any]:
        """The constructor config at 1/k of the width: same depth, heads and token grids."""
        raise NotImplementedError

    @staticmethod
    def example_condition(
        net: nn.Module, batch: int, text: tuple[int, int] | None, res: int, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """A random condition of the right shapes (benchmarks and tests; speed does not depend on values).
        ``text``: (tokens, width) of the text sequence; ``res``: the image side in pixels."""
        raise NotImplementedError

    @staticmethod
    def text_condition(pipe: Any, prompts: list[str], null: bool, res: int) -> dict[str, torch.Tensor]:
        """Prompts through the pipeline's own text encoders → a condition (``null``: the unconditional
        input of classifier-free guidance, as the pipeline builds it for an empty negative prompt)."""
        raise BadType(f"{type(pipe).__name__} is not conditioned on text")


def divided(config: dict[str, Any], k: int, *keys: str) -> dict[str, Any]:
    """``config`` with each of ``keys`` divided by k (a clear error when one does not divide)."""
    out = dict(config)
    for key in keys:
        v = int(out[key])
        if v % k:
            raise BadInput(f"width scale {k}: {key}={v} is not divisible by {k}")
        out[key] = v // k
    return out


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)

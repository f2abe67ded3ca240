"""SD 1.x / 2.x and SDXL U-Nets (``UNet2DConditionModel``): self-attention of every transformer block.

Targets are the ``attn1`` of the ``BasicTransformerBlock``s; a target's downsample is 2**level from
its module path (down i → 2^i, up j → 2^(L−1−j), mid → 2^(L−1)). By default the highest-resolution
level that has self-attention is compressed (SD 1/2: the full-resolution level, as in the paper;
SDXL: its 2× downsampled level, since its top level has none); ``max_downsample`` picks levels
explicitly. The merge metric is the block input (the pre-norm residual stream), as in the paper's code.
"""

from __future__ import annotations

import re

from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from bigain.backbones.base import Backbone, Site, Target
from bigain.methods import Method


def _downsample(name: str, n_levels: int) -> int:
    m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.", name)
    if m is None:  # mid block
        return 2 ** (n_levels - 1)
    i = int(m.group(2))
    return 2**i if m.group(1) == "down_blocks" else 2 ** (n_levels - 1 - i)


def self_attention_sites(model: nn.Module, downsample) -> list[Site]:
    """The ``attn1`` of every ``BasicTransformerBlock`` that is self-attention, in module order."""
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, BasicTransformerBlock)]
    sites = []
    for i, (name, block) in enumerate(blocks):
        attn = getattr(block, "attn1", None)
        if attn is None or getattr(attn, "is_cross_attention", False) or block.only_cross_attention:
            continue
        sites.append(Site(Target(name, i, downsample(name)), attn, block))
    return sites


class UNet(Backbone):
    name = "unet"
    classes = ("UNet2DConditionModel",)
    block_input_metric = True

    def find(self, model: nn.Module) -> list[Site]:
        return self_attention_sites(model, lambda name: _downsample(name, len(model.down_blocks)))

    @property
    def finest(self) -> int:
        """Downsample of the highest-resolution level that has self-attention."""
        return min(t.downsample for t in self.targets)

    def selects(self, method: Method, target: Target) -> bool:
        limit = method.max_downsample if method.max_downsample is not None else self.finest
        return target.downsample <= limit

    def check(self, method: Method) -> None:
        if method.max_downsample is not None and method.max_downsample < self.finest:
            levels = sorted({t.downsample for t in self.targets})
            raise ValueError(
                f"{method.title} would compress nothing in {type(self.model).__name__}: its self-attention runs at "
                f"downsample {levels}, but max_downsample={method.max_downsample} (leave it unset for the "
                f"highest-resolution level with attention, {self.finest})"
            )

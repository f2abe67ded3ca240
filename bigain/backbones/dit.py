"""Class- and text-conditional DiTs whose blocks are ``BasicTransformerBlock``s: DiT
(``DiTTransformer2DModel``, adaLN-zero) and PixArt-α / Σ (``PixArtTransformer2DModel``, adaLN-single
with cross-attention to T5 text). Targets are the self-attention ``attn1`` of the blocks chosen by
``blocks=`` (default: the paper's DiT blocks 1–5 and 7–11 of those that exist); tokens are the
(H/p)×(W/p) patch grid; the merge metric is the modulated attention input, as in the paper's DiT code.
"""

from __future__ import annotations

from torch import nn

from bigain.backbones.base import Backbone, Site
from bigain.backbones.unet import self_attention_sites


class DiT(Backbone):
    name = "dit"
    classes = ("DiTTransformer2DModel",)
    timestep_arg = 1

    def find(self, model: nn.Module) -> list[Site]:
        patch = int(model.config.patch_size)
        return self_attention_sites(model, lambda name: patch)


class PixArt(DiT):
    name = "pixart"
    classes = ("PixArtTransformer2DModel",)
    timestep_arg = 2  # forward(hidden_states, encoder_hidden_states, timestep, ...)

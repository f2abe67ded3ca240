"""Class- and text-conditional DiTs whose blocks are ``BasicTransformerBlock``s: DiT
(``DiTTransformer2DModel``, adaLN-zero) and PixArt-α / Σ (``PixArtTransformer2DModel``, adaLN-single
with cross-attention to T5 text). Targets are the self-attention ``attn1`` of the blocks chosen by
``blocks=`` (default: the paper's DiT blocks 1–5 and 7–11 of those that exist); tokens are the
(H/p)×(W/p) patch grid; the merge metric is the modulated attention input, as in the paper's DiT code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bigain.backbones.base import Backbone, Site, divided, randn
from bigain.backbones.unet import self_attention_sites


class DiT(Backbone):
    name = "dit"
    classes = ("DiTTransformer2DModel",)
    timestep_arg = 1

    def find(self, model: nn.Module) -> list[Site]:
        patch = int(model.config.patch_size)
        return self_attention_sites(model, lambda name: patch)

    @staticmethod
    def call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return net(x, timestep=t, class_labels=cond["class_labels"], return_dict=False)[0]

    @staticmethod
    def narrow(config: dict[str, Any], k: int) -> dict[str, Any]:
        return divided(config, k, "attention_head_dim")

    @staticmethod
    def example_condition(
        net: nn.Module, batch: int, text: tuple[int, int] | None, res: int, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return {"class_labels": torch.randint(int(net.config.num_embeds_ada_norm or 1000), (batch,), generator=g)}


class PixArt(DiT):
    name = "pixart"
    classes = ("PixArtTransformer2DModel",)
    timestep_arg = 2  # forward(hidden_states, encoder_hidden_states, timestep, ...)

    @staticmethod
    def call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        added = {"resolution": cond.get("resolution"), "aspect_ratio": cond.get("aspect_ratio")}
        return net(
            x,
            encoder_hidden_states=cond["encoder_hidden_states"],
            encoder_attention_mask=cond.get("encoder_attention_mask"),
            timestep=t,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]

    @staticmethod
    def narrow(config: dict[str, Any], k: int) -> dict[str, Any]:
        cfg = divided(config, k, "attention_head_dim", "caption_channels")
        cfg["cross_attention_dim"] = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
        return cfg

    @staticmethod
    def example_condition(
        net: nn.Module, batch: int, text: tuple[int, int] | None, res: int, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        seq = text[0] if text else 120
        cond = {"encoder_hidden_states": randn(g, batch, seq, int(net.config.caption_channels))}
        cond["encoder_attention_mask"] = torch.ones(batch, seq)
        return cond | _size_conditions(net, res, batch)

    @staticmethod
    def text_condition(pipe: Any, prompts: list[str], null: bool, res: int) -> dict[str, torch.Tensor]:
        pe, mask, ne, nmask = pipe.encode_prompt(
            prompts, do_classifier_free_guidance=null, device=pipe.transformer.device
        )
        embeds, mask = (ne, nmask) if null else (pe, mask)
        cond = {"encoder_hidden_states": embeds, "encoder_attention_mask": mask.float()}
        return cond | _size_conditions(pipe.transformer, res, len(prompts))


def _size_conditions(net: nn.Module, res: int, batch: int) -> dict[str, torch.Tensor]:
    """PixArt-α 1024's resolution and aspect-ratio inputs (square images); none for the others."""
    if not getattr(net, "use_additional_conditions", False):
        return {}
    return {"resolution": torch.tensor([[res, res]] * batch, dtype=torch.float32), "aspect_ratio": torch.ones(batch, 1)}

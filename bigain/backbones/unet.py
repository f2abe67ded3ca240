"""SD 1.x / 2.x and SDXL U-Nets (``UNet2DConditionModel``): self-attention of every transformer block.

Targets are the ``attn1`` of the ``BasicTransformerBlock``s; a target's downsample is 2**level from
its module path (down i → 2^i, up j → 2^(L−1−j), mid → 2^(L−1)). By default the highest-resolution
level that has self-attention is compressed (SD 1/2: the full-resolution level, as in the paper;
SDXL: its 2× downsampled level, since its top level has none); ``max_downsample`` picks levels
explicitly. The merge metric is the block input (the pre-norm residual stream), as in the paper's code.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from bigain.backbones.base import Backbone, Site, Target, randn
from bigain.errors import BadInput
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
            raise BadInput(
                f"{method.title} would compress nothing in {type(self.model).__name__}: its self-attention runs at "
                f"downsample {levels}, but max_downsample={method.max_downsample} (leave it unset for the "
                f"highest-resolution level with attention, {self.finest})"
            )

    # ---- calls and conditions: SD 1/2 take the text sequence; SDXL also pooled text and size ids ----
    @staticmethod
    def call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        # the latent goes positionally: tomesd's hook reads args[0]
        extra: dict[str, Any] = {}
        if "time_ids" in cond:
            extra["added_cond_kwargs"] = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return net(x, t, encoder_hidden_states=cond["encoder_hidden_states"], return_dict=False, **extra)[0]

    @staticmethod
    def narrow(config: dict[str, Any], k: int) -> dict[str, Any]:
        cfg = dict(config)
        chans = [int(c) for c in cfg["block_out_channels"]]
        heads = cfg["attention_head_dim"]  # head counts (diffusers' naming quirk)
        heads = [int(h) for h in heads] if isinstance(heads, (list, tuple)) else [int(heads)] * len(chans)
        if any(c % k or (c // k) % h for c, h in zip(chans, heads, strict=True)):
            raise BadInput(f"width scale {k}: channels {chans} / {k} must stay a multiple of the heads {heads}")
        cfg["block_out_channels"] = [c // k for c in chans]
        cfg["norm_num_groups"] = math.gcd(int(cfg.get("norm_num_groups", 32)), *cfg["block_out_channels"])
        cfg["cross_attention_dim"] = max(1, int(cfg["cross_attention_dim"]) // k)
        if cfg.get("addition_embed_type") == "text_time":  # pooled text (1280) + 6 size ids × time dim
            time_dim = int(cfg["addition_time_embed_dim"]) // k
            pooled = (int(cfg["projection_class_embeddings_input_dim"]) - 6 * int(cfg["addition_time_embed_dim"])) // k
            cfg["addition_time_embed_dim"], cfg["projection_class_embeddings_input_dim"] = (
                time_dim,
                pooled + 6 * time_dim,
            )
        return cfg

    @staticmethod
    def example_condition(
        net: nn.Module, batch: int, text: tuple[int, int] | None, res: int, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        cfg = net.config
        seq = text[0] if text else 77
        cond = {"encoder_hidden_states": randn(g, batch, seq, int(cfg.cross_attention_dim))}
        if cfg.addition_embed_type == "text_time":
            pooled = int(cfg.projection_class_embeddings_input_dim) - 6 * int(cfg.addition_time_embed_dim)
            cond["text_embeds"] = randn(g, batch, pooled)
            cond["time_ids"] = _time_ids(res, batch)
        return cond

    @staticmethod
    def text_condition(pipe: Any, prompts: list[str], null: bool, res: int) -> dict[str, torch.Tensor]:
        device = pipe.unet.device
        if getattr(pipe, "text_encoder_2", None) is None:  # SD 1/2: encode_prompt → (embeds, negative)
            out = pipe.encode_prompt(prompts, device, 1, null)
            return {"encoder_hidden_states": out[1] if null else out[0]}
        pe, ne, pooled, npooled = pipe.encode_prompt(prompt=prompts, device=device, do_classifier_free_guidance=null)
        embeds, pooled = (ne, npooled) if null else (pe, pooled)
        return {"encoder_hidden_states": embeds, "text_embeds": pooled, "time_ids": _time_ids(res, len(prompts))}


def _time_ids(res: int, batch: int) -> torch.Tensor:
    """SDXL's micro-conditioning: original size, crop top-left, target size (all square, no crop)."""
    return torch.tensor([[res, res, 0, 0, res, res]], dtype=torch.float32).expand(batch, -1).clone()

"""Joint-attention transformers (MMDiT): SD3 / SD3.5 (``SD3Transformer2DModel``) and Flux.1
(``FluxTransformer2DModel``, double- and single-stream blocks). Method doc §K.

Image and text tokens share one attention. Only the image tokens are compressed; text tokens stay
whole (all text queries, keys and values). As in the official BiGain Flux adapter, compression is
applied *after* the projections, the q/k norms and (Flux) the rotary embedding, so every merged
token carries its own rotated position: merges average image q/k/v and unmerge the image output;
KV methods downsample the image keys/values only, all queries stay. The merge metric is the
modulated image input of the attention. Targets are counted over all joint blocks (Flux: double-
then single-stream); ``blocks=`` picks them, default the paper's DiT rule (1–5, 7–11).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bigain.backbones.base import Backbone, Site, Target, WrappedProcessor
from bigain.methods import AttnCall
from bigain.record import emit


class SD3(Backbone):
    name = "sd3"
    classes = ("SD3Transformer2DModel",)
    timestep_arg = 3  # forward(hidden_states, encoder_hidden_states, pooled_projections, timestep, ...)

    def find(self, model: nn.Module) -> list[Site]:
        patch = int(model.config.patch_size)
        return [
            Site(Target(f"transformer_blocks.{i}", i, patch, "sd3"), block.attn, block)
            for i, block in enumerate(model.transformer_blocks)
        ]


class Flux(Backbone):
    name = "flux"
    classes = ("FluxTransformer2DModel",)
    timestep_arg = 3
    timestep_scale = 1000.0  # the Flux pipelines pass t / 1000

    def find(self, model: nn.Module) -> list[Site]:
        double = [
            Site(Target(f"transformer_blocks.{i}", i, 1, "flux"), b.attn, b)
            for i, b in enumerate(model.transformer_blocks)
        ]
        n = len(double)
        single = [
            Site(Target(f"single_transformer_blocks.{j}", n + j, 1, "flux-single"), b.attn, b)
            for j, b in enumerate(model.single_transformer_blocks)
        ]
        return double + single

    def latent_hw(self, sample: torch.Tensor, kwargs: dict[str, Any]) -> tuple[int, int]:
        """Flux takes packed tokens (B, N, C): the grid is ``image_grid`` if set, else square."""
        grid = getattr(self, "image_grid", None)
        if grid is not None:
            return grid
        n = int(sample.shape[1])
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"bigain: {n} Flux image tokens are not a square grid; call bigain.patch.image_grid(model, h, w)"
            )
        return side, side


class JointProcessor(WrappedProcessor):
    """Wraps the processor of one joint attention; compresses its image tokens when the active method
    targets this block, else runs the original processor."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        **kwargs: Any,
    ) -> Any:
        loc = self.state.local
        method, info = getattr(loc, "method", None), getattr(loc, "info", None)
        kw = dict(encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs)
        if image_rotary_emb is not None:
            kw["image_rotary_emb"] = image_rotary_emb
        single = self.target.kind == "flux-single"
        n_txt = getattr(loc, "text_len", None) if single else None
        if (
            method is None
            or info is None
            or self.index not in info.grids
            or attention_mask is not None
            or getattr(attn, "fused_projections", False)
            or (single and n_txt is None)
            or (not single and encoder_hidden_states is None)
        ):
            return self.original(attn, hidden_states, **kw)
        h, w = info.grids[self.index]
        image = hidden_states[:, n_txt:] if single else hidden_states
        if image.shape[1] != h * w:
            return self.original(attn, hidden_states, **kw)
        if not info.prepared:
            info.prepared = True
            method.prepare(info)
        return self._compressed(attn, method, info, hidden_states, encoder_hidden_states, image_rotary_emb, n_txt, h, w)

    def _compressed(self, attn, method, info, hidden_states, text, rope, n_txt, h, w) -> Any:
        kind = self.target.kind
        head_dim = getattr(attn, "head_dim", None) or attn.to_q.out_features // attn.heads
        q, k, v = (_heads(p(hidden_states), head_dim) for p in (attn.to_q, attn.to_k, attn.to_v))
        q, k = _norm(attn.norm_q, q), _norm(attn.norm_k, k)
        if kind == "flux-single":
            n_img = hidden_states.shape[1] - n_txt
        else:
            n_img, n_txt = hidden_states.shape[1], text.shape[1]
            tq, tk, tv = (_heads(p(text), head_dim) for p in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
            tq, tk = _norm(attn.norm_added_q, tq), _norm(attn.norm_added_k, tk)
            first = (tq, tk, tv) if kind == "flux" else (q, k, v)
            second = (q, k, v) if kind == "flux" else (tq, tk, tv)
            q, k, v = (torch.cat([a, b], dim=1) for a, b in zip(first, second, strict=True))
        if rope is not None:  # Flux: rotate every token at its own position before anything is merged
            from diffusers.models.embeddings import apply_rotary_emb

            q, k = apply_rotary_emb(q, rope, sequence_dim=1), apply_rotary_emb(k, rope, sequence_dim=1)
        img_first = kind == "sd3"
        sl = slice(0, n_img) if img_first else slice(n_txt, n_txt + n_img)
        txt = slice(n_img, n_img + n_txt) if img_first else slice(0, n_txt)
        metric = hidden_states[:, n_txt:] if kind == "flux-single" else hidden_states
        call = AttnCall(metric, metric, h, w, self.index, info)
        iq, ik, iv, unmerge, plan = method.plan_qkv(call, *(t[:, sl].flatten(2) for t in (q, k, v)))
        parts = [(iq, ik, iv), tuple(t[:, txt].flatten(2) for t in (q, k, v))]
        if not img_first:
            parts.reverse()
        q, k, v = (
            torch.cat([a, b], dim=1).unflatten(-1, (-1, head_dim)).transpose(1, 2) for a, b in zip(*parts, strict=True)
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2).to(q.dtype)
        m = iq.shape[1]
        img_out, txt_out = (out[:, :m], out[:, m:]) if img_first else (out[:, n_txt:], out[:, :n_txt])
        if unmerge is not None:
            img_out = unmerge(img_out)
        rec = getattr(self.state.local, "recorder", None)
        if rec is not None:
            emit(rec, self.target.name, info.t, h, w, n_img, plan, method.label())
        if kind == "flux-single":
            return torch.cat([txt_out, img_out], dim=1)
        img_out = attn.to_out[1](attn.to_out[0](img_out))
        if not getattr(attn, "context_pre_only", False) and getattr(attn, "to_add_out", None) is not None:
            txt_out = attn.to_add_out(txt_out)
        return img_out, txt_out


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.unflatten(-1, (-1, head_dim))  # (B, S, H, D)


def _norm(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)

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
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bigain.backbones.base import Backbone, Site, Target, WrappedProcessor, divided, randn
from bigain.errors import BadInput
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

    prediction = "flow"

    @staticmethod
    def call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return net(
            hidden_states=x,
            encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"],
            timestep=t,
            return_dict=False,
        )[0]

    @staticmethod
    def narrow(config: dict[str, Any], k: int) -> dict[str, Any]:
        cfg = divided(config, k, "attention_head_dim", "joint_attention_dim", "pooled_projection_dim")
        cfg["caption_projection_dim"] = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
        return cfg

    @staticmethod
    def example_condition(
        net: nn.Module, batch: int, text: tuple[int, int] | None, res: int, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return _text_and_pooled(net, batch, text[0] if text else 333, g)

    @staticmethod
    def text_condition(pipe: Any, prompts: list[str], null: bool, res: int) -> dict[str, torch.Tensor]:
        pe, ne, pooled, npooled = pipe.encode_prompt(
            prompts, None, None, device=pipe.transformer.device, do_classifier_free_guidance=null
        )
        embeds, pooled = (ne, npooled) if null else (pe, pooled)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}


class Flux(Backbone):
    name = "flux"
    classes = ("FluxTransformer2DModel",)
    timestep_arg = 3
    timestep_scale = 1000.0  # the Flux pipelines pass t / 1000
    prediction = "flow"

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
        grid = getattr(self, "image_grid", None) or _GRIDS.get(self.model)
        if grid is not None:
            return grid
        n = int(sample.shape[1])
        side = math.isqrt(n)
        if side * side != n:
            raise BadInput(
                f"bigain: {n} Flux image tokens are not a square grid; call bigain.patch.image_grid(model, h, w)"
            )
        return side, side

    # ---- calls and conditions: latents (B, C, H, W) are packed 2×2 into (B, H/2·W/2, 4C) tokens ----
    @staticmethod
    def latent_channels(net: nn.Module) -> int:
        return int(net.config.in_channels) // 4

    @staticmethod
    def call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h, w = hh // 2, ww // 2
        _GRIDS[getattr(net, "_orig_mod", net)] = (h, w)  # the packed tokens' grid, for latent_hw (a compiled net too)
        tokens = x.reshape(b, c, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, 4 * c)
        text = cond["encoder_hidden_states"]
        img_ids, txt_ids = _ids(h, w, text.shape[1], x.device, x.dtype)
        extra = {"guidance": cond["guidance"]} if "guidance" in cond else {}
        out = net(
            hidden_states=tokens,
            encoder_hidden_states=text,
            pooled_projections=cond["pooled_projections"],
            timestep=t / 1000,
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
            **extra,
        )[0]
        return out.reshape(b, h, w, -1, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, -1, hh, ww)

    @staticmethod
    def narrow(config: dict[str, Any], k: int) -> dict[str, Any]:
        cfg = divided(config, k, "attention_head_dim", "joint_attention_dim", "pooled_projection_dim")
        axes = [int(a) for a in cfg["axes_dims_rope"]]
        if any(a % k or (a // k) % 2 for a in axes):
            raise BadInput(f"width scale {k}: the rotary axes {axes} / {k} must stay even")
        cfg["axes_dims_rope"] = [a // k for a in axes]
        return cfg

    @staticmethod
    def example_condition(
        net: nn.Module, batch: int, text: tuple[int, int] | None, res: int, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        cond = _text_and_pooled(net, batch, text[0] if text else 256, g)
        if net.config.guidance_embeds:
            cond["guidance"] = torch.full((batch,), 3.5)
        return cond

    @staticmethod
    def text_condition(pipe: Any, prompts: list[str], null: bool, res: int) -> dict[str, torch.Tensor]:
        if null:
            raise BadInput("Flux is guidance-distilled: it has no unconditional input (use guidance 1)")
        length = (
            512 if pipe.transformer.config.guidance_embeds else 256
        )  # schnell was trained on 256 T5 tokens, dev on 512 (their pipelines' advice)
        embeds, pooled, _ = pipe.encode_prompt(
            prompts, None, device=pipe.transformer.device, max_sequence_length=length
        )
        cond = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        if pipe.transformer.config.guidance_embeds:  # FLUX.1-dev: distilled guidance as an input
            cond["guidance"] = torch.full((len(prompts),), 3.5, device=embeds.device)
        return cond


_IDS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
#: Flux models called through :meth:`Flux.call` → the (h, w) grid of their last packed latent
_GRIDS: weakref.WeakKeyDictionary[nn.Module, tuple[int, int]] = weakref.WeakKeyDictionary()


def _ids(h: int, w: int, n_txt: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux's positions: (row, column) per image token, zeros for text; cached per grid (constants)."""
    key = (h, w, n_txt, device, dtype)
    if key not in _IDS:
        rows = torch.arange(h, device=device).repeat_interleave(w)
        cols = torch.arange(w, device=device).repeat(h)
        img = torch.stack([torch.zeros_like(rows), rows, cols], 1).to(dtype)
        _IDS[key] = img, torch.zeros(n_txt, 3, device=device, dtype=dtype)
    return _IDS[key]


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
        """Only the image part of q/k/v is rebuilt: SD3 keeps image and text apart until the one concatenation
        attention needs; Flux builds and rotates the joint sequence as its own processor does, and an image part a
        method leaves alone (queries of KV methods) is used as it is, so a method adds little beyond its own ops."""
        kind = self.target.kind
        hd = getattr(attn, "head_dim", None) or attn.to_q.out_features // attn.heads
        q, k, v = (_heads(p(hidden_states), hd) for p in (attn.to_q, attn.to_k, attn.to_v))
        q, k = _norm(attn.norm_q, q), _norm(attn.norm_k, k)
        if kind != "flux-single":
            tq, tk, tv = (_heads(p(text), hd) for p in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
            tq, tk = _norm(attn.norm_added_q, tq), _norm(attn.norm_added_k, tk)
        if kind == "sd3":  # no positions to apply: image and text stay apart until attention
            n_txt = text.shape[1]
            img, txt = (q, k, v), (tq, tk, tv)
        else:  # Flux: the joint [text, image] sequence as the original processor builds it, rotated once
            if kind == "flux":
                n_txt = text.shape[1]
                q, k, v = (torch.cat([a, b], dim=1) for a, b in ((tq, q), (tk, k), (tv, v)))
            q, k = _rotate(q, rope), _rotate(k, rope)
            img = tuple(t[:, n_txt:] for t in (q, k, v))
            txt = tuple(t[:, :n_txt] for t in (q, k, v))
        n_img = img[0].shape[1]
        metric = hidden_states[:, n_txt:] if kind == "flux-single" else hidden_states
        call = AttnCall(metric, metric, h, w, self.index, info)
        flat = tuple(t.flatten(2) for t in img)
        iq, ik, iv, unmerge, plan = method.plan_qkv(call, *flat)
        img_first = kind == "sd3"
        joint = []
        for j, (a, b) in enumerate(zip((iq, ik, iv), txt, strict=True)):
            if kind != "sd3" and a is flat[j]:  # unchanged image part (Flux): the joint tensor as it was
                joint.append((q, k, v)[j].transpose(1, 2))
                continue
            a = a.unflatten(-1, (-1, hd))
            joint.append(torch.cat([a, b] if img_first else [b, a], dim=1).transpose(1, 2))
        out = F.scaled_dot_product_attention(*joint).transpose(1, 2).flatten(2).to(q.dtype)
        m = iq.shape[1]
        img_out, txt_out = (out[:, :m], out[:, m:]) if img_first else (out[:, n_txt:], out[:, :n_txt])
        rec = getattr(self.state.local, "recorder", None)
        if rec is not None:
            emit(rec, self.target.name, info.timestep, h, w, n_img, plan, method.label())
        if kind == "flux-single":
            return out if unmerge is None else torch.cat([txt_out, unmerge(img_out)], dim=1)
        if unmerge is not None:
            img_out = unmerge(img_out)
        img_out = attn.to_out[1](attn.to_out[0](img_out))
        if not getattr(attn, "context_pre_only", False) and getattr(attn, "to_add_out", None) is not None:
            txt_out = attn.to_add_out(txt_out)
        return img_out, txt_out


def _text_and_pooled(net: nn.Module, batch: int, seq: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random text tokens and pooled text of an MMDiT's widths (benchmarks and tests)."""
    cfg = net.config
    return {
        "encoder_hidden_states": randn(g, batch, seq, int(cfg.joint_attention_dim)),
        "pooled_projections": randn(g, batch, int(cfg.pooled_projection_dim)),
    }


def _rotate(x: torch.Tensor, rope: Any) -> torch.Tensor:
    """Flux's rotary embedding on (B, S, H, D) tokens (no-op without one)."""
    if rope is None:
        return x
    from diffusers.models.embeddings import apply_rotary_emb

    return apply_rotary_emb(x, rope, sequence_dim=1)


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.unflatten(-1, (-1, head_dim))  # (B, S, H, D)


def _norm(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)

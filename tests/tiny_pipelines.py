"""Tiny diffusers pipelines of every supported family, built from configs with random weights and
saved with ``save_pretrained``, so the loader is tested on real folders without any download.
Text encoders are one-layer CLIP/T5 models with byte- and character-level tokenizers made here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def clip_tokenizer():
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())  # byte-level BPE with no merges: one token per byte
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def vae(latent_channels: int = 4, **kw: Any):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8),
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=16,
        **kw,
    )


def save_tiny_sd(folder: Path) -> Path:
    """A StableDiffusionPipeline (U-Net with attention at full resolution, 1-layer CLIP) → folder."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae(),
        text_encoder=clip(16),
        tokenizer=clip_tokenizer(),
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def save_tiny_dit(folder: Path) -> Path:
    """A DiTPipeline (3 blocks, learned σ, 4 classes) → folder, with an ImageNet-style id2label."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    net = DiTTransformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        num_attention_heads=2,
        attention_head_dim=8,
        num_embeds_ada_norm=4,
        norm_num_groups=4,
    )
    DiTPipeline(transformer=net, vae=vae(), scheduler=DDIMScheduler()).save_pretrained(folder)
    index = folder / "model_index.json"
    data = json.loads(index.read_text())
    data["id2label"] = {"0": "tench, Tinca tinca", "1": "goldfish", "2": "great white shark", "3": "tiger shark"}
    index.write_text(json.dumps(data))
    return folder


def t5_tokenizer(length: int = 16):
    """A character-level Unigram T5 tokenizer (the real one needs a sentencepiece file)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [
        (c, -1.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789., "
    ]
    return T5TokenizerFast(
        vocab=pieces, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0, model_max_length=length
    )


def t5(d_model: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=64, d_model=d_model, d_kv=4, d_ff=16, num_layers=1, num_heads=2, pad_token_id=0)
    return T5EncoderModel(cfg)


def clip(hidden: int, projection: int | None = None):
    """A one-layer CLIP text encoder (with a projection: the pooled ``text_embeds`` of SDXL/SD3)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tok = clip_tokenizer()
    cfg = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        projection_dim=projection or hidden,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def save_tiny_sdxl(folder: Path) -> Path:
    """SDXL: no attention at the top level, two CLIPs (cross-attention 8 + 8), pooled text + size ids."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=8 + 6 * 4,
    )
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    StableDiffusionXLPipeline(
        vae=vae(),
        text_encoder=clip(8),
        text_encoder_2=clip(8, projection=8),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=sched,
    ).save_pretrained(folder)
    return folder


def save_tiny_pixart(folder: Path) -> Path:
    """PixArt-α: adaLN-single DiT (6 blocks) with cross-attention to a one-layer T5."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    net = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=6,
        cross_attention_dim=16, sample_size=8, patch_size=2, norm_type="ada_norm_single", caption_channels=8,
    )  # fmt: skip
    PixArtAlphaPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=t5(8),
        vae=vae(),
        transformer=net,
        scheduler=DPMSolverMultistepScheduler(),
    ).save_pretrained(folder)
    return folder


def save_tiny_sd3(folder: Path) -> Path:
    """SD3: 4 joint blocks, two CLIPs with projections and a T5 (CLIP embeddings padded to its width)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    net = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=4, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=16, out_channels=16,
        pos_embed_max_size=16,
    )  # fmt: skip
    StableDiffusion3Pipeline(
        transformer=net,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae(16, shift_factor=0.1, scaling_factor=1.5),
        text_encoder=clip(8, projection=8),
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip(8, projection=8),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5(32),
        tokenizer_3=t5_tokenizer(),
    ).save_pretrained(folder)
    return folder


def save_tiny_flux(folder: Path) -> Path:
    """Flux.1 (schnell-like, no guidance input): 2 double- and 3 single-stream blocks, CLIP + T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    net = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=3, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=8, axes_dims_rope=(2, 2, 4),
    )  # fmt: skip
    FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae(16, shift_factor=0.1, scaling_factor=1.5),
        text_encoder=clip(8),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5(16),
        tokenizer_2=t5_tokenizer(),
        transformer=net,
    ).save_pretrained(folder)
    return folder


#: family → builder of a tiny saved pipeline
SAVERS = {
    "sd": save_tiny_sd,
    "sdxl": save_tiny_sdxl,
    "dit": save_tiny_dit,
    "pixart": save_tiny_pixart,
    "sd3": save_tiny_sd3,
    "flux": save_tiny_flux,
}

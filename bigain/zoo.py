"""Every architecture and model card bigain knows, and the one builder.

* :data:`ARCHS`: denoiser architectures as their diffusers class and constructor config: the
  embedded digits models (trained by :mod:`bigain.train`, weights in ``assets/``) and the published
  configs of SD 2, SDXL, DiT-XL/2, PixArt-α/Σ, SD3 and Flux.1. The benchmark builds them with random
  weights (speed does not depend on weight values); the tests build them narrow.
* :data:`CARDS`: what a loadable model is and how the pipelines use it by default (repo, sampler,
  steps, guidance, conditioning, classifier protocol).
* :func:`build`: a fresh denoiser from an architecture, optionally at 1/k of its width.

What is specific to a family (its forward signature, its conditioning, how it narrows) lives in its
backbone adapter (:mod:`bigain.backbones`); this module is data.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigain.errors import BadInput

# ---- architectures --------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """A denoiser architecture. ``cls``: the diffusers model class; ``config``: its constructor
    arguments; ``scale``: image pixels per latent cell (VAE factor, or the digits U-Net's space-to-depth);
    ``res``: the default image side; ``text``: (tokens, width) of the conditioning sequence the denoiser
    attends to (None: class labels); ``tokens``: the digits U-Net's learned class-token table."""

    cls: str
    config: dict[str, Any]
    scale: int
    res: int
    text: tuple[int, int] | None = None
    tokens: dict[str, int] | None = None
    description: str = ""
    #: pixel-space models only: the lossless f×f pixels → f² channels "autoencoder" (1: none)
    space_to_depth: int = 1


#: stabilityai/stable-diffusion-2-base, unet/config.json (``attention_head_dim`` holds head counts,
#: a diffusers naming quirk: 5, 10, 20, 20 heads of 64 channels).
SD2_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
}

#: stabilityai/stable-diffusion-xl-base-1.0, unet/config.json: no attention at full resolution,
#: 2 and 10 transformer layers at the 2× and 4× levels, pooled-text + size conditioning ("text_time").
SDXL_UNET: dict[str, Any] = {
    **SD2_UNET,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
}

#: facebook/DiT-XL-2-256 (and -512 with sample_size 64), transformer/config.json.
DIT_XL2: dict[str, Any] = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "dropout": 0.0,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_num_groups": 32,
    "norm_type": "ada_norm_zero",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 32,
    "upcast_attention": False,
}

#: PixArt-alpha/PixArt-XL-2-512x512, transformer/config.json (Σ-1024: sample_size 128, interpolation 2).
PIXART: dict[str, Any] = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "caption_channels": 4096,
    "cross_attention_dim": 1152,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "norm_type": "ada_norm_single",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 64,
    "upcast_attention": False,
    "use_additional_conditions": False,
}

#: stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json.
SD3_MEDIUM: dict[str, Any] = {
    "attention_head_dim": 64,
    "caption_projection_dim": 1536,
    "in_channels": 16,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 24,
    "out_channels": 16,
    "patch_size": 2,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
    "sample_size": 128,
}

#: black-forest-labs/FLUX.1-schnell, transformer/config.json (16 latent channels packed 2×2 → 64).
FLUX_SCHNELL: dict[str, Any] = {
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": False,
    "in_channels": 64,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 19,
    "num_single_layers": 38,
    "patch_size": 1,
    "pooled_projection_dim": 768,
}

#: The embedded digits models (pixel space, 1 channel, 16×16), trained by ``python -m bigain.train``.
DIGITS_DIT: dict[str, Any] = {
    "sample_size": 16,
    "patch_size": 2,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 4,
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "num_embeds_ada_norm": 10,
    "norm_type": "ada_norm_zero",
}
#: On a 2× space-to-depth latent (16×16×1 → 8×8×4, lossless) the top attention level has 64 distinct
#: tokens; on the 16×16 image itself 2×2 neighbours are near copies (the digits are 8×8 upsampled), so
#: merging or KV-downsampling them changed nothing (docs/models-and-pipelines.md). One level: every
#: attention layer (down, mid, up) runs on the 8×8 tokens that methods compress.
DIGITS_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D"],
    "block_out_channels": [64],
    "layers_per_block": 1,
    "transformer_layers_per_block": 2,
    "cross_attention_dim": 64,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}

#: The embedded glyph models (pixel space, 1 channel, 32×32 letters A–Z): 1024 tokens at every layer
#: compressed by default, where token compression pays on a CPU (docs/models-and-pipelines.md).
#: DiT: patch 1, width 64 (2 heads of 32), 6 blocks: narrow, so attention is most of the cost.
GLYPHS_DIT: dict[str, Any] = {
    "sample_size": 32,
    "patch_size": 1,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 6,
    "num_attention_heads": 2,
    "attention_head_dim": 32,
    "num_embeds_ada_norm": 26,
    "norm_type": "ada_norm_zero",
}
#: U-Net: self- and cross-attention (to learned class tokens) only at the full 32×32 level; the 16×16
#: level is convolutional but for the mid block, which the default (finest level) leaves alone.
GLYPHS_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [64, 128],
    "layers_per_block": 1,
    "transformer_layers_per_block": 1,
    "cross_attention_dim": 64,
    "attention_head_dim": 2,
    "norm_num_groups": 16,
}

_UNET, _DIT, _PIXART = "UNet2DConditionModel", "DiTTransformer2DModel", "PixArtTransformer2DModel"
_SD3, _FLUX = "SD3Transformer2DModel", "FluxTransformer2DModel"

ARCHS: dict[str, Arch] = {
    "glyphs-dit": Arch(_DIT, GLYPHS_DIT, 1, 32, description="DiT, 6 blocks, hidden 64, patch 1 → 32×32 tokens"),
    "glyphs-unet": Arch(
        _UNET,
        GLYPHS_UNET,
        1,
        32,
        text=(4, 64),
        tokens={"seq_len": 4, "dim": 64},
        description="two-level U-Net (64, 128), attention at 32×32 tokens",
    ),
    "digits-dit": Arch(_DIT, DIGITS_DIT, 1, 16, description="DiT, 4 blocks, hidden 128, patch 2 → 8×8 tokens"),
    "digits-unet": Arch(
        _UNET,
        DIGITS_UNET,
        2,
        16,
        text=(4, 64),
        tokens={"seq_len": 4, "dim": 64},
        description="one-level U-Net on 2× space-to-depth digits",
        space_to_depth=2,
    ),
    "sd2-base": Arch(_UNET, SD2_UNET, 8, 512, text=(77, 1024), description="SD 2 base U-Net"),
    "sdxl-base": Arch(_UNET, SDXL_UNET, 8, 1024, text=(77, 2048), description="SDXL base U-Net"),
    "dit-xl-2-256": Arch(_DIT, DIT_XL2, 8, 256, description="DiT-XL/2 at 256 px"),
    "dit-xl-2-512": Arch(_DIT, {**DIT_XL2, "sample_size": 64}, 8, 512, description="DiT-XL/2 at 512 px"),
    "pixart-alpha-512": Arch(_PIXART, PIXART, 8, 512, text=(120, 4096), description="PixArt-α XL/2 at 512 px"),
    "pixart-sigma-1024": Arch(
        _PIXART,
        {**PIXART, "sample_size": 128, "interpolation_scale": 2},
        8,
        1024,
        text=(300, 4096),
        description="PixArt-Σ XL/2 at 1024 px",
    ),
    "sd3-medium": Arch(_SD3, SD3_MEDIUM, 8, 1024, text=(333, 4096), description="SD3 medium MMDiT (24 joint blocks)"),
    "flux-schnell": Arch(
        _FLUX, FLUX_SCHNELL, 8, 1024, text=(256, 4096), description="Flux.1 schnell (19 double + 38 single blocks)"
    ),
}

#: The config files of the first embedded models name a family, not a class.
_LEGACY_FAMILY = {"dit": _DIT, "unet": _UNET}


def arch(name: str) -> Arch:
    """The architecture called ``name``; a ValueError naming the known ones otherwise."""
    if name not in ARCHS:
        raise BadInput(f"unknown architecture {name!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[name]


def arch_of_config(cfg: dict[str, Any]) -> Arch:
    """The architecture recorded in an embedded model's ``config.json`` (written by :mod:`bigain.train`)."""
    cls = cfg.get("class") or _LEGACY_FAMILY[cfg["family"]]
    tok = cfg.get("tokens")
    scale = int(cfg.get("space_to_depth", 1))
    text = (int(tok["seq_len"]), int(tok["dim"])) if tok else None
    res = int(cfg.get("resolution", 16))
    return Arch(cls, dict(cfg["denoiser"]), scale, res, text=text, tokens=tok, space_to_depth=scale)


class ClassTokens(nn.Module):
    """A learned token sequence per class, standing in for a text prompt: row ``num_classes`` is
    the null (unconditional) sequence used for classifier-free guidance.

    forward: (B,) class ids in [0, num_classes] → (B, seq_len, dim) encoder hidden states."""

    def __init__(self, num_classes: int, seq_len: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.randn(num_classes + 1, seq_len, dim) * 0.5)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.weight[labels]


def label_condition(tokens: nn.Module | None, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The condition of class ids for an embedded model: the labels (DiT) or their learned tokens (U-Net)."""
    return {"class_labels": ids} if tokens is None else {"encoder_hidden_states": tokens(ids)}


def model_class(name: str) -> type[nn.Module]:
    """A diffusers model class by name (imported lazily: diffusers is slow to import)."""
    import diffusers

    return getattr(diffusers, name)


def narrow(a: Arch, k: int) -> Arch:
    """The architecture at 1/k of its width (same depth, blocks, heads and token grids): op counts do
    not depend on width, and a narrow model compiles and runs quickly on a CPU. The adapter of the
    architecture's family knows which config entries are widths."""
    from bigain.backbones import adapter_for_class

    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadInput(f"width scale must be an integer ≥ 1, got {k!r}")
    if k == 1:
        return a
    text = None if a.text is None else (a.text[0], max(1, a.text[1] // k))
    return replace(a, config=adapter_for_class(a.cls).narrow(dict(a.config), k), text=text)


def build(
    a: Arch | str,
    *,
    num_classes: int = 10,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = 0,
    width: int = 1,
) -> tuple[nn.Module, nn.Module | None]:
    """A fresh denoiser (random weights, seeded) and, for the digits U-Net, its class-token table
    (``num_classes`` classes plus the null one). ``width``: build at 1/width of the width (:func:`narrow`)."""
    a = narrow(arch(a) if isinstance(a, str) else a, width)
    cls = model_class(a.cls)
    allowed = set(inspect.signature(cls.__init__).parameters)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device):
        net = cls(**{k: v for k, v in a.config.items() if k in allowed})
        tokens = None if a.tokens is None else ClassTokens(num_classes, a.tokens["seq_len"], a.tokens["dim"])
    # nn.Module.to: diffusers' ModelMixin.to warns about "modules kept in float32" even when there are none.
    nn.Module.to(net, dtype=dtype)
    if tokens is not None:
        tokens.to(dtype)
    return net.eval().requires_grad_(False), tokens


def assets_dir() -> Path:
    """Where the embedded models live: ``$BIGAIN_ASSETS`` if set, else ``assets/`` next to the package."""
    env = os.environ.get("BIGAIN_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "assets"


# ---- cards ----------------------------------------------------------------------------------

#: Li et al.'s adaptive protocol (bigain-method.md §F): pool range(25, 1000, 50); round 1 evaluates
#: 5 pool timesteps for every class and keeps 5 classes, round 2 the whole pool for the survivors.
PAPER_PROTOCOL: dict[str, Any] = {"n_pool": 20, "n_samples": (5, 20), "to_keep": (5, 1)}
#: Digits: 10 shared-noise timesteps (pool range(50, 1000, 100)) for all 10 classes in one round.
DIGITS_PROTOCOL: dict[str, Any] = {"n_pool": 10, "n_samples": (10,), "to_keep": (1,)}

#: Glyphs (26 classes): 10 shared-noise timesteps (pool range(50, 1000, 100)); round 1 runs 3 of them
#: for every class and keeps the best 5, round 2 the whole pool for those.
GLYPHS_PROTOCOL: dict[str, Any] = {"n_pool": 10, "n_samples": (3, 10), "to_keep": (5, 1)}
#: Sampling steps of the glyph models (DDIM): what the app's default comparison can afford on 2 vCPUs.
GLYPHS_STEPS = 20

#: DDPM noise schedule the embedded models are trained with (the DiT convention).
DIGITS_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class ModelCard:
    """What a model is and how the pipelines use it by default.

    arch: its :data:`ARCHS` entry (None for local folders: the denoiser's own config says);
    conditioning: "labels" (class ids) or "prompts" (free text); resolution: image side in pixels;
    sampler: "ddim", "euler", "dpm" or "flow" (flow matching); blocks: transformer blocks compressed
    by default (None: the backbone's default); protocol: the diffusion-classifier rounds."""

    name: str
    source: str  # "embedded", "hub" or "local"
    repo: str
    conditioning: str
    resolution: int
    arch: str | None = None
    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 4.0
    blocks: tuple[int, ...] | None = None
    prompt_template: str | None = None
    protocol: dict[str, Any] = field(default_factory=lambda: dict(PAPER_PROTOCOL))
    description: str = ""
    #: embedded models: the bundled dataset they were trained on (:mod:`bigain.worlds`)
    world: str | None = None


def _card(name: str, repo: str, res: int, **kw: Any) -> ModelCard:
    return ModelCard(name, "hub", repo, kw.pop("conditioning", "prompts"), res, arch=name, **kw)


_PHOTO = "a photo of a {}."
CARDS: dict[str, ModelCard] = {
    "glyphs-dit": ModelCard(
        "glyphs-dit",
        "embedded",
        "glyphs-dit",
        "labels",
        32,
        arch="glyphs-dit",
        steps=GLYPHS_STEPS,
        guidance=2.0,
        blocks=(1, 2, 3, 4),
        protocol=dict(GLYPHS_PROTOCOL),
        description="DiT (6 blocks, hidden 64, patch 1 → 32×32 tokens) trained on capitals from 17 bundled fonts",
        world="glyphs",
    ),
    "glyphs-unet": ModelCard(
        "glyphs-unet",
        "embedded",
        "glyphs-unet",
        "labels",
        32,
        arch="glyphs-unet",
        steps=GLYPHS_STEPS,
        guidance=2.0,
        protocol=dict(GLYPHS_PROTOCOL),
        description="U-Net (64, 128), attention to learned class tokens at 32×32, trained on capitals from 17 fonts",
        world="glyphs",
    ),
    "digits-dit": ModelCard(
        "digits-dit",
        "embedded",
        "digits-dit",
        "labels",
        16,
        arch="digits-dit",
        steps=25,
        guidance=2.0,
        blocks=(1, 2, 3),
        protocol=dict(DIGITS_PROTOCOL),
        world="digits",
        description="DiT (4 blocks, hidden 128, patch 2 → 8×8 tokens) trained on sklearn digits at 16×16",
    ),
    "digits-unet": ModelCard(
        "digits-unet",
        "embedded",
        "digits-unet",
        "labels",
        16,
        arch="digits-unet",
        steps=25,
        guidance=2.0,
        protocol=dict(DIGITS_PROTOCOL),
        world="digits",
        description="U-Net, cross-attention to learned class tokens, on 8×8×4 space-to-depth latents of 16×16 digits",
    ),
    "sd2-base": _card(
        "sd2-base",
        "stabilityai/stable-diffusion-2-base",
        512,
        sampler="euler",
        guidance=7.5,
        prompt_template=_PHOTO,
        description="Stable Diffusion 2 base (512 px, Euler 50, CFG 7.5)",
    ),
    "sdxl-base": _card(
        "sdxl-base",
        "stabilityai/stable-diffusion-xl-base-1.0",
        1024,
        sampler="euler",
        steps=30,
        guidance=5.0,
        prompt_template=_PHOTO,
        description="Stable Diffusion XL base 1.0 (1024 px, Euler 30, CFG 5)",
    ),
    "dit-xl-2-256": _card(
        "dit-xl-2-256",
        "facebook/DiT-XL-2-256",
        256,
        conditioning="labels",
        description="DiT-XL/2 class-conditional ImageNet model, 256 px (DDIM 50, CFG 4)",
    ),
    "dit-xl-2-512": _card(
        "dit-xl-2-512",
        "facebook/DiT-XL-2-512",
        512,
        conditioning="labels",
        description="DiT-XL/2 class-conditional ImageNet model, 512 px (DDIM 50, CFG 4)",
    ),
    "pixart-alpha-512": _card(
        "pixart-alpha-512",
        "PixArt-alpha/PixArt-XL-2-512x512",
        512,
        sampler="dpm",
        steps=20,
        guidance=4.5,
        prompt_template=_PHOTO,
        description="PixArt-α XL/2, 512 px (T5 text, DPM-Solver 20, CFG 4.5)",
    ),
    "pixart-sigma-1024": _card(
        "pixart-sigma-1024",
        "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
        1024,
        sampler="dpm",
        steps=20,
        guidance=4.5,
        prompt_template=_PHOTO,
        description="PixArt-Σ XL/2, 1024 px (T5 text, DPM-Solver 20, CFG 4.5)",
    ),
    "sd3-medium": _card(
        "sd3-medium",
        "stabilityai/stable-diffusion-3-medium-diffusers",
        1024,
        sampler="flow",
        steps=28,
        guidance=7.0,
        prompt_template=_PHOTO,
        description="Stable Diffusion 3 medium (1024 px, flow matching, Euler 28, CFG 7; gated: accept the licence)",
    ),
    "flux-schnell": _card(
        "flux-schnell",
        "black-forest-labs/FLUX.1-schnell",
        1024,
        sampler="flow",
        steps=4,
        guidance=1.0,
        prompt_template=_PHOTO,
        description="FLUX.1 schnell (1024 px, flow matching, 4 steps, guidance-distilled: no CFG)",
    ),
}
ALIASES: dict[str, str] = {c.repo.lower(): c.name for c in CARDS.values()}

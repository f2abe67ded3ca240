"""Model cards and one loaded-model interface for every backbone.

``load_model(name_or_path)`` returns a :class:`LoadedModel` whatever the backbone: the embedded
digits models (pixel space, shipped in ``assets/``), Stable Diffusion 2 base (latent, prompts)
and DiT-XL/2 (latent, ImageNet labels) from the Hugging Face hub or its cache, or any local
diffusers folder. Pipelines only talk to this interface.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bigain.execution import Executor

# ---- embedded digits architectures ---------------------------------------------------------

#: Architectures of the embedded models (diffusers constructor arguments). Pixel space, 1 channel.
DIGITS_ARCH: dict[str, dict[str, Any]] = {
    "digits-dit": {
        "family": "dit",
        "denoiser": {
            "sample_size": 16,
            "patch_size": 2,
            "in_channels": 1,
            "out_channels": 1,
            "num_layers": 4,
            "num_attention_heads": 4,
            "attention_head_dim": 32,
            "num_embeds_ada_norm": 10,
            "norm_type": "ada_norm_zero",
        },
    },
    "digits-unet": {
        "family": "unet",
        # On a 2× space-to-depth latent (16×16×1 → 8×8×4, lossless): the top attention level then has 64
        # distinct tokens. On the 16×16 image itself 2×2 neighbours are near copies (the digits are 8×8
        # upsampled), so merging or KV-downsampling them changed nothing (see docs/models-and-pipelines.md).
        "space_to_depth": 2,
        "denoiser": {
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            # One level: every attention layer (down, mid, up) runs on the 8×8 tokens that methods compress.
            "down_block_types": ["CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D"],
            "block_out_channels": [64],
            "layers_per_block": 1,
            "transformer_layers_per_block": 2,
            "cross_attention_dim": 64,
            "attention_head_dim": 4,
            "norm_num_groups": 8,
        },
        "tokens": {"seq_len": 4, "dim": 64},
    },
}

#: DDPM noise schedule the embedded models are trained with (the DiT convention).
DIGITS_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}


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


def build_digits(name: str) -> tuple[nn.Module, nn.Module | None]:
    """Fresh (randomly initialised) denoiser and, for the U-Net, its class-token table."""
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel

    if name not in DIGITS_ARCH:
        raise ValueError(f"unknown embedded model {name!r}; choose one of {sorted(DIGITS_ARCH)}")
    arch = DIGITS_ARCH[name]
    if arch["family"] == "dit":
        return DiTTransformer2DModel(**arch["denoiser"]), None
    tok = arch["tokens"]
    return UNet2DConditionModel(**arch["denoiser"]), ClassTokens(10, tok["seq_len"], tok["dim"])


def assets_dir() -> Path:
    """Where the embedded models live: ``$BIGAIN_ASSETS`` if set, else ``assets/`` next to the package."""
    env = os.environ.get("BIGAIN_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "assets"


# ---- cards ---------------------------------------------------------------------------------


class ModelUnavailable(OSError):
    """The model's weights cannot be had here; the message says what is missing and how to get it."""


#: Li et al.'s adaptive protocol (bigain-method.md §F): pool range(25, 1000, 50); round 1 evaluates
#: 5 pool timesteps for every class and keeps 5 classes, round 2 the whole pool for the survivors.
PAPER_PROTOCOL: dict[str, Any] = {"n_pool": 20, "n_samples": (5, 20), "to_keep": (5, 1)}
#: Digits: 10 shared-noise timesteps (pool range(50, 1000, 100)) for all 10 classes in one round.
DIGITS_PROTOCOL: dict[str, Any] = {"n_pool": 10, "n_samples": (10,), "to_keep": (1,)}


@dataclass(frozen=True)
class ModelCard:
    """What a model is and how the pipelines use it by default.

    family: "dit" or "unet" (what bigain patches); conditioning: "labels" (class ids) or "prompts"
    (free text); resolution: image side in pixels; blocks: DiT blocks compressed by default (None =
    the paper's 1–5, 7–11); protocol: the diffusion-classifier rounds (see ``bigain.pipelines.classify``).
    """

    name: str
    family: str
    source: str  # "embedded", "hub" or "local"
    repo: str
    conditioning: str
    resolution: int
    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 4.0
    blocks: tuple[int, ...] | None = None
    prompt_template: str | None = None
    protocol: dict[str, Any] = field(default_factory=lambda: dict(PAPER_PROTOCOL))
    description: str = ""


CARDS: dict[str, ModelCard] = {
    "digits-dit": ModelCard(
        "digits-dit",
        "dit",
        "embedded",
        "digits-dit",
        "labels",
        16,
        steps=25,
        guidance=2.0,
        blocks=(1, 2, 3),
        protocol=dict(DIGITS_PROTOCOL),
        description="DiT (4 blocks, hidden 128, patch 2 → 8×8 tokens) trained on sklearn digits at 16×16",
    ),
    "digits-unet": ModelCard(
        "digits-unet",
        "unet",
        "embedded",
        "digits-unet",
        "labels",
        16,
        steps=25,
        guidance=2.0,
        protocol=dict(DIGITS_PROTOCOL),
        description="U-Net, cross-attention to learned class tokens, on 8×8×4 space-to-depth latents of 16×16 digits",
    ),
    "sd2-base": ModelCard(
        "sd2-base",
        "unet",
        "hub",
        "stabilityai/stable-diffusion-2-base",
        "prompts",
        512,
        sampler="euler",
        steps=50,
        guidance=7.5,
        prompt_template="a photo of a {}.",
        description="Stable Diffusion 2 base (512 px, Euler, CFG 7.5)",
    ),
    "dit-xl-2-256": ModelCard(
        "dit-xl-2-256",
        "dit",
        "hub",
        "facebook/DiT-XL-2-256",
        "labels",
        256,
        description="DiT-XL/2 class-conditional ImageNet model, 256 px (DDIM, CFG 4)",
    ),
    "dit-xl-2-512": ModelCard(
        "dit-xl-2-512",
        "dit",
        "hub",
        "facebook/DiT-XL-2-512",
        "labels",
        512,
        description="DiT-XL/2 class-conditional ImageNet model, 512 px (DDIM, CFG 4)",
    ),
}
_ALIASES = {c.repo.lower(): c.name for c in CARDS.values()}


# ---- the loaded-model interface ------------------------------------------------------------


class LoadedModel:
    """One interface over every backbone. Shapes: images (B, C_img, R, R) in [-1, 1]; latents
    (B, C_lat, L, L) (= images for pixel-space digits); conditions are dicts of denoiser kwargs
    with batch-first tensors. The object is read-only after loading, so threads may share it."""

    def __init__(
        self,
        card: ModelCard,
        denoiser: nn.Module,
        scheduler_config: dict[str, Any],
        classes: list[str] | None,
        *,
        vae: nn.Module | None = None,
        text_encoder: nn.Module | None = None,
        tokenizer: Any = None,
        tokens: nn.Module | None = None,
        null_label: int | None = None,
        image_channels: int = 3,
        space_to_depth: int = 1,
    ) -> None:
        self.card = card
        self.denoiser = denoiser
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.classes = classes
        self.null_label = null_label
        self.image_channels = image_channels
        self.space_to_depth = int(space_to_depth)
        self._scheduler_config = dict(scheduler_config)
        self._synonyms = _synonym_table(classes) if classes else {}
        self._text_cache: dict[str, torch.Tensor] = {}
        p = next(denoiser.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.latent_channels = int(denoiser.config.in_channels)
        self.alphas_cumprod = self.scheduler().alphas_cumprod.float().clone()

    def __repr__(self) -> str:
        return f"LoadedModel({self.card.name!r}, family={self.card.family}, device={self.device}, dtype={self.dtype})"

    # ---- basics ------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.card.resolution

    @property
    def latent_size(self) -> int:
        return int(self.denoiser.config.sample_size)

    @property
    def blocks(self) -> tuple[int, ...] | None:
        return self.card.blocks

    def scheduler(self, sampler: str | None = None) -> Any:
        """A fresh scheduler (safe to step in one thread): "ddim" or "euler" (default: the card's)."""
        from diffusers import DDIMScheduler, EulerDiscreteScheduler

        kind = (sampler or self.card.sampler).lower()
        table = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
        if kind not in table:
            raise ValueError(f"sampler must be one of {sorted(table)}, got {sampler!r}")
        return table[kind].from_config(self._scheduler_config)

    # ---- images and latents ------------------------------------------------------------------
    def preprocess(self, image: Any) -> torch.Tensor:
        """A PIL image (any mode), numpy array (H×W or H×W×C, uint8 or float), torch tensor
        (C×H×W in [-1, 1]) or file path → (1, C_img, R, R) float32 in [-1, 1] on the CPU."""
        return to_model_image(image, self.resolution, self.image_channels, digits=self.card.source == "embedded")

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C_img, R, R) in [-1, 1] → latents: VAE posterior mean × scaling factor; for pixel-space
        digits models the identity, or a lossless space-to-depth (f×f pixels → f² channels)."""
        x = images.to(self.device, self.dtype)
        if self.vae is None:
            return to_latent(x, self.space_to_depth)
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → (B, C_img, R, R) images in [-1, 1] (float32)."""
        if self.vae is None:
            return to_image(latents.float(), self.space_to_depth).clamp(-1, 1)
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(z).sample.float().clamp(-1, 1)

    # ---- conditioning ------------------------------------------------------------------------
    def class_id(self, c: int | str) -> int:
        """A class given by index, digit string or (case-insensitive) name/synonym → its index."""
        if self.classes is None:
            raise ValueError(f"{self.card.name} is conditioned on free text, it has no class indices")
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= int(c) < len(self.classes):
                raise ValueError(f"class index {c} out of range for {self.card.name} (0–{len(self.classes) - 1})")
            return int(c)
        if isinstance(c, str):
            key = c.strip().lower()
            if key in self._synonyms:
                return self._synonyms[key]
            if key.isdigit() and int(key) < len(self.classes):
                return int(key)
            raise ValueError(f"unknown class {c!r} for {self.card.name}; e.g. {', '.join(self.classes[:5])}, …")
        raise TypeError(f"a class must be an int or a str, got {type(c).__name__}")

    def condition(self, conds: list[int | str] | tuple[int | str, ...]) -> dict[str, torch.Tensor]:
        """One condition per batch item (class ids/names, or prompts for text models) → denoiser kwargs."""
        if not isinstance(conds, (list, tuple)) or not conds:
            raise ValueError("condition() needs a non-empty list of classes or prompts")
        if self.card.conditioning == "prompts":
            for c in conds:
                if not isinstance(c, str):
                    raise TypeError(f"{self.card.name} is conditioned on text; got {type(c).__name__} {c!r}")
            return {"encoder_hidden_states": self._encode_text(list(conds))}
        ids = torch.tensor([self.class_id(c) for c in conds], device=self.device)
        return self._labels(ids)

    def null_condition(self, n: int) -> dict[str, torch.Tensor]:
        """The unconditional input for classifier-free guidance, for n items."""
        if self.card.conditioning == "prompts":
            return {"encoder_hidden_states": self._encode_text([""] * n)}
        if self.null_label is None:
            raise ValueError(f"{self.card.name} has no null class, so it cannot use classifier-free guidance")
        return self._labels(torch.full((n,), self.null_label, device=self.device))

    def _labels(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.tokens is not None:
            with torch.no_grad():
                return {"encoder_hidden_states": self.tokens(ids).to(self.dtype)}
        return {"class_labels": ids}

    @torch.no_grad()
    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tok = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            hidden = self.text_encoder(tok.input_ids.to(self.text_encoder.device))[0].to(self.dtype)
            for p, h in zip(missing, hidden, strict=True):
                self._text_cache[p] = h
        return torch.stack([self._text_cache[p] for p in prompts])

    # ---- the denoiser ------------------------------------------------------------------------
    @torch.no_grad()
    def eps(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        cond: dict[str, torch.Tensor],
        *,
        mode: str = "eager",
        t_host: Any = None,
        fresh: bool = False,
    ) -> torch.Tensor:
        """One denoiser call: x_t (B, C_lat, L, L), t scalar or (B,) → ε (B, C_lat, L, L) (learned σ dropped).

        mode: ``eager``, ``compile`` or ``cudagraph`` (:mod:`bigain.execution`). t_host: the
        timesteps as the host knows them (defaults to ``t`` when it is a number or a CPU tensor), so
        compression decides the t = 0 rule without reading a device tensor; fresh: a new batch (the
        classifier), so cached merge assignments are rebuilt."""
        if t_host is None and not (isinstance(t, torch.Tensor) and t.device.type != "cpu"):
            t_host = t
        x = x_t.to(self.device, self.dtype)
        t = torch.as_tensor(t, device=self.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        run = self.executor(mode)
        if self.card.family == "dit":
            out = run(_dit_call, x, t, cond["class_labels"], t_host=t_host, fresh=fresh)
        else:
            out = run(_unet_call, x, t, cond["encoder_hidden_states"], t_host=t_host, fresh=fresh)
        return out[:, : self.latent_channels]

    def executor(self, mode: str = "eager") -> Executor:
        """The denoiser's runner in an execution mode, built on first use (compiled/captured lazily)."""
        runners = self.__dict__.setdefault("_executors", {})
        if mode not in runners:
            runners[mode] = Executor(self.denoiser, mode)
        return runners[mode]


def _dit_call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return net(x, timestep=t, class_labels=labels).sample


def _unet_call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
    return net(x, t, encoder_hidden_states=enc).sample


def to_latent(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Space-to-depth: (B, C, R, R) → (B, C·f², R/f, R/f); f = 1 is the identity. It is a fixed, exactly
    invertible 'autoencoder' (a permutation of pixels, so Gaussian noise stays i.i.d. Gaussian)."""
    return F.pixel_unshuffle(images, factor) if factor > 1 else images


def space_to_depth_of(arch: dict[str, Any]) -> int:
    """The space-to-depth factor of an embedded architecture or config (1: the denoiser sees pixels)."""
    return int(arch.get("space_to_depth", 1))


def to_image(latents: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse of :func:`to_latent`."""
    return F.pixel_shuffle(latents, factor) if factor > 1 else latents


def take(cond: dict[str, torch.Tensor], index: torch.Tensor | list[int]) -> dict[str, torch.Tensor]:
    """Rows ``index`` of every tensor of a condition."""
    idx = torch.as_tensor(index, dtype=torch.long)
    return {k: v[idx.to(v.device)] for k, v in cond.items()}


def cat(*conds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate conditions along the batch."""
    return {k: torch.cat([c[k] for c in conds]) for k in conds[0]}


def _synonym_table(classes: list[str]) -> dict[str, int]:
    table: dict[str, int] = {}
    for i, name in enumerate(classes):
        for key in [name, *name.split(",")]:
            table.setdefault(key.strip().lower(), i)
    return table


# ---- loading -------------------------------------------------------------------------------


def _device_dtype(device: str | torch.device | None, dtype: str | torch.dtype | None, hub: bool):
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dt = torch.float16 if (hub and dev.type == "cuda") else torch.float32
    elif isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        names |= {"fp32": torch.float32, "float32": torch.float32}
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        dt = names[dtype]
    return dev, dt


def load_model(
    name_or_path: str | os.PathLike, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> LoadedModel:
    """Load a model by card name ("digits-dit", "digits-unet", "sd2-base", "dit-xl-2-256",
    "dit-xl-2-512", or their hub ids) or from a local folder (a diffusers pipeline saved with
    ``save_pretrained``, or an embedded-model folder with ``config.json`` + ``model.safetensors``).
    Cached: the same arguments return the same object. Raises :class:`ModelUnavailable`
    (an OSError) with what to do when weights cannot be found."""
    if isinstance(name_or_path, LoadedModel):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load_model expects a model name or a folder, got {type(name_or_path).__name__}")
    key = str(name_or_path)
    name = _ALIASES.get(key.lower(), key.lower())
    if name in CARDS:
        key = name
    elif Path(key).expanduser().is_dir():
        key = str(Path(key).expanduser().resolve())
    else:
        raise ValueError(f"unknown model {key!r}: use one of {sorted(CARDS)} or the path of a local diffusers folder")
    card = CARDS.get(key)
    dev, dt = _device_dtype(device, dtype, hub=card is None or card.source == "hub")
    return _load_cached(key, str(dev), str(dt).removeprefix("torch."))


@functools.lru_cache(maxsize=8)
def _load_cached(key: str, device: str, dtype: str) -> LoadedModel:
    dev, dt = torch.device(device), getattr(torch, dtype)
    card = CARDS.get(key)
    if card is not None and card.source == "embedded":
        model = _load_digits(assets_dir() / card.name, card, dev, dt)
    elif card is not None:
        model = _load_hub(card, card.repo, dev, dt)
    else:
        model = _load_local(Path(key), dev, dt)
    _prepare(model)
    return model


def _prepare(model: LoadedModel) -> None:
    """Inference mode, frozen, patched once with the baseline (so the card's default blocks apply)."""
    from bigain.methods import Baseline
    from bigain.patch import apply

    for m in (model.denoiser, model.vae, model.text_encoder, model.tokens):
        if m is not None:
            m.eval().requires_grad_(False)
    apply(model.denoiser, Baseline(), blocks=model.card.blocks)


def _load_digits(folder: Path, card: ModelCard, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from safetensors.torch import load_file

    weights, cfg_file = folder / "model.safetensors", folder / "config.json"
    if not weights.is_file() or not cfg_file.is_file():
        raise ModelUnavailable(
            f"{card.name}: no trained weights in {folder} (model.safetensors + config.json); train them with "
            f"`python -m bigain.train {card.name}` or point BIGAIN_ASSETS at a folder that has them"
        )
    cfg = json.loads(cfg_file.read_text())
    net, tokens = _digits_modules(cfg)
    state = load_file(str(weights))
    net.load_state_dict({k[9:]: v.float() for k, v in state.items() if k.startswith("denoiser.")})
    if tokens is not None:
        tokens.load_state_dict({k[7:]: v.float() for k, v in state.items() if k.startswith("tokens.")})
        tokens.to(device, dtype)
    # nn.Module.to: diffusers' ModelMixin.to warns about "modules kept in float32" even when there are none.
    nn.Module.to(net, device, dtype)
    sched = {**cfg["schedule"], "clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0}
    return LoadedModel(
        card,
        net,
        sched,
        list(cfg["classes"]),
        tokens=tokens,
        null_label=cfg["null_class"],
        image_channels=1,
        space_to_depth=space_to_depth_of(cfg),
    )


def _digits_modules(cfg: dict[str, Any]) -> tuple[nn.Module, nn.Module | None]:
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel

    if cfg["family"] == "dit":
        return DiTTransformer2DModel(**cfg["denoiser"]), None
    tok = cfg["tokens"]
    return UNet2DConditionModel(**cfg["denoiser"]), ClassTokens(len(cfg["classes"]), tok["seq_len"], tok["dim"])


def _hub_error(what: str, repo: str, err: Exception) -> ModelUnavailable:
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    how = "offline mode is on (HF_HUB_OFFLINE)" if os.environ.get("HF_HUB_OFFLINE") else "the hub was not reachable"
    return ModelUnavailable(
        f"{what}: {repo} is not in the Hugging Face cache (HF_HOME={home}) and {how} "
        f"[{type(err).__name__}]; get it with an internet connection (gated models also need "
        f"`huggingface-cli login`), or run `huggingface-cli download {repo}` on a connected machine and copy the "
        "cache, or pass a local diffusers folder to load_model"
    )


def _load_hub(card: ModelCard, repo: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(repo, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise _hub_error(card.name, repo, err) from err
    return _from_pipeline(card, pipe, device, _index_labels(repo))


def _load_local(folder: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from diffusers import DiffusionPipeline

    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        cfg = json.loads((folder / "config.json").read_text())
        base = CARDS.get(cfg.get("name", ""), CARDS["digits-dit"])
        card = ModelCard(**{**base.__dict__, "name": folder.name, "source": "local", "repo": str(folder)})
        card = _with(
            card,
            family=cfg["family"],
            resolution=int(cfg.get("resolution", base.resolution)),
            blocks=(1, 2, 3) if cfg["family"] == "dit" else None,
        )
        return _load_digits(folder, card, device, dtype)
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelUnavailable(
            f"{folder} is neither a diffusers pipeline folder (no model_index.json) nor an embedded bigain model "
            "(config.json + model.safetensors)"
        )
    cls = json.loads(index.read_text()).get("_class_name", "")
    if "StableDiffusion" in cls:
        base = CARDS["sd2-base"]
    elif "DiT" in cls:
        base = CARDS["dit-xl-2-256"]
    else:
        raise ValueError(
            f"{folder}: unsupported pipeline {cls!r}; bigain supports StableDiffusionPipeline and DiTPipeline"
        )
    try:
        pipe = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"{folder}: the diffusers pipeline there could not be loaded ({err})") from err
    net = pipe.unet if base.family == "unet" else pipe.transformer
    res = int(net.config.sample_size) * int(2 ** (len(pipe.vae.config.block_out_channels) - 1))
    card = _with(base, name=folder.name, source="local", repo=str(folder), resolution=res)
    return _from_pipeline(card, pipe, device, _index_labels(str(folder)))


def _with(card: ModelCard, **changes: Any) -> ModelCard:
    return ModelCard(**{**card.__dict__, **changes})


def _index_labels(repo_or_folder: str) -> dict[int, str] | None:
    """DiT's ImageNet id2label, stored in model_index.json (the pipeline does not keep it)."""
    path = Path(repo_or_folder) / "model_index.json"
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(repo_or_folder, "model_index.json"))
        except Exception:  # labels are optional; the weights already loaded
            return None
    labels = json.loads(path.read_text()).get("id2label")
    return {int(k): v for k, v in labels.items()} if labels else None


def _from_pipeline(card: ModelCard, pipe: Any, device: torch.device, id2label: dict[int, str] | None) -> LoadedModel:
    pipe.to(device)
    sched = dict(pipe.scheduler.config)
    if card.family == "unet":
        return LoadedModel(
            card, pipe.unet, sched, None, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
        )
    net = pipe.transformer
    n = int(net.config.num_embeds_ada_norm)
    if id2label is None:
        id2label = {v: k for k, v in getattr(pipe, "labels", {}).items()} or None
    classes = [id2label.get(i, f"class {i}") for i in range(n)] if id2label else [f"class {i}" for i in range(n)]
    return LoadedModel(card, net, sched, classes, vae=pipe.vae, null_label=n)


# ---- image input ---------------------------------------------------------------------------


def _as_array(image: Any) -> np.ndarray:
    """PIL image, path, numpy array → float array (H, W, C) in [0, 1]; RGBA/LA are composited on white."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"no image file at {path}")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except OSError as err:
            raise ValueError(f"{path} is not an image PIL can read ({err})") from err
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
            return (np.clip(arr / (top if image.mode != "F" or arr.max() > 1 else 1.0), 0, 1))[..., None]
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(bg, rgba)
        image = image.convert("RGB")
        return np.asarray(image, dtype=np.float64) / 255.0
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
            raise ValueError(f"an image array must be H×W or H×W×C with C in (1, 3, 4), got shape {image.shape}")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float64) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float64) / 65535.0
        elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.float64)
            if not np.isfinite(arr).all():
                raise ValueError("the image array has NaN or infinite values")
            lo, hi = arr.min(), arr.max()
            arr = (arr + 1) / 2 if lo < 0 else (arr if hi <= 1 else arr / 255.0)
        else:
            raise TypeError(f"unsupported image array dtype {arr.dtype}")
        if arr.shape[-1] == 4:  # straight alpha over white
            arr = arr[..., :3] * arr[..., 3:] + (1 - arr[..., 3:])
        return np.clip(arr, 0, 1)
    raise TypeError(
        f"an image must be a PIL image, a numpy array, a torch tensor or a file path, not {type(image).__name__}"
    )


def to_model_image(image: Any, size: int, channels: int, digits: bool = False) -> torch.Tensor:
    """Any supported image → (1, channels, size, size) float32 in [-1, 1].

    Photos: resize the short side (bicubic, antialiased) and centre-crop, as the paper's
    pre-processing. Digits (``digits=True``): grayscale, squashed to size×size, and inverted when
    the border is brighter than the centre, because the models saw light ink on a dark ground.
    A torch tensor is taken as already in [-1, 1] with shape (C, H, W) or (1, C, H, W)."""
    import torch.nn.functional as F

    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        x = x[None] if x.ndim == 3 else x
        if x.ndim == 2:
            x = x[None, None]
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"an image tensor must be (C, H, W) or (1, C, H, W) with C in (1, 3), got {tuple(image.shape)}"
            )
    else:
        arr = _as_array(image)
        x = torch.from_numpy(arr).float().permute(2, 0, 1)[None] * 2 - 1
    if x.shape[1] == 3 and channels == 1:
        x = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if digits:
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1).mean()
        if border > x.mean():
            x = -x
        return x.clamp(-1, 1).contiguous()
    scale = size / min(h, w)
    if (h, w) != (size, size):
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top : top + size, left : left + size]
    return x.clamp(-1, 1).contiguous()

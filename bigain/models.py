"""One loaded-model interface for every backbone, and the loader.

``load_model(name_or_path)`` returns a :class:`LoadedModel` whatever the backbone: the embedded
digits models (pixel space, shipped in ``assets/``), the hub models of :data:`bigain.zoo.CARDS`
(SD 2, SDXL, DiT-XL/2, PixArt-α/Σ, SD3, Flux.1) from the Hugging Face hub or its cache, or any local
diffusers folder of those pipelines. Pipelines only talk to this interface; what differs between
families (the forward call, the text encoders, the latent packing) is asked of the backbone adapter.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bigain.backbones import Backbone, adapter_for
from bigain.errors import BadInput, BadType, BigainError, excerpt
from bigain.execution import Executor
from bigain.images import to_image, to_latent, to_model_image
from bigain.zoo import ALIASES, CARDS, ModelCard, arch_of_config, assets_dir, build, label_condition

#: samplers by name; "flow" (flow matching) is the only one for flow models and only for them
SAMPLERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "flow": "FlowMatchEulerDiscreteScheduler",
}

#: pipelines a local diffusers folder may hold → the card their defaults come from
PIPELINE_CARDS = {
    "StableDiffusionPipeline": "sd2-base",
    "StableDiffusionXLPipeline": "sdxl-base",
    "DiTPipeline": "dit-xl-2-256",
    "PixArtAlphaPipeline": "pixart-alpha-512",
    "PixArtSigmaPipeline": "pixart-sigma-1024",
    "StableDiffusion3Pipeline": "sd3-medium",
    "FluxPipeline": "flux-schnell",
}


class ModelUnavailable(BigainError, OSError):
    """The model's weights cannot be had here; the message says what is missing and how to get it."""


class LoadedModel:
    """One interface over every backbone. Shapes: images (B, C_img, R, R) in [-1, 1]; latents
    (B, C_lat, L, L) (= images for pixel-space digits); conditions are dicts of batch-first tensors
    (what the backbone's call takes). The object is read-only after loading, so threads may share it.

    ``prediction``: what the denoiser predicts, "epsilon", "v_prediction" or "flow" (velocity ε − x0);
    :meth:`noised` and :meth:`target` put a clean latent at a timestep and give the regression target."""

    def __init__(
        self,
        card: ModelCard,
        denoiser: nn.Module,
        scheduler_config: dict[str, Any],
        classes: list[str] | None,
        *,
        vae: nn.Module | None = None,
        pipe: Any = None,
        tokens: nn.Module | None = None,
        null_label: int | None = None,
        image_channels: int = 3,
        space_to_depth: int = 1,
    ) -> None:
        self.card = card
        self.denoiser = denoiser
        self.backbone: type[Backbone] = adapter_for(denoiser)
        self.vae = vae
        self.pipe = pipe  # the diffusers pipeline of hub/local models: its text encoders condition prompts
        self.tokens = tokens
        self.classes = classes
        self.null_label = null_label
        self.image_channels = image_channels
        self.space_to_depth = int(space_to_depth)
        self._scheduler_config = dict(scheduler_config)
        self._synonyms = _synonym_table(classes) if classes else {}
        self._text_cache: dict[tuple[str, bool], dict[str, torch.Tensor]] = {}
        p = next(denoiser.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.latent_channels = self.backbone.latent_channels(denoiser)
        flow = card.sampler == "flow"
        self.prediction = "flow" if flow else str(self._scheduler_config.get("prediction_type", "epsilon"))
        self.alphas_cumprod = None if flow else self.scheduler().alphas_cumprod.float().clone()

    def __repr__(self) -> str:
        return f"LoadedModel({self.card.name!r}, {self.backbone.name}, device={self.device}, dtype={self.dtype})"

    def at_resolution(self, resolution: int) -> LoadedModel:
        """The same weights working at another image side (a shallow copy with its own card and caches)."""
        import copy

        other = copy.copy(self)
        other.card = _with(self.card, resolution=int(resolution))
        other._text_cache = {}
        other.__dict__.pop("_executors", None)
        return other

    # ---- basics ------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.card.resolution

    @property
    def latent_size(self) -> int:
        return self.resolution // self.scale

    @property
    def scale(self) -> int:
        """Image pixels per latent cell (the VAE's factor, or the space-to-depth factor)."""
        if self.vae is None:
            return self.space_to_depth
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def blocks(self) -> tuple[int, ...] | None:
        return self.card.blocks

    @property
    def text_models(self) -> list[nn.Module]:
        """The pipeline's text encoders (empty for label models)."""
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [m for m in (getattr(self.pipe, n, None) for n in names) if m is not None]

    def scheduler(self, sampler: str | None = None) -> Any:
        """A fresh scheduler (safe to step in one thread): "ddim", "euler", "dpm" or, for flow models,
        "flow" (default: the card's)."""
        import diffusers

        if sampler is not None and not isinstance(sampler, str):
            raise BadType(f"sampler must be one of {sorted(SAMPLERS)} (a str), got {excerpt(sampler)}")
        kind = (sampler or self.card.sampler).lower()
        if kind not in SAMPLERS:
            raise BadInput(f"sampler must be one of {sorted(SAMPLERS)}, got {excerpt(sampler)}")
        if (kind == "flow") != (self.prediction == "flow"):
            allowed = ["flow"] if self.prediction == "flow" else sorted(set(SAMPLERS) - {"flow"})
            raise BadInput(f"{self.card.name} samples with {allowed}, not {kind!r}")
        return getattr(diffusers, SAMPLERS[kind]).from_config(self._scheduler_config)

    def set_timesteps(self, sched: Any, steps: int) -> None:
        """``sched.set_timesteps`` as the model's pipeline calls it (Flux-dev's resolution-dependent shift)."""
        kw: dict[str, Any] = {"device": self.device}
        cfg = sched.config
        if getattr(cfg, "use_dynamic_shifting", False):
            n = (self.latent_size // 2) ** 2
            slope = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len)
            kw["mu"] = cfg.base_shift + slope * (n - cfg.base_image_seq_len)
        sched.set_timesteps(steps, **kw)

    # ---- the noise process -------------------------------------------------------------------
    def noised(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t at integer timesteps t (B,) in [0, 1000): √ᾱ·x0 + √(1−ᾱ)·ε, or for flow models
        (1−σ)·x0 + σ·ε with σ = t / 1000."""
        if self.prediction == "flow":
            s = (t.float() / 1000).view(-1, 1, 1, 1).to(x0.dtype)
            return (1 - s) * x0 + s * noise
        a = self.alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1).to(x0.dtype)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to output at x_t = :meth:`noised`: ε, v = √ᾱ·ε − √(1−ᾱ)·x0,
        or the flow velocity ε − x0."""
        if self.prediction == "flow":
            return noise - x0
        if self.prediction == "v_prediction":
            a = self.alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1).to(x0.dtype)
            return a.sqrt() * noise - (1 - a).sqrt() * x0
        return noise

    # ---- images and latents ------------------------------------------------------------------
    def preprocess(self, image: Any) -> torch.Tensor:
        """A PIL image (any mode), numpy array (H×W or H×W×C, uint8 or float), torch tensor
        (C×H×W in [-1, 1]) or file path → (1, C_img, R, R) float32 in [-1, 1] on the CPU."""
        frame = None
        if self.card.world is not None:  # a glyph drawn anywhere in any canvas is framed as the training glyphs
            from bigain.worlds import world

            frame = world(self.card.world).frame
        return to_model_image(
            image, self.resolution, self.image_channels, digits=self.card.source == "embedded", frame=frame
        )

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C_img, R, R) in [-1, 1] → latents: (VAE posterior mean − shift) × scaling factor; for pixel-space
        digits models the identity, or a lossless space-to-depth (f×f pixels → f² channels)."""
        if self.vae is None:
            return to_latent(images.to(self.device, self.dtype), self.space_to_depth)
        x = images.to(self.device, self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mean
        cfg = self.vae.config
        return ((z - (getattr(cfg, "shift_factor", None) or 0)) * cfg.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → (B, C_img, R, R) images in [-1, 1] (float32)."""
        if self.vae is None:
            return to_image(latents.float(), self.space_to_depth).clamp(-1, 1)
        cfg = self.vae.config
        z = latents.to(self.vae.dtype) / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0)
        return self.vae.decode(z).sample.float().clamp(-1, 1)

    # ---- conditioning ------------------------------------------------------------------------
    def class_id(self, c: int | str) -> int:
        """A class given by index, digit string or (case-insensitive) name/synonym → its index."""
        if self.classes is None:
            raise BadInput(f"{self.card.name} is conditioned on free text, it has no class indices")
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= int(c) < len(self.classes):
                raise BadInput(f"class index {c} out of range for {self.card.name} (0–{len(self.classes) - 1})")
            return int(c)
        if isinstance(c, str):
            key = c.strip().lower()
            if key in self._synonyms:
                return self._synonyms[key]
            if key.isdigit() and int(key) < len(self.classes):
                return int(key)
            raise BadInput(f"unknown class {c!r} for {self.card.name}; e.g. {', '.join(self.classes[:5])}, …")
        raise BadType(f"a class must be an int or a str, got {type(c).__name__}")

    def condition(self, conds: list[int | str] | tuple[int | str, ...]) -> dict[str, torch.Tensor]:
        """One condition per batch item (class ids/names, or prompts for text models) → denoiser inputs."""
        if not isinstance(conds, (list, tuple)) or not conds:
            raise BadInput("condition() needs a non-empty list of classes or prompts")
        if self.card.conditioning == "prompts":
            for c in conds:
                if not isinstance(c, str):
                    raise BadType(f"{self.card.name} is conditioned on text; got {type(c).__name__} {c!r}")
            return self._text(list(conds), null=False)
        ids = torch.tensor([self.class_id(c) for c in conds], device=self.device)
        return self._labels(ids)

    def null_condition(self, n: int) -> dict[str, torch.Tensor]:
        """The unconditional input for classifier-free guidance, for n items."""
        if self.card.conditioning == "prompts":
            return self._text([""] * n, null=True)
        if self.null_label is None:
            raise BadInput(f"{self.card.name} has no null class, so it cannot use classifier-free guidance")
        return self._labels(torch.full((n,), self.null_label, device=self.device))

    @torch.no_grad()
    def _labels(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return label_condition(self.tokens, ids)

    @torch.no_grad()
    def _text(self, prompts: list[str], null: bool) -> dict[str, torch.Tensor]:
        """Prompts through the pipeline's text encoders, one row per distinct prompt, cached."""
        missing = [p for p in dict.fromkeys(prompts) if (p, null) not in self._text_cache]
        if missing:
            enc = self.backbone.text_condition(self.pipe, missing, null, self.resolution)
            for i, p in enumerate(missing):
                self._text_cache[(p, null)] = {k: v[i : i + 1].to(self.device) for k, v in enc.items()}
        rows = [self._text_cache[(p, null)] for p in prompts]
        return {k: torch.cat([r[k] for r in rows]).to(self.dtype) for k in rows[0]}

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
        """One denoiser call: x_t (B, C_lat, L, L), t scalar or (B,) → the prediction (B, C_lat, L, L): ε
        (learned σ dropped), or what :attr:`prediction` says (v, flow velocity).

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
        out = self.executor(mode)(self.backbone.call, x, t, cond, t_host=t_host, fresh=fresh)
        return out[:, : self.latent_channels]

    def executor(self, mode: str = "eager") -> Executor:
        """The denoiser's runner in an execution mode, built on first use (compiled/captured lazily)."""
        runners = self.__dict__.setdefault("_executors", {})
        if mode not in runners:
            runners[mode] = Executor(self.denoiser, mode)
        return runners[mode]


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


def check_device(device: str | torch.device | None) -> torch.device:
    """A device that exists here (default: cuda if a GPU is visible, else cpu), or one sentence saying why not."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise BadType(f"device must be a string such as 'cpu' or 'cuda:0', got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise BadInput(f"device must be 'cpu', 'cuda' or 'cuda:N', got {str(device)[:40]!r}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise BadInput(f"device {str(device)!r} is not available: this machine has no CUDA GPU (use 'cpu')")
        if dev.index is not None and dev.index >= n:
            raise BadInput(f"device {str(device)!r} is not available: this machine has {n} CUDA GPU(s)")
    elif dev.type not in ("cpu", "mps"):
        raise BadInput(f"device must be 'cpu', 'cuda' or 'cuda:N', got {str(device)!r}")
    return dev


def _device_dtype(device: str | torch.device | None, dtype: str | torch.dtype | None, hub: bool):
    dev = check_device(device)
    if dtype is None:
        dt = torch.float16 if (hub and dev.type == "cuda") else torch.float32
    elif isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        names |= {"fp32": torch.float32, "float32": torch.float32}
        if dtype not in names:
            raise BadInput(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        dt = names[dtype]
    return dev, dt


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    resolution: int | None = None,
) -> LoadedModel:
    """Load a model by card name (see :data:`bigain.zoo.CARDS`: "digits-dit", "digits-unet", "sd2-base",
    "sdxl-base", "dit-xl-2-256", "pixart-alpha-512", "sd3-medium", "flux-schnell", …, or their hub ids)
    or from a local folder (a diffusers pipeline saved with ``save_pretrained``, or an embedded-model
    folder with ``config.json`` + ``model.safetensors``). Cached: the same arguments return the same
    object. ``resolution``: the image side to work at instead of the card's (a multiple of the latent
    factor × patch; U-Nets, PixArt, SD3 and Flux run at many sizes, DiT-XL/2 only at its own). Raises
    :class:`ModelUnavailable` (an OSError) with what to do when weights cannot be found."""
    if isinstance(name_or_path, LoadedModel):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise BadType(f"load_model expects a model name or a folder, got {type(name_or_path).__name__}")
    key = str(name_or_path)
    if not key.strip():
        raise BadInput(f"a model name or folder is needed; the cards are {', '.join(CARDS)}")
    check_device(device)
    name = ALIASES.get(key.lower(), key.lower())
    if name in CARDS:
        key = name
    elif Path(key).expanduser().is_dir():
        key = str(Path(key).expanduser().resolve())
    else:
        raise BadInput(f"unknown model {key!r}: use one of {sorted(CARDS)} or the path of a local diffusers folder")
    card = CARDS.get(key)
    dev, dt = _device_dtype(device, dtype, hub=card is None or card.source == "hub")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8):
        raise BadInput(f"resolution must be an integer ≥ 8 pixels, got {resolution!r}")
    return _load_cached(key, str(dev), str(dt).removeprefix("torch."), resolution)


@functools.lru_cache(maxsize=8)
def _load_cached(key: str, device: str, dtype: str, resolution: int | None = None) -> LoadedModel:
    if resolution is not None:
        base = _load_cached(key, device, dtype)
        step = base.scale * 2  # a multiple of the latent factor and of the transformers' 2×2 patches
        if resolution % step:
            raise BadInput(f"{base.card.name}: resolution must be a multiple of {step}, got {resolution}")
        return base.at_resolution(resolution)
    dev, dt = torch.device(device), getattr(torch, dtype)
    card = CARDS.get(key)
    if card is not None and card.source == "embedded":
        model = _load_digits(assets_dir() / card.name, card, dev, dt)
    elif card is not None:
        model = _load_hub(card, dev, dt)
    else:
        model = _load_local(Path(key), dev, dt)
    _prepare(model)
    return model


def _prepare(model: LoadedModel) -> None:
    """Inference mode, frozen, patched once with the baseline (so the card's default blocks apply)."""
    from bigain.methods import Baseline
    from bigain.patch import apply

    for m in (model.denoiser, model.vae, model.tokens, *model.text_models):
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
    a = arch_of_config(cfg)
    net, tokens = build(a, num_classes=len(cfg["classes"]), seed=None)
    state = load_file(str(weights))
    net.load_state_dict({k[9:]: v.float() for k, v in state.items() if k.startswith("denoiser.")})
    if tokens is not None:
        tokens.load_state_dict({k[7:]: v.float() for k, v in state.items() if k.startswith("tokens.")})
        tokens.to(device, dtype)
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
        space_to_depth=a.space_to_depth,
    )


def _hub_error(what: str, repo: str, err: Exception) -> ModelUnavailable:
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    how = "offline mode is on (HF_HUB_OFFLINE)" if os.environ.get("HF_HUB_OFFLINE") else "the hub was not reachable"
    return ModelUnavailable(
        f"{what}: {repo} is not in the Hugging Face cache (HF_HOME={home}) and {how} "
        f"[{type(err).__name__}]; get it with an internet connection (gated models also need "
        f"`hf auth login`), or run `hf download {repo}` on a connected machine and copy the "
        "cache, or pass a local diffusers folder to load_model"
    )


def _pipeline(source: str, dtype: torch.dtype) -> Any:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(source, dtype=dtype)


def _load_hub(card: ModelCard, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    try:
        pipe = _pipeline(card.repo, dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise _hub_error(card.name, card.repo, err) from err
    return _from_pipeline(card, pipe, device, _index_labels(card.repo))


def _load_local(folder: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        cfg = json.loads((folder / "config.json").read_text())
        base = CARDS.get(cfg.get("name", ""), CARDS["digits-dit"])
        a = arch_of_config(cfg)
        card = _with(
            base,
            name=folder.name,
            source="local",
            repo=str(folder),
            arch=None,
            resolution=int(cfg.get("resolution", base.resolution)),
            blocks=(1, 2, 3) if a.cls == "DiTTransformer2DModel" else None,
        )
        return _load_digits(folder, card, device, dtype)
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelUnavailable(
            f"{folder} is neither a diffusers pipeline folder (no model_index.json) nor an embedded bigain model "
            "(config.json + model.safetensors)"
        )
    cls = json.loads(index.read_text()).get("_class_name", "")
    if cls not in PIPELINE_CARDS:
        raise BadInput(f"{folder}: unsupported pipeline {cls!r}; bigain supports {', '.join(PIPELINE_CARDS)}")
    try:
        pipe = _pipeline(str(folder), dtype)
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"{folder}: the diffusers pipeline there could not be loaded ({err})") from err
    res = _resolution(pipe)
    card = _with(
        CARDS[PIPELINE_CARDS[cls]], name=folder.name, source="local", repo=str(folder), arch=None, resolution=res
    )
    return _from_pipeline(card, pipe, device, _index_labels(str(folder)))


def _resolution(pipe: Any) -> int:
    """A pipeline's default image side: the denoiser's sample size (or the pipeline's default) × the VAE factor."""
    net = _denoiser_of(pipe)
    size = getattr(net.config, "sample_size", None) or getattr(pipe, "default_sample_size", 64)
    return int(size) * 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def _denoiser_of(pipe: Any) -> nn.Module:
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


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
    if getattr(pipe.vae.config, "force_upcast", False):  # SDXL's VAE overflows in fp16: decode in fp32
        nn.Module.to(pipe.vae, torch.float32)
    sched = dict(pipe.scheduler.config)
    net = _denoiser_of(pipe)
    if card.conditioning == "prompts":
        return LoadedModel(card, net, sched, None, vae=pipe.vae, pipe=pipe)
    n = int(net.config.num_embeds_ada_norm)
    if id2label is None:
        id2label = {v: k for k, v in getattr(pipe, "labels", {}).items()} or None
    classes = [id2label.get(i, f"class {i}") for i in range(n)] if id2label else [f"class {i}" for i in range(n)]
    return LoadedModel(card, net, sched, classes, vae=pipe.vae, null_label=n)

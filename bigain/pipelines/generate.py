"""Sampling with classifier-free guidance under a compression method, with honest timing.

Every method starts from the same noise for the same seed (drawn on the CPU from
``torch.Generator().manual_seed(seed)``, then moved), and ToMe's random destinations are seeded
too, so two runs differ only by the method. The method runs through :func:`bigain.compress`, so
threads may sample with different methods on one shared model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from bigain import patch
from bigain.errors import BadInput, BadType, check_int, check_number
from bigain.execution import check_mode
from bigain.methods import Baseline, Method, parse_method
from bigain.models import LoadedModel, cat, load_model
from bigain.record import Recorder
from bigain.record import record as record_events
from bigain.timing import sync

Progress = Callable[[float, str], None]
#: The largest seed anywhere (library, CLI, app): the ToMe/SiTo key and numpy keep 32 bits.
MAX_SEED = 2**32 - 1


@dataclass
class GenerationResult:
    """What :func:`generate` made and what it cost.

    images: PIL RGB images at the model's native resolution; array: (N, H, W, C) float32 in
    [0, 1]; wall_s: the whole job; denoiser_s: sum of the timed denoiser calls (CUDA-synchronised);
    per_call_s = denoiser_s / n_calls; record: per-(call, block) attention events when asked."""

    images: list[Image.Image]
    array: np.ndarray
    wall_s: float
    denoiser_s: float
    per_call_s: float
    n_calls: int
    steps: int
    guidance: float
    seed: int
    method: Method
    condition: list[Any]
    sampler: str
    model: str
    record: Recorder | None = None
    timesteps: list[int] = field(default_factory=list)


def resolve_method(method: Method | str | None) -> Method:
    """None → Baseline; a spec string → :func:`bigain.parse_method`."""
    if method is None:
        return Baseline()
    if isinstance(method, str):
        return parse_method(method)
    if isinstance(method, Method):
        return method
    raise BadType(f"method must be a bigain Method, a spec string or None, got {type(method).__name__}")


class Timer:
    """Accumulates the wall time of denoiser calls (synchronising CUDA around each)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.total, self.calls = device, 0.0, 0

    def eps(
        self, model: LoadedModel, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], **kw: Any
    ) -> torch.Tensor:
        sync(self.device)
        t0 = time.perf_counter()
        out = model.eps(x, t, cond, **kw)
        sync(self.device)
        self.total += time.perf_counter() - t0
        self.calls += 1
        return out


def _conditions(model: LoadedModel, condition: Any, num_images: int) -> list[Any]:
    conds = list(condition) if isinstance(condition, (list, tuple)) else [condition] * num_images
    if not conds:
        raise BadInput("generate needs at least one condition")
    if isinstance(condition, (list, tuple)) and num_images not in (1, len(conds)):
        raise BadInput(f"num_images={num_images} does not match the {len(conds)} conditions given")
    if model.card.conditioning == "labels":
        return [model.classes[model.class_id(c)] for c in conds]  # validates and normalises
    for c in conds:
        if not isinstance(c, str):
            raise BadType(f"{model.card.name} is conditioned on text prompts, got {type(c).__name__}")
    return conds


def initial_noise(model: LoadedModel, n: int, seed: int) -> torch.Tensor:
    """(n, C_lat, L, L) standard normal noise from a CPU generator: the same for every method and device."""
    shape = (n, model.latent_channels, model.latent_size, model.latent_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)


def generate(
    model: LoadedModel | str,
    condition: Any,
    method: Method | str | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    num_images: int = 1,
    sampler: str | None = None,
    record: bool = False,
    progress: Progress | None = None,
    mode: str = "eager",
) -> GenerationResult:
    """Sample ``num_images`` images for ``condition`` (a class id/name, a prompt, or a list with one
    per image) with ``method`` (None → Baseline). Defaults come from the model card (digits: DDIM
    25 steps, guidance 2; SD: Euler 50, 7.5; DiT: DDIM 50, 4). Guidance 1 runs the conditional
    branch only; otherwise conditional and unconditional inputs go through the denoiser as one batch.
    ``mode``: how the denoiser runs, ``eager``, ``compile`` or ``cudagraph`` (:mod:`bigain.execution`);
    pictures (``record``) need ``eager``."""
    model = load_model(model) if isinstance(model, str) else model
    meth = resolve_method(method)
    steps = check_int("steps", model.card.steps if steps is None else steps, 1, 1000)
    guidance = check_number("guidance", model.card.guidance if guidance is None else guidance, 0, 50)
    num_images = check_int("num_images", num_images, 1, 1024)
    seed = check_int("seed", seed, 0, MAX_SEED)
    conds = _conditions(model, condition, num_images)
    check_mode(mode, model.device)
    if record and mode != "eager":
        raise BadInput(f"recording pictures needs the eager mode, not {mode!r}")
    t_start = time.perf_counter()
    sched = model.scheduler(sampler)
    model.set_timesteps(sched, steps)
    sigma0 = getattr(sched, "init_noise_sigma", 1.0)  # flow matching starts from unit noise
    latents = initial_noise(model, len(conds), seed).to(model.device, model.dtype) * sigma0
    cond = _build_condition(model, conds, guidance)
    timer = Timer(model.device)
    with patch.compress(model, meth), _maybe_record(record) as rec:
        patch.seed(model, seed)
        host_ts = sched.timesteps.tolist()  # one read before the loop: no layer ever reads a timestep
        for i, t in enumerate(sched.timesteps):
            latents = _step(model, sched, timer, latents, t, cond, guidance, mode, host_ts[i])
            if progress is not None:
                progress((i + 1) / len(sched.timesteps), f"{meth.label()}: step {i + 1}/{len(sched.timesteps)}")
    images = model.decode(latents)
    sync(model.device)
    array = ((images + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
    return GenerationResult(
        images=[_to_pil(a) for a in array],
        array=array,
        wall_s=time.perf_counter() - t_start,
        denoiser_s=timer.total,
        per_call_s=timer.total / max(1, timer.calls),
        n_calls=timer.calls,
        steps=steps,
        guidance=guidance,
        seed=seed,
        method=meth,
        condition=conds,
        sampler=(sampler or model.card.sampler).lower(),
        model=model.card.name,
        record=rec,
        timesteps=[int(t) for t in sched.timesteps],
    )


def _build_condition(model: LoadedModel, conds: Sequence[Any], guidance: float) -> dict[str, torch.Tensor]:
    c = model.condition(list(conds))
    return c if guidance == 1 else cat(c, model.null_condition(len(conds)))


def _step(
    model: LoadedModel,
    sched: Any,
    timer: Timer,
    latents: torch.Tensor,
    t: torch.Tensor,
    cond: dict[str, torch.Tensor],
    guidance: float,
    mode: str = "eager",
    t_host: float | None = None,
) -> torch.Tensor:
    x = latents if guidance == 1 else torch.cat([latents, latents])
    if hasattr(sched, "scale_model_input"):  # Euler's σ-scaling; flow matching has none
        x = sched.scale_model_input(x, t)
    eps = timer.eps(model, x, t.expand(x.shape[0]), cond, mode=mode, t_host=t_host).to(latents.dtype)
    if guidance != 1:
        e_c, e_u = eps.chunk(2)
        eps = e_u + guidance * (e_c - e_u)
    return sched.step(eps, t, latents).prev_sample


class _NoRecord:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_record(on: bool) -> Any:
    return record_events(maps=True) if on else _NoRecord()


def _to_pil(a: np.ndarray) -> Image.Image:
    u8 = (a * 255).round().astype(np.uint8)
    return Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).convert("RGB")

"""Train an embedded model: ``python -m bigain train glyphs-dit|glyphs-unet|digits-dit|digits-unet``.

Pixel-space DDPM (linear betas 1e-4 → 0.02 over 1000 steps, ε-prediction, MSE) on a train split that
ships with the package registries: letters rendered from matplotlib's fonts at 32×32 (:mod:`bigain.glyphs`,
held-out fonts never seen; 1024 tokens at every compressed layer), or scikit-learn's digits upsampled
to 16×16 (:mod:`bigain.digits`; for the U-Net folded 2×2 → 4 channels at 8×8 by a lossless
space-to-depth, so its attention tokens are not redundant copies of each other), class-conditional
with 10% label dropout for classifier-free guidance (dropped once per sample to the null class),
AdamW with warm-up and cosine decay, an EMA of the weights (what ships).
Deterministic from ``--seed`` on CPU, and resumable: a checkpoint (weights, EMA, optimiser, data
stream) is written every ``--checkpoint-every`` steps and ``--resume`` continues it to the same result.
Writes ``model.safetensors`` (fp16), ``config.json`` and ``training.json`` (the training record,
with the run's :func:`bigain.provenance.provenance`) to the output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigain import digits, glyphs, provenance, zoo
from bigain.backbones import adapter_for_class
from bigain.images import to_latent
from bigain.zoo import DIGITS_SCHEDULE, Arch, label_condition

EMBEDDED = ("glyphs-dit", "glyphs-unet", "digits-dit", "digits-unet")
#: Jittered renderings per (train font, letter) in the glyph models' training bank.
GLYPH_BANK = 48


@dataclass(frozen=True)
class Data:
    """A model's training data: images (N, 1, R, R) in [-1, 1], labels (N,), class names, split record."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    split: dict[str, Any]

    @property
    def null_class(self) -> int:  # id of the unconditional label / token sequence
        return len(self.classes)


def data_for(name: str, res: int) -> Data:
    """The train split of an embedded model's dataset (by the model's name prefix)."""
    if name.startswith("glyphs"):
        x, y = glyphs.load("train", per_glyph=GLYPH_BANK)
        return Data(x, y, glyphs.CLASSES, {**glyphs.split_record(), "per_glyph": GLYPH_BANK})
    x, y = digits.load("train", size=res)
    return Data(x, y, tuple(str(i) for i in range(digits.NUM_CLASSES)), digits.split_record())


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 50
    ema: float = 0.995
    label_drop: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 50
    #: image side to train at (None: the model's); a smaller side is the bank average-pooled, the
    #: coarse first stage of progressive training (attention at (side/patch)² tokens is far cheaper)
    res: int | None = None
    #: Min-SNR-γ loss weight (Hang et al., ICCV 2023): ε-loss × min(SNR, γ)/SNR, so the nearly clean
    #: timesteps stop dominating the gradient; None: plain MSE
    min_snr: float | None = None


@dataclass(frozen=True)
class Stage:
    """One stage of a model's default training: steps, batch, image side, Min-SNR γ."""

    steps: int
    batch_size: int
    res: int | None = None
    min_snr: float | None = None


#: Default training, stage by stage; each stage starts from the previous one's weights with its own
#: warm-up and cosine decay. Digits: ~20 minutes on one contended CPU core each. Glyphs: progressive,
#: most samples at 16×16 (256 tokens, 5–8× cheaper a sample) where the letters' shapes are learnt,
#: then 32×32 for the strokes; about 80 minutes each on one core, the two side by side.
DEFAULTS: dict[str, tuple[Stage, ...]] = {
    "glyphs-dit": (Stage(1800, 48, res=16, min_snr=5.0), Stage(600, 24, min_snr=5.0)),
    "glyphs-unet": (Stage(1600, 32, res=16, min_snr=5.0), Stage(700, 16, min_snr=5.0)),
    "digits-dit": (Stage(1500, 64),),
    "digits-unet": (Stage(2500, 64),),
}


def eps_call(net: nn.Module, tokens: nn.Module | None, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
    """One denoiser call of an embedded model: x (B, C_lat, L, L), t (B,), y (B,) labels (num classes = null) → ε."""
    return adapter_for_class(type(net).__name__).call(net, x, t, label_condition(tokens, y))


def _lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train(
    name: str,
    out: Path,
    cfg: TrainConfig,
    arch: Arch | None = None,
    quiet: bool = False,
    device: str | torch.device = "cpu",
    command: str | None = None,
    resume: bool = False,
    init: Path | None = None,
) -> dict:
    """Train ``name`` and write it to ``out``; returns the training record. ``arch`` overrides the
    architecture (tests use a tiny one). Randomness is drawn on the CPU whatever ``device`` is, so
    the data order, label drops, timesteps and noise are the same on every device. ``resume``:
    continue from ``out/checkpoint.pt`` (same config), which gives the weights an uninterrupted run gives.
    ``init``: a folder of shipped weights to continue training from (a second stage with its own warm-up
    and cosine decay); its training record is kept under ``previous`` and its wall time counts in ``wall_s_total``."""
    from safetensors.torch import save_file

    # at the start: edits made while it trains do not change what it trains
    prov = provenance.provenance(device, command)
    torch.manual_seed(cfg.seed)
    spec = zoo.arch(name) if arch is None else arch
    dev = torch.device(device)
    data = data_for(name, spec.res)
    images = _at_side(data.images, cfg.res or spec.res)
    net, tokens = _build(spec, len(data.classes))
    net.to(dev)
    if tokens is not None:
        tokens.to(dev)
    # eval(): diffusers' DiT would otherwise drop labels independently in every block; we drop once per sample.
    net.eval()
    previous = None if init is None else _load_init(init, net, tokens)
    params = list(net.parameters()) + (list(tokens.parameters()) if tokens is not None else [])
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    acp = _alphas_cumprod().to(dev)
    x_all, y_all = to_latent(images, spec.space_to_depth), data.labels
    gen = torch.Generator().manual_seed(cfg.seed)
    curve: list[dict[str, float]] = []
    start, spent = 0, 0.0
    ckpt = out / "checkpoint.pt"
    acc = 0.0
    if resume and ckpt.is_file():
        start, spent, curve = _restore(ckpt, cfg, params, ema, opt, gen)
        acc = curve.pop()["acc"]  # the loss summed so far in the open log window
        if not quiet:
            print(f"{name}: resumed at step {start} ({spent:.0f} s spent)")
    t0 = time.perf_counter() - spent
    for step in range(start, cfg.steps):
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(cfg.batch_size, generator=gen) < cfg.label_drop] = data.null_class
        t = torch.randint(0, len(acp), (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x0, y, t, noise = x0.to(dev), y.to(dev), t.to(dev), noise.to(dev)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        err = (eps_call(net, tokens, xt, t, y) - noise).square().mean(dim=(1, 2, 3))
        loss = (err * _weight(a.flatten(), cfg.min_snr)).mean()
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                e.lerp_(p.detach(), 1 - decay)
        acc += loss.item()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            n = (step % cfg.log_every) + 1
            curve.append({"step": step + 1, "loss": acc / n, "elapsed_s": time.perf_counter() - t0})
            acc = 0.0
            if not quiet:
                last = curve[-1]
                print(
                    f"{name} step {step + 1}/{cfg.steps} loss {last['loss']:.4f} {last['elapsed_s']:.0f}s", flush=True
                )
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            _checkpoint(ckpt, step + 1, time.perf_counter() - t0, [*curve, {"acc": acc}], cfg, params, ema, opt, gen)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        for e, p in zip(ema, params, strict=True):
            p.copy_(e)
    out.mkdir(parents=True, exist_ok=True)
    state = {f"denoiser.{k}": v.detach().half().cpu().contiguous() for k, v in net.state_dict().items()}
    if tokens is not None:
        state.update({f"tokens.{k}": v.detach().half().cpu().contiguous() for k, v in tokens.state_dict().items()})
    save_file(state, str(out / "model.safetensors"))
    config = _config(name, spec, data)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    record = {
        "model": name,
        "command": command,
        "seed": cfg.seed,
        "train": cfg.__dict__,
        "steps": cfg.steps,
        "resumed": bool(start),
        "previous": previous,
        "final_loss": curve[-1]["loss"],
        "loss_curve": curve,
        "wall_s": wall,
        "wall_s_total": wall + (previous or {}).get("wall_s_total", (previous or {}).get("wall_s", 0.0)),
        "threads": torch.get_num_threads(),
        "device": str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "parameters": sum(p.numel() for p in params),
        "weights_bytes": (out / "model.safetensors").stat().st_size,
        "split": data.split,
        "git_commit": prov["git_commit"],  # also in provenance; kept: evaluations key their reuse on it
        "torch": torch.__version__,
        "provenance": prov,
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    ckpt.unlink(missing_ok=True)
    return record


def _at_side(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 1, R, R) images at ``side`` × ``side``, average-pooled (R a multiple of side)."""
    r = images.shape[-1]
    if side == r:
        return images
    if side > r or r % side:
        raise ValueError(f"can train at a side that divides {r}, not {side}")
    return torch.nn.functional.avg_pool2d(images, r // side)


def _weight(alpha_bar: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """(B,) loss weights: 1, or Min-SNR-γ's min(SNR, γ)/SNR for ε-prediction, SNR = ᾱ/(1-ᾱ)."""
    if gamma is None:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


def _load_init(folder: Path, net: nn.Module, tokens: nn.Module | None) -> dict:
    """Load shipped weights (fp16) into ``net`` / ``tokens``; returns their training record."""
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    with torch.no_grad():
        net.load_state_dict({k[9:]: v.float() for k, v in state.items() if k.startswith("denoiser.")})
        if tokens is not None:
            tokens.load_state_dict({k[7:]: v.float() for k, v in state.items() if k.startswith("tokens.")})
    return json.loads((folder / "training.json").read_text())


def _checkpoint(path: Path, step: int, spent: float, curve: list, cfg: TrainConfig, params, ema, opt, gen) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "spent_s": spent,
        "curve": curve,
        "config": cfg.__dict__,
        "params": [p.detach().cpu() for p in params],
        "ema": [e.cpu() for e in ema],
        "opt": opt.state_dict(),
        "gen": gen.get_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a run killed while saving keeps the previous checkpoint


def _restore(path: Path, cfg: TrainConfig, params, ema, opt, gen) -> tuple[int, float, list]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["config"] != cfg.__dict__:
        raise ValueError(f"{path} was written with {state['config']}, not {cfg.__dict__}: resume with the same flags")
    with torch.no_grad():
        for p, v in zip(params, state["params"], strict=True):
            p.copy_(v)
        for e, v in zip(ema, state["ema"], strict=True):
            e.copy_(v)
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    return int(state["step"]), float(state["spent_s"]), list(state["curve"])


def _build(spec: Arch, num_classes: int) -> tuple[nn.Module, nn.Module | None]:
    net, tokens = zoo.build(spec, num_classes=num_classes, seed=None)
    return net.requires_grad_(True), None if tokens is None else tokens.requires_grad_(True)


def _alphas_cumprod() -> torch.Tensor:
    s = DIGITS_SCHEDULE
    betas = torch.linspace(s["beta_start"], s["beta_end"], s["num_train_timesteps"], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def _config(name: str, spec: Arch, data: Data) -> dict[str, Any]:
    f = spec.space_to_depth
    return {
        "name": name,
        "class": spec.cls,
        "denoiser": spec.config,
        "tokens": spec.tokens,
        "schedule": DIGITS_SCHEDULE,
        "classes": list(data.classes),
        "null_class": data.null_class,
        "resolution": spec.res,
        "space_to_depth": f,
        "weights_dtype": "float16",
        "pixel_range": [-1, 1],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bigain.train", description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=(*EMBEDDED, glyphs.REFERENCE_DIR))
    p.add_argument("--steps", type=int, default=None, help="one stage of this many steps (default: the model's stages)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="one stage at this batch (default: the model's stages)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 lets both models train side by side)")
    p.add_argument("--device", default="cpu", help="cpu (the documented setting) or cuda")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: assets/MODEL)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip finished stages, continue the running one (same flags)",
    )
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (0: none)")
    p.add_argument("--init", type=Path, default=None, help="continue from the weights in this folder (a second stage)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = a.out or zoo.assets_dir() / a.model
    if a.model == glyphs.REFERENCE_DIR:  # the small CNN that judges generated glyphs
        ref = glyphs.train_reference(out, seed=a.seed)
        print(f"{a.model}: held-out font accuracy {ref['accuracy']} in {ref['wall_s']:.0f} s → {out}")
        return ref
    cmd = " ".join(["python -m bigain.train", *(argv if argv is not None else sys.argv[1:])])
    stages = DEFAULTS[a.model]
    if a.steps or a.batch_size:  # an explicit run is one stage at the model's side (its loss weighting kept)
        last = stages[-1]
        stages = (replace(last, steps=a.steps or last.steps, batch_size=a.batch_size or last.batch_size),)
    rec = run_stages(a.model, out, stages, a, cmd)
    steps = " + ".join(str(st.steps) for st in stages)
    print(f"{a.model}: {steps} steps, final loss {rec['final_loss']:.4f}, {rec['wall_s_total']:.0f} s → {out}")
    return rec


def run_stages(
    name: str, out: Path, stages: tuple[Stage, ...], a: argparse.Namespace, cmd: str, arch: Arch | None = None
) -> dict:
    """Train ``stages`` in turn, each from the weights the one before wrote (the first from ``a.init``).
    Earlier stages write to ``out/stages/k`` (removed at the end: the final record keeps theirs under
    ``previous``); with ``a.resume`` a finished stage is skipped and the running one continues."""
    init, rec = a.init, {}
    for k, st in enumerate(stages, 1):
        last = k == len(stages)
        dst = out if last else out / "stages" / str(k)
        cfg = TrainConfig(
            steps=st.steps,
            batch_size=st.batch_size,
            lr=a.lr,
            seed=a.seed + k - 1,
            checkpoint_every=a.checkpoint_every,
            res=st.res,
            min_snr=st.min_snr,
        )
        done = dst / "training.json"
        if a.resume and not last and done.is_file() and json.loads(done.read_text())["train"] == cfg.__dict__:
            print(f"{name}: stage {k}/{len(stages)} already trained in {dst}", flush=True)
        else:
            print(f"{name}: stage {k}/{len(stages)}: {st}", flush=True)
            rec = train(name, dst, cfg, arch=arch, device=a.device, command=cmd, resume=a.resume, init=init)
        init = dst
    shutil.rmtree(out / "stages", ignore_errors=True)
    return rec


if __name__ == "__main__":
    main()

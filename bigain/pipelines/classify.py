"""The diffusion classifier of Li et al. (ICCV 2023) under a compression method (bigain-method.md §F).

For an image x0 (a latent for SD/DiT, pixels for the digits models) and each candidate class c,
the error at timestep t with noise ε is mean_{C,H,W} (ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, c, t))²; the
prediction is the class with the lowest mean error. Every class sees the same (t, ε) pairs
(paired noise, drawn per image from a CPU generator seeded with ``seed``). Adaptive rounds: round
r evaluates ``n_samples[r]`` timesteps spread over the pool for every surviving class and keeps
the ``to_keep[r]`` best. The paper's protocol is pool range(25, 1000, 50), rounds (5, 20) keeping
(5, 1): round 1 runs t = 125, 325, 525, 725, 925 for all classes. Denoiser calls are batched,
mixing classes and timesteps; no classifier-free guidance.

Other targets, same protocol (:meth:`bigain.models.LoadedModel.noised` / ``target``): v-prediction
models are scored against v = √ᾱ·ε − √(1−ᾱ)·x0. Flow-matching models (SD3, Flux), going beyond the
diffusion-classifier release, are scored against the velocity ε − x0 at x_t = (1 − σ)·x0 + σ·ε with
σ = t / 1000 for the same pool of t (so σ ∈ {0.025, 0.075, …, 0.975}), the same paired noise, and
uniform weights over σ, which is the rectified-flow loss without SD3's logit-normal time weighting.

Scores: ``softmax(−mean_err / (temperature · best_mean_err))``, a scale-free "calibrated-looking"
confidence: with the default temperature 0.05, a class whose mean error is 5% above the best one
gets e⁻¹ of its weight. It is a display aid, not a probability anyone calibrated.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bigain import patch
from bigain.errors import BadInput, BadType, check_int, check_number
from bigain.execution import check_mode
from bigain.methods import Method
from bigain.models import LoadedModel, load_model, take
from bigain.pipelines.generate import MAX_SEED, Progress, Timer, resolve_method

MAX_CLASSES = 1000
DEFAULT_TEMPERATURE = 0.05


@dataclass(frozen=True)
class Protocol:
    """Adaptive evaluation rounds. The pool is ``range(T // n_pool // 2, T, T // n_pool)``; round r
    evaluates ``n_samples[r]`` pool timesteps (``pool[s // 2 :: s]`` with s = n_pool // n) and keeps
    the ``to_keep[r]`` classes with the lowest mean error."""

    n_pool: int = 20
    n_samples: tuple[int, ...] = (5, 20)
    to_keep: tuple[int, ...] = (5, 1)
    T: int = 1000

    def __post_init__(self) -> None:
        ns, keep = tuple(self.n_samples), tuple(self.to_keep)
        object.__setattr__(self, "n_samples", ns)
        object.__setattr__(self, "to_keep", keep)
        if not 1 <= self.n_pool <= self.T:
            raise BadInput(f"n_pool must be in [1, {self.T}], got {self.n_pool}")
        if not ns or len(ns) != len(keep):
            raise BadInput(f"n_samples {ns} and to_keep {keep} must be non-empty and of equal length")
        if any(not 1 <= n <= self.n_pool for n in ns) or list(ns) != sorted(ns):
            raise BadInput(f"n_samples must be non-decreasing values in [1, n_pool={self.n_pool}], got {ns}")
        if any(k < 1 for k in keep) or list(keep) != sorted(keep, reverse=True) or keep[-1] != 1:
            raise BadInput(f"to_keep must be non-increasing values ≥ 1 ending in 1, got {keep}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def pool(self) -> list[int]:
        step = self.T // self.n_pool
        return list(range(step // 2, self.T, step))[: self.n_pool]

    def round_timesteps(self, r: int) -> list[int]:
        pool, n = self.pool(), self.n_samples[r]
        s = len(pool) // n
        return pool[s // 2 :: s][:n]


def planned_evaluations(proto: Protocol, n_classes: int) -> int:
    """(class, timestep) evaluations the rounds make for ``n_classes`` candidates: Σ_r alive_r · (n_r − n_{r−1})."""
    total, alive, done = 0, n_classes, 0
    for r, keep in enumerate(proto.to_keep):
        n = len(proto.round_timesteps(r))
        total += alive * (n - done)
        done, alive = n, min(alive, keep)
    return max(1, total)


@dataclass
class Ranked:
    """One candidate in the ranking (best first)."""

    cls: str
    index: int  # position among the candidates
    mean_error: float
    score: float
    n_timesteps: int
    eliminated_round: int | None  # None: survived every round


@dataclass
class ClassificationResult:
    """errors: (n_classes, len(timesteps)) per-timestep errors, NaN where not evaluated;
    timesteps: the pool (ascending); eval_order: timesteps in evaluation order (= noise index);
    n_evals: (class, timestep) denoiser evaluations (the paper's count); n_calls: batched calls."""

    classes: list[str]
    prediction: str
    prediction_index: int
    ranking: list[Ranked]
    scores: np.ndarray
    mean_errors: np.ndarray
    timesteps: list[int]
    errors: np.ndarray
    eval_order: list[int]
    eliminated: list[int | None]
    n_evals: int
    n_calls: int
    wall_s: float
    denoiser_s: float
    method: Method
    seed: int
    protocol: Protocol
    temperature: float
    model: str
    prompts: list[str] | None = None
    class_ids: list[int] | None = field(default=None)


def candidates(
    model: LoadedModel, classes: Sequence[Any] | None, prompt_template: str | None = None
) -> tuple[list[str], list[Any]]:
    """Candidate names and what to condition on (class ids or prompts); validates the list."""
    if classes is None:
        if model.classes is None:
            raise BadInput(f"{model.card.name} classifies among free-text class names: pass classes=[...]")
        return list(model.classes), list(range(len(model.classes)))
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise BadInput("classes must be a list of class names or ids")
    classes = list(classes)
    if len(classes) < 2:
        raise BadInput(f"classification needs at least two candidate classes, got {len(classes)}")
    if len(classes) > MAX_CLASSES:
        raise BadInput(f"at most {MAX_CLASSES} candidate classes, got {len(classes)}")
    if model.card.conditioning == "prompts":
        names = []
        for c in classes:
            if not isinstance(c, str) or not c.strip():
                raise BadInput(f"class names must be non-empty strings, got {c!r}")
            names.append(c.strip())
        if len({n.lower() for n in names}) != len(names):
            raise BadInput(f"duplicated class names in {names}")
        template = prompt_template or model.card.prompt_template or "{}"
        if "{}" not in template:
            raise BadInput(f"prompt_template must contain '{{}}', got {template!r}")
        return names, [template.format(n) for n in names]
    ids = [model.class_id(c) for c in classes]
    if len(set(ids)) != len(ids):
        raise BadInput(f"duplicated classes in {classes}")
    return [model.classes[i] for i in ids], ids


def classify(
    model: LoadedModel | str,
    image: Any,
    classes: Sequence[Any] | None = None,
    method: Method | str | None = None,
    seed: int = 0,
    protocol: Protocol | dict[str, Any] | None = None,
    batch_size: int | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    prompt_template: str | None = None,
    progress: Progress | None = None,
    mode: str = "eager",
) -> ClassificationResult:
    """Classify one image (PIL, array, path or (C, H, W) tensor in [-1, 1]) among ``classes``
    (None → the model's classes; SD needs names) with ``method`` (None → Baseline).
    ``protocol`` defaults to the model card's (paper for hub models, 10 shared timesteps for digits);
    ``batch_size`` defaults to 128 for pixel-space (digits) models and 16 (the paper) otherwise.
    ``mode``: how the denoiser runs (``eager``, ``compile``, ``cudagraph``: :mod:`bigain.execution`)."""
    model = load_model(model) if isinstance(model, str) else model
    meth = resolve_method(method)
    proto = _protocol(model, protocol)
    temperature = check_number("temperature", temperature, 1e-6, 1e6)
    seed = check_int("seed", seed, 0, MAX_SEED)
    default_bs = 128 if model.vae is None else 16
    bs = check_int("batch_size", default_bs if batch_size is None else batch_size, 1, 4096)
    names, conds = candidates(model, classes, prompt_template)
    check_mode(mode, model.device)
    t_start = time.perf_counter()
    x0 = model.encode(model.preprocess(image))  # (1, C, L, L)
    cond_all = model.condition(conds)
    noise = torch.randn((proto.n_pool, *x0.shape[1:]), generator=torch.Generator().manual_seed(int(seed)))
    noise = noise.to(model.device, model.dtype)
    state = _Run(model, proto, x0, noise, cond_all, bs, Timer(model.device), mode)
    with patch.compress(model, meth):
        patch.seed(model, seed)
        eliminated = state.run(len(names), progress, meth.label())
    return _result(model, state, names, conds, eliminated, meth, seed, temperature, t_start)


def _protocol(model: LoadedModel, protocol: Protocol | dict[str, Any] | None) -> Protocol:
    if protocol is None:
        return Protocol.from_dict(model.card.protocol)
    if isinstance(protocol, dict):
        return Protocol.from_dict(protocol)
    if isinstance(protocol, Protocol):
        return protocol
    raise BadType(f"protocol must be a Protocol or a dict, got {type(protocol).__name__}")


class _Run:
    """The state of one classification: errors per (class, pool timestep) and the noise order."""

    def __init__(self, model, proto, x0, noise, cond_all, batch_size, timer, mode: str = "eager") -> None:
        self.model, self.proto, self.x0, self.noise, self.cond = model, proto, x0, noise, cond_all
        self.bs, self.timer, self.mode = batch_size, timer, mode
        self.pool = proto.pool()
        self.order: list[int] = []
        self.errors: np.ndarray = np.empty(0)
        self.n_evals = 0

    def run(self, n_classes: int, progress: Progress | None, label: str) -> list[int | None]:
        self.errors = np.full((n_classes, len(self.pool)), np.nan)
        alive = list(range(n_classes))
        eliminated: list[int | None] = [None] * n_classes
        jobs_total = self._planned(n_classes)
        for r, keep in enumerate(self.proto.to_keep):
            ts = self.proto.round_timesteps(r)
            self.order += [t for t in ts if t not in self.order]
            jobs = [(c, t) for c in alive for t in ts if np.isnan(self.errors[c, self.pool.index(t)])]
            for i in range(0, len(jobs), self.bs):
                self._batch(jobs[i : i + self.bs])
                if progress is not None:
                    progress(min(1.0, self.n_evals / jobs_total), f"{label}: round {r + 1}, {self.n_evals} evaluations")
            if len(alive) > keep:
                means = np.nanmean(self.errors[alive], axis=1)
                ranked = [alive[j] for j in np.argsort(means, kind="stable")]
                for c in ranked[keep:]:
                    eliminated[c] = r
                alive = sorted(ranked[:keep])
        return eliminated

    def _planned(self, n_classes: int) -> int:
        return planned_evaluations(self.proto, n_classes)

    @torch.no_grad()
    def _batch(self, jobs: list[tuple[int, int]]) -> None:
        cls = [c for c, _ in jobs]
        ts = torch.tensor([t for _, t in jobs], device=self.x0.device)
        eps = self.noise[[self.order.index(t) for _, t in jobs]]
        x_t = self.model.noised(self.x0, eps, ts)
        # every batch is new: cached merge assignments are rebuilt (fresh), t = 0 is decided on the host
        host_ts = [t for _, t in jobs]
        pred = self.timer.eps(self.model, x_t, ts, take(self.cond, cls), mode=self.mode, t_host=host_ts, fresh=True)
        target = self.model.target(self.x0, eps, ts)
        err = (target.float() - pred.float()).square().mean(dim=(1, 2, 3)).cpu().numpy()
        for (c, t), e in zip(jobs, err, strict=True):
            self.errors[c, self.pool.index(t)] = float(e)
        self.n_evals += len(jobs)


def _result(model, state: _Run, names, conds, eliminated, meth, seed, temperature, t_start) -> ClassificationResult:
    means = np.nanmean(state.errors, axis=1)
    best = float(np.nanmin(means))
    logits = -means / (temperature * max(best, 1e-12))
    scores = np.exp(logits - logits.max())
    scores /= scores.sum()
    # survivors first (by error), then by the round they fell in (later is better), then by error
    key = [(-(len(state.proto.to_keep) if e is None else e), means[i]) for i, e in enumerate(eliminated)]
    order = sorted(range(len(names)), key=lambda i: key[i])
    ranking = [
        Ranked(names[i], i, float(means[i]), float(scores[i]), int((~np.isnan(state.errors[i])).sum()), eliminated[i])
        for i in order
    ]
    prompts = list(conds) if model.card.conditioning == "prompts" else None
    return ClassificationResult(
        classes=list(names),
        prediction=names[order[0]],
        prediction_index=order[0],
        ranking=ranking,
        scores=scores,
        mean_errors=means,
        timesteps=list(state.pool),
        errors=state.errors,
        eval_order=list(state.order),
        eliminated=eliminated,
        n_evals=state.n_evals,
        n_calls=state.timer.calls,
        wall_s=time.perf_counter() - t_start,
        denoiser_s=state.timer.total,
        method=meth,
        seed=seed,
        protocol=state.proto,
        temperature=temperature,
        model=model.card.name,
        prompts=prompts,
        class_ids=None if prompts is not None else list(conds),
    )

"""Side-by-side comparisons: methods from the app's settings, generation and classification rows
with interleaved timing against the baseline."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from bigain import timing, viz
from bigain.errors import BadInput
from bigain.methods import Baseline, Method, make_method, method_class

Progress = Callable[[float, str], Any]

# ---- method construction from UI knobs -----------------------------------------------------


def methods_from_settings(names: Sequence[str], settings: dict[str, dict[str, Any]] | None = None) -> list[Method]:
    """Methods by registry name or title (:data:`bigain.methods.METHODS`), each built from its own
    ``settings[name]`` (parameter → value; missing parameters keep their defaults) and validated by
    its class. The baseline is never in the list: comparisons always run it first."""
    out: list[Method] = []
    for raw in names:
        cls = method_class(str(raw))
        if not cls.compresses:
            continue
        out.append(make_method(cls.name, **(settings or {}).get(cls.name, {})))
    if len(set(out)) != len(out):
        raise BadInput("each method can be chosen once")
    return out


# ---- comparisons (generation and classification) ------------------------------------------


def _sub(progress: Progress | None, start: float, span: float, label: str) -> Progress | None:
    """A progress callback for one part of a longer job: maps [0, 1] onto [start, start + span] and
    prefixes ``label`` (if any) to the description."""
    if progress is None:
        return None

    def sub(frac: float, desc: str | None = None) -> Any:
        text = " · ".join(t for t in (label, desc) if t)
        return progress(start + span * float(frac), text)

    return sub


def flops_per_call(model: Any, method: Method | None = None, condition: Any = None) -> int:
    """FLOPs of one denoiser call on one conditional sample at t = 500 under ``method``, counted by
    torch's FlopCounterMode (attention included on CPU, see :mod:`bigain.flops`). Cached per
    (model, method): the count depends on shapes only."""
    from bigain import flops, patch

    method = method or Baseline()
    key = (id(model), method)
    if key not in _FLOPS:
        size = model.latent_size
        x = torch.zeros(1, model.latent_channels, size, size, device=model.device, dtype=model.dtype)
        cond = model.condition([condition if condition is not None else _first_condition(model)])
        with patch.compress(model, method):
            _FLOPS[key] = flops.count_flops(lambda: model.eps(x, 500, cond))
    return _FLOPS[key]


_FLOPS: dict[tuple[int, Method], int] = {}
_WARM: set[tuple[int, str]] = set()


def _first_condition(model: Any) -> str:
    return str(model.classes[0]) if model.classes else "a photo"


@dataclass
class GenerationRow:
    """One method's result in a side-by-side generation run. Times are the minimum over the
    timing rounds; speed-ups are ratios to the baseline's minimum from the same rounds."""

    label: str
    method: Method
    result: Any  # GenerationResult of the first round (every round gives the same images)
    wall_s: float
    per_call_s: float
    speedup: float
    call_speedup: float
    flops: int | None
    flops_ratio: float | None  # this / baseline
    mean_abs_diff: float  # mean |pixel difference| to the baseline image, in [0, 1]


def _rounds(runs: Sequence[Method], rounds: int) -> list[tuple[int, Method]]:
    """(round, method) in the order they run: every round runs every method, the order rotating
    from round to round so that drift and machine load hit every method alike."""
    if not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise BadInput(f"timing rounds must be an integer in [1, {MAX_ROUNDS}], got {rounds!r}")
    return timing.rotating_rounds(runs, rounds)


MAX_ROUNDS = 10


def compare_generation(
    model: Any,
    condition: Any,
    methods: Sequence[Method],
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    progress: Progress | None = None,
    rounds: int = 1,
    warmup: bool = True,
    count_flops: bool = True,
    mode: str = "eager",
) -> list[GenerationRow]:
    """Generate with the baseline and every method from the same seed (so the same starting noise)
    and report each against the baseline measured in this same run. ``rounds`` > 1 repeats the
    whole comparison with a rotating order and keeps each method's fastest round, which makes the
    speed-ups robust to a busy machine. A one-step warm-up per method keeps first-call costs
    (allocation, kernel choice, compiling or capturing in ``mode``) out of the timings."""
    from bigain.pipelines import generate

    runs: list[Method] = [Baseline(), *[m for m in methods if m.compresses]]
    plan = _rounds(runs, rounds)
    if warmup and (id(model), "generate") not in _WARM:  # the first use of a model pays one-off costs
        generate(model, condition, seed=seed, steps=min(steps or 3, 3), guidance=guidance, mode=mode)
        _WARM.add((id(model), "generate"))
    if warmup:
        for m in runs:
            generate(model, condition, method=m, seed=seed, steps=1, guidance=guidance, mode=mode)
    first: dict[Method, Any] = {}
    wall: dict[Method, float] = {}
    call: dict[Method, float] = {}
    for i, (r, m) in enumerate(plan):
        label = f"round {r + 1}/{rounds}" if rounds > 1 else ""
        res = generate(
            model, condition, method=m, seed=seed, steps=steps, guidance=guidance,
            progress=_sub(progress, i / len(plan), 1 / len(plan), label), mode=mode,
        )  # fmt: skip
        first.setdefault(m, res)
        wall[m] = min(wall.get(m, math.inf), res.wall_s)
        call[m] = min(call.get(m, math.inf), res.per_call_s)
    base = runs[0]
    fl = {m: flops_per_call(model, m) for m in runs} if count_flops else {}
    return [
        GenerationRow(
            label=m.label(),
            method=m,
            result=first[m],
            wall_s=wall[m],
            per_call_s=call[m],
            speedup=wall[base] / wall[m],
            call_speedup=call[base] / call[m],
            flops=fl.get(m),
            flops_ratio=fl[m] / fl[base] if fl else None,
            mean_abs_diff=_mad(first[m].images[0], first[base].images[0]),
        )
        for m in runs
    ]


def _mad(a: Image.Image, b: Image.Image) -> float:
    x, y = viz.as_array(a), viz.as_array(b)
    return float(np.abs(x - y).mean()) if x.shape == y.shape else float("nan")


WARMUP_PROTOCOL = {"n_pool": 1, "n_samples": (1,), "to_keep": (1,)}


@dataclass
class ClassificationRow:
    """One method's classification of the image; ``wall_s`` is the minimum over the timing rounds."""

    label: str
    method: Method
    result: Any  # ClassificationResult of the first round (every round gives the same result)
    wall_s: float
    speedup: float


def compare_classification(
    model: Any,
    image: Any,
    methods: Sequence[Method],
    classes: Sequence[str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    rounds: int = 1,
    warmup: bool = True,
    **kwargs: Any,
) -> list[ClassificationRow]:
    """Classify one image with the baseline and every method (same seed, so the same noise), timed
    as :func:`compare_generation` does (rotating rounds, fastest kept, warm-ups not timed)."""
    from bigain.pipelines import classify

    runs: list[Method] = [Baseline(), *[m for m in methods if m.compresses]]
    plan = _rounds(runs, rounds)
    mode = kwargs.get("mode", "eager")  # warm-ups compile / capture in the mode that is timed
    if warmup and (id(model), "classify") not in _WARM:  # the first use of a model pays one-off costs
        classify(model, image, classes=classes, seed=seed, **kwargs)
        _WARM.add((id(model), "classify"))
    if warmup:
        for m in runs:
            classify(model, image, classes=classes, method=m, seed=seed, protocol=WARMUP_PROTOCOL, mode=mode)
    first: dict[Method, Any] = {}
    wall: dict[Method, float] = {}
    for i, (r, m) in enumerate(plan):
        label = f"round {r + 1}/{rounds}" if rounds > 1 else ""
        res = classify(
            model, image, classes=classes, method=m, seed=seed,
            progress=_sub(progress, i / len(plan), 1 / len(plan), label), **kwargs,
        )  # fmt: skip
        first.setdefault(m, res)
        wall[m] = min(wall.get(m, math.inf), res.wall_s)
    return [ClassificationRow(m.label(), m, first[m], wall[m], wall[runs[0]] / wall[m]) for m in runs]


def agreement(rows: Sequence[ClassificationRow]) -> str:
    """One sentence: do the methods agree with the baseline's prediction?"""
    base = str(rows[0].result.prediction)
    differ = [r.label for r in rows[1:] if str(r.result.prediction) != base]
    if not differ:
        return f"All {len(rows)} runs predict **{base}**."
    return f"Baseline predicts **{base}**; " + ", ".join(
        f"{r.label} predicts **{r.result.prediction}**" for r in rows[1:] if r.label in differ
    )

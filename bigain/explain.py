"""What the app's comparison, "look inside" and "learn" views show, as plain functions.

Each function runs library code (methods, operators, pipelines, the recorder) and returns data
plus figures; the UI only lays them out. Nothing here imports gradio.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bigain import viz
from bigain.errors import BadInput
from bigain.methods import IEKVD, LGTM, Baseline, Method, ToDo, ToMe, make_method, method_class
from bigain.ops import rng
from bigain.ops.kv import avg_pool_tokens, blend_downsample, nearest_exact_index, nearest_exact_tokens
from bigain.ops.laplacian import laplacian_response, laplacian_score
from bigain.ops.merge import bipartite_merge, destination_slots, slots_to_index
from bigain.record import AttnEvent, Recorder

Progress = Callable[[float, str], Any]

GRIDS = (4, 8, 16, 32, 64)


# ---- image tokens (the "learn" pictures work on pixels, not model features) ------------------


def image_tokens(image: Image.Image | np.ndarray, grid: int) -> np.ndarray:
    """The image averaged down to a grid×grid array of tokens, (grid, grid[, 3]) in [0, 1].

    Area averaging (PIL's box filter) so every token is the mean colour of the pixels it covers;
    grey images stay one channel."""
    if grid not in GRIDS:
        raise BadInput(f"grid must be one of {GRIDS}, got {grid!r}")
    img = image if isinstance(image, Image.Image) else Image.fromarray(_to_uint8(image))
    mode = "L" if viz.as_array(img).ndim == 2 else "RGB"
    small = img.convert(mode).resize((grid, grid), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return (viz.as_array(a) * 255).round().astype(np.uint8)


def _as_seq(tokens: np.ndarray) -> torch.Tensor:
    """(h, w[, C]) array → (1, h·w, C) tensor."""
    t = torch.as_tensor(tokens, dtype=torch.float32)
    if t.ndim == 2:
        t = t[..., None]
    return t.reshape(1, -1, t.shape[-1])


def _as_grid(seq: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(1, h·w, C) → (h, w) for C = 1 or (h, w, C)."""
    g = seq[0].reshape(h, w, -1).numpy()
    return g[..., 0] if g.shape[-1] == 1 else g


@dataclass
class FrequencyParts:
    """An image as tokens split into low + high frequency (tokens = low + high).

    tokens, low, high: (h, w[, 3]) in [0, 1] (high is centred on 0.5 and contrast-stretched to fill
    [0, 1] for display);
    score: (h, w) per-token Laplacian ℓ1 energy, what L-GTM ranks tokens by."""

    tokens: np.ndarray
    low: np.ndarray
    high: np.ndarray
    score: np.ndarray


def frequency_parts(image: Image.Image | np.ndarray, grid: int = 16) -> FrequencyParts:
    """Split an image into low- and high-frequency parts with the 4-neighbour Laplacian L:
    low = x + L/4 (the average of the four neighbours), high = −L/4, so x = low + high."""
    tokens = image_tokens(image, grid)
    seq = _as_seq(tokens)
    lap = laplacian_response(_replicate(seq, grid), grid + 2, grid + 2)[:, 1:-1, 1:-1]
    lap = lap.reshape(1, grid * grid, -1)
    score = laplacian_score(seq, grid, grid)[0].reshape(grid, grid).numpy()
    return FrequencyParts(
        tokens=tokens,
        low=_as_grid(seq + lap / 4, grid, grid),
        high=_as_grid(0.5 - lap / 4 / (2 * lap.abs().max().clamp(min=1e-6) / 4), grid, grid),
        score=score,
    )


def _replicate(seq: torch.Tensor, grid: int) -> torch.Tensor:
    """Pad a (1, g·g, C) token grid by one token of edge replication → (1, (g+2)², C), so the
    picture's low/high split has no dark frame (the gate itself zero-pads, as in the paper)."""
    g = seq.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    g = F.pad(g, (1, 1, 1, 1), mode="replicate")
    return g.permute(0, 2, 3, 1).reshape(1, (grid + 2) ** 2, -1)


def _metric(tokens: np.ndarray) -> torch.Tensor:
    """Similarity features for merging pixel tokens: each token's 3×3 neighbourhood in [-1, 1]
    (a single grey value has no meaningful cosine similarity). (1, N, 9·C)."""
    t = torch.as_tensor(tokens, dtype=torch.float32)
    t = (t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]) * 2 - 1
    h, w = t.shape[-2:]
    patches = F.unfold(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3)  # (1, 9C, h·w)
    return patches.transpose(1, 2).reshape(1, h * w, -1)


def merge_choice(tokens: np.ndarray, method: ToMe, seed: int = 0) -> dict[str, Any]:
    """Run ``method``'s destination rule and bipartite matching on pixel tokens.

    Returns {"kind": "merge", "groups": (N,), "dst": (Nd,), "scores": (N,) or None, "r": merged}.
    ToMe draws random destinations from ``seed`` (as in a batched run); L-GTM takes each cell's
    lowest Laplacian energy."""
    h, w = tokens.shape[:2]
    seq = _as_seq(tokens)
    scores = None
    if isinstance(method, LGTM):
        scores = laplacian_score(seq, h, w)
        slots = destination_slots(h, w, method.sx, method.sy, method.dst, scores=scores)
    elif method.use_rand:
        hs, ws = h // method.sy, w // method.sx
        rand = rng.draw(rng.new_key(seed), torch.arange(hs * ws).view(1, -1))
        slots = destination_slots(h, w, method.sx, method.sy, "random", rand=rand)
    else:
        slots = destination_slots(h, w, method.sx, method.sy, "top-left")
    m = bipartite_merge(_metric(tokens), slots_to_index(slots, h, w, method.sx, method.sy), method.ratio)
    return {
        "kind": "merge",
        "method": method.name,
        "groups": m.groups()[0].numpy(),
        "dst": m.dst_idx[0].numpy(),
        "scores": None if scores is None else scores[0].numpy(),
        "r": m.r,
        "seen": _as_grid(m.unmerge(m.merge(seq)), h, w),
    }


def kv_choice(tokens: np.ndarray, method: IEKVD, alpha: float | None = None) -> dict[str, Any]:
    """Keys/values ``method`` would build from pixel tokens: positions nearest-exact keeps and the
    nearest / average / α-blend grids, each (h/s, w/s[, C])."""
    h, w = tokens.shape[:2]
    s = method.factor
    if h < s or w < s:
        raise BadInput(f"factor {s} does not fit a {h}x{w} token grid")
    a = float(method.alpha if alpha is None else alpha)
    seq = _as_seq(tokens)
    rows, cols = nearest_exact_index(h, h // s), nearest_exact_index(w, w // s)
    kept = (rows[:, None] * w + cols[None, :]).reshape(-1).numpy()
    ho, wo = h // s, w // s
    return {
        "kind": "kv",
        "method": method.name,
        "kept": kept,
        "factor": s,
        "alpha": a,
        "nearest": _as_grid(nearest_exact_tokens(seq, h, w, s), ho, wo),
        "average": _as_grid(avg_pool_tokens(seq, h, w, s), ho, wo),
        "grid": _as_grid(blend_downsample(seq, h, w, s, a), ho, wo),
    }


def learn_figures(
    image: Image.Image | np.ndarray,
    grid: int = 16,
    ratio: float = 0.5,
    factor: int = 2,
    alpha: float = 0.9,
    seed: int = 0,
) -> tuple[Any, Any, Any]:
    """The three "learn the idea" figures for one image: frequency split, which tokens each
    method keeps (ToMe and L-GTM at ``ratio``, ToDo and IE-KVD at ``factor``), and the KV picture."""
    grid, factor = whole(grid, "grid"), whole(factor, "factor")
    parts = frequency_parts(image, grid)
    tome, lgtm = ToMe(ratio=ratio), LGTM(ratio=ratio)
    iekvd = IEKVD(factor=factor, alpha=alpha)
    choices = {
        f"ToMe (random dst) r={ratio:g}": merge_choice(parts.tokens, tome, seed),
        f"L-GTM (smooth dst) r={ratio:g}": merge_choice(parts.tokens, lgtm, seed),
        f"ToDo s={factor}": kv_choice(parts.tokens, ToDo(factor=factor)),
        f"IE-KVD s={factor} α={alpha:g}": kv_choice(parts.tokens, iekvd),
    }
    kv = choices[f"IE-KVD s={factor} α={alpha:g}"]
    return (
        viz.frequency_figure(parts.tokens, parts.low, parts.high, parts.score),
        viz.choices_figure(parts.tokens, choices),
        viz.kv_figure(parts.tokens, kv["kept"], kv["nearest"], kv["average"], kv["grid"], factor, alpha),
    )


# ---- recorded events ("look inside") -------------------------------------------------------


@dataclass
class Inside:
    """Recorded attention events of one generation, indexed for the look-inside view."""

    recorder: Recorder
    image: Image.Image
    method: Method
    steps: list[int] = field(default_factory=list)  # denoiser call indices that compressed something
    blocks: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, recorder: Recorder, image: Image.Image, method: Method) -> Inside:
        calls = sorted({e.call for e in recorder.events})
        blocks = recorder.blocks()
        return cls(recorder, image, method, calls, blocks)

    def event(self, step: int, block: str | None) -> AttnEvent:
        """The event of denoiser call ``step`` in ``block`` (the first block if None)."""
        if not self.recorder.events:
            raise BadInput("nothing was recorded: this method did not touch any attention block")
        if block is None:
            block = self.blocks[0]
        found = [e for e in self.recorder.events if e.call == step and e.block == block]
        if not found:
            raise BadInput(f"no attention call recorded for step {step} in block {block!r}")
        return found[0]


def inside_figures(inside: Inside, step: int, block: str | None, seed: int = 0) -> tuple[Any, Any, Any, str]:
    """Figures for one (step, block): Laplacian gate, merge groups, KV picture, and a caption.

    The gate and merge maps are the model's own (recorded from the denoiser at that step). The KV
    picture applies the method's downsampling at that block's token grid to the final image, with
    the α the method used at that step."""
    e = inside.event(step, block)
    t = "?" if e.t is None else f"{e.t:.0f}"
    head = (
        f"**step {step + 1} of {len(inside.steps)}** (t = {t}), **{viz.short_block(e.block)}** ({e.h}×{e.w} tokens): "
        f"attention used {e.n_q} of {e.n_tokens} tokens as queries and {e.n_kv} as keys/values."
    )
    gate = merge = kv = None
    notes = []
    if e.scores is not None:
        gate = viz.gate_figure(
            inside.image, e.scores.numpy(), e.h, e.w, _np(e.dst), f"Laplacian gate — {viz.short_block(e.block)}"
        )
    elif e.groups is not None:
        notes.append(f"{inside.method.title} picks destinations at random, so there is no gate to show.")
    if e.groups is not None:
        merge = viz.merge_figure(
            inside.image, e.groups.numpy(), e.h, e.w, _np(e.dst), f"{e.method} — {viz.short_block(e.block)}"
        )
    if isinstance(inside.method, IEKVD):
        tokens = _event_tokens(inside.image, e.h, e.w)
        alpha = e.alpha if e.alpha is not None else inside.method.alpha
        if e.n_kv == e.n_tokens:
            notes.append("Nothing was downsampled at this step (IE-KVD runs the last step at full resolution).")
        c = kv_choice(tokens, inside.method, alpha)
        kv = viz.kv_figure(tokens, c["kept"], c["nearest"], c["average"], c["grid"], c["factor"], float(alpha))
    if not inside.method.compresses:
        notes.append("The baseline compresses nothing: pick a method to see its maps.")
    return gate, merge, kv, "\n\n".join([head, *notes])


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.numpy()


def _event_tokens(image: Image.Image, h: int, w: int) -> np.ndarray:
    """The image averaged to an h×w token grid (any h, w), (h, w[, 3]) in [0, 1]."""
    mode = "L" if viz.as_array(image).ndim == 2 else "RGB"
    return np.asarray(image.convert(mode).resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255.0


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


def whole(v: Any, name: str) -> int:
    """A widget's number as an integer, or a ValueError naming the field (2.5 is not rounded)."""
    f = float(v)
    if not math.isfinite(f) or f != int(f):
        raise BadInput(f"{name} must be a whole number, got {v!r}")
    return int(f)


__all__ = [
    "Baseline",
    "FrequencyParts",
    "Inside",
    "frequency_parts",
    "image_tokens",
    "inside_figures",
    "kv_choice",
    "learn_figures",
    "merge_choice",
    "methods_from_settings",
]


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
    n = len(runs)
    return [(r, runs[(r + k) % n]) for r in range(rounds) for k in range(n)]


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


# ---- recording a generation ("look inside") -----------------------------------------------


def record_generation(
    model: Any,
    condition: Any,
    method: Method,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    progress: Progress | None = None,
) -> Inside:
    """Generate one image with ``method`` while recording Laplacian scores and merge maps of every
    compressed attention call (per denoiser call and block)."""
    from bigain.pipelines import generate
    from bigain.record import record

    with record(maps=True) as rec:
        res = generate(model, condition, method=method, seed=seed, steps=steps, guidance=guidance, progress=progress)
    inside = Inside.of(rec, res.images[0], method)
    if not inside.steps:
        raise BadInput(f"{method.label()} did not compress any attention call of {model.card.name}")
    return inside


# ---- bundled examples and benchmark files -------------------------------------------------


def examples_dir() -> Path:
    """Where example images are written: ``$BIGAIN_EXAMPLES`` or a folder in the temp dir."""
    env = os.environ.get("BIGAIN_EXAMPLES")
    return Path(env) if env else Path(tempfile.gettempdir()) / "bigain-examples"


def digit_examples(per_class: int = 1) -> list[list[str]]:
    """Test-split digits (never seen in training), ``per_class`` per digit, saved as 16×16 PNGs
    exactly as the embedded models see them. Returns [[path], …] for ``gr.Examples``."""
    from bigain import digits

    images, labels = digits.load("test")
    out = examples_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in range(digits.NUM_CLASSES):
        for k, i in enumerate((labels == c).nonzero().flatten()[:per_class].tolist()):
            path = out / f"digit{c}_test{k}.png"
            if not path.is_file():
                pixels = ((images[i, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels, mode="L").save(path)
            paths.append([str(path)])
    return paths


BENCH_DIRS = ("bench", "eval")


def benchmark_report(assets: Path) -> tuple[str, list[tuple[str, str]]]:
    """Markdown of every table the benchmark / evaluation commands wrote under ``assets/bench`` and
    ``assets/eval`` (with the command recorded in their JSON, when there is one), and their plots.
    Says so plainly when nothing has been written yet."""
    parts: list[str] = []
    plots: list[tuple[str, str]] = []
    for sub in BENCH_DIRS:
        folder = Path(assets) / sub
        for md in sorted(folder.glob("*.md")):
            text = md.read_text(encoding="utf-8").strip()
            parts.append(text if text.startswith("#") else f"### {sub}/{md.name}\n\n{text}")
            cmd = _command_of(md.with_suffix(".json"))
            if cmd and cmd not in text:
                parts.append(f"Reproduce: `{cmd}`")
        plots += [(str(p), f"{sub}/{p.name}") for p in sorted(folder.glob("*.png"))]
    if not parts and not plots:
        return (
            "**No benchmark results yet.** This page shows what the benchmark and evaluation commands write to "
            "`assets/bench/` and `assets/eval/` (`python -m bigain.bench speed`, `python -m bigain.bench ops`, "
            "`python -m bigain eval digits`); nothing here is typed by hand.",
            [],
        )
    return "\n\n".join(parts), plots


def _command_of(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    for key in ("command", "cmd", "argv"):
        v = data.get(key) or meta.get(key)
        if v:
            return " ".join(map(str, v)) if isinstance(v, list) else str(v)
    return None

"""The small-scale replication on the embedded models: ``python -m bigain.evaluate replication``
(also ``python -m bigain eval replication``; ``digits`` is the same command under its first name).

Every embedded model lives in a world (:mod:`bigain.worlds`: ``glyphs``, 26 capitals at 32×32 with
whole fonts held out, the default ``glyphs-dit`` / ``glyphs-unet``; or ``digits``, 10 digits at
16×16): its test split, classes, image side and reference classifier are the world's, so the same
code measures both (``digits`` files keep their earlier layout).

For each model and each method (Baseline; ToMe, L-GTM and SiTo at ratio 0.3/0.5/0.7; ToDo and
IE-KVD at factor 2 with α = 0, 0.9 and the 0.8→1.2 schedule — α = 1 *is* ToDo; on request, the
cached-assignment variants of ToMe / L-GTM, method doc §L, next to the method they cache, group
``cached``; and the ablations, group ``ablations``: L-GTM with each non-default destination scorer
of Table 8 at ratio 0.5 and 0.7, ``lgtm-<r>-<scorer>``, and the frequency-selected keys/values of
Table 12, ``freqkv-2-high`` / ``freqkv-2-low``, not in the default sets because their 16 rows would
double a CPU run):

* classification: the diffusion classifier (model card protocol; digits: 10 shared-noise timesteps
  range(50, 1000, 100) for all 10 classes; glyphs: 3 of them for all 26 classes, the whole pool
  for the best 5; seed = image index) on every image of the test split, or on a balanced subset
  (``--limit``: equal images per class where possible, :func:`balanced_subset`);
  top-1 with Wilson 95% intervals and an exact McNemar test of L-GTM vs ToMe at the same ratio, of
  SiTo vs L-GTM and vs ToMe, of IE-KVD vs ToDo, of each cached variant vs its uncached method, of
  each scorer vs the Laplacian (L-GTM) at the same ratio, of Freq-KV high and low vs ToDo, vs
  IE-KVD α = 0.9 and vs each other (:data:`PAIRS`; and of every method vs Baseline), on the same
  images; the report lays the ablation rows out as the paper's tables too;
* generation: ``--samples`` images per class (seed = class id, so every method starts from the
  same noise; the card's DDIM steps, guidance 2), judged by the world's reference classifier
  (digits: an MLP, glyphs: a CNN; trained on the train split only): conditional accuracy, and FID / KID in its
  128-d hidden-layer feature space against the test split (not Inception FID), the mean squared
  difference to the baseline's samples from the same noise, and for the same pairs an exact
  McNemar test on which samples are recognised and the mean squared difference between the pair's
  samples.
* sensitivity (:func:`sensitivity`, seconds): how far each method moves ε and the class contrast
  the classifier ranks on, next to swapping the class and zeroing self-attention; redone by every
  run for every row of the classification table (kept rows too), or with ``--skip-classify`` for the
  rows ``--methods`` names.

Writes ``assets/eval/<model>.json`` (with per-image predictions, and the run's
:func:`bigain.provenance.provenance` record) and ``.md`` (:func:`bigain.evaluate.report.digits_markdown`)
and a sample grid PNG. Statistics come from :mod:`bigain.evaluate.stats`, files are written with
:mod:`bigain.evaluate.store` (atomically).
Results are kept **per row**: a run measures the rows it is asked for; rows of an earlier run on
the same weights (same training record) and the same settings (test images and protocol; samples
per class, sampler and reference classifier) that this run does not measure are kept, each with
the run (command, device, commit, time: :func:`bigain.provenance.summary`) that produced it; a row
measured again replaces the old one, which moves to the part's ``superseded`` list. A part a run
skips keeps its earlier result as it was.
"""

from __future__ import annotations

import base64
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bigain import digits, provenance, worlds
from bigain.evaluate import report, store
from bigain.evaluate.stats import mcnemar_exact, wilson
from bigain.methods import Method, parse_method
from bigain.models import assets_dir, cat, load_model
from bigain.ops.scorers import SCORERS as SCORER_NAMES
from bigain.pipelines.classify import Protocol, classify, planned_evaluations
from bigain.pipelines.generate import generate

#: The merge / prune ratios of ToMe, L-GTM and SiTo.
RATIOS: tuple[str, ...] = ("0.3", "0.5", "0.7")
#: L-GTM's non-default destination scorers (Table 8 ablation, :mod:`bigain.ops.scorers`), each at these ratios.
SCORERS: tuple[str, ...] = tuple(s for s in SCORER_NAMES if s != "laplacian")
SCORER_RATIOS: tuple[str, ...] = ("0.5", "0.7")
#: (key, spec) of every method the replication knows; the key names rows and JSON entries. The
#: cached-assignment variants (method doc §L) follow the method they cache; the scorer ablation
#: rows (``lgtm-<r>-<scorer>``) follow SiTo, the frequency-selected KV rows (Table 12) IE-KVD.
METHOD_SPECS: list[tuple[str, str]] = [
    ("baseline", "baseline"),
    *[
        row
        for name in ("tome", "lgtm")
        for row in (
            (f"{name}-0.3", f"{name}:ratio=0.3"),
            (f"{name}-0.5", f"{name}:ratio=0.5"),
            (f"{name}-0.5-call", f"{name}:ratio=0.5;reuse=call"),
            (f"{name}-0.7", f"{name}:ratio=0.7"),
            (f"{name}-0.7-call", f"{name}:ratio=0.7;reuse=call"),
            (f"{name}-0.7-steps3", f"{name}:ratio=0.7;reuse=steps;every=3"),
        )
    ],
    *[(f"sito-{r}", f"sito:ratio={r}") for r in RATIOS],
    *[(f"lgtm-{r}-{s}", f"lgtm:ratio={r};scorer={s}") for r in SCORER_RATIOS for s in SCORERS],
    ("todo-2", "todo:factor=2"),
    ("iekvd-2-a0", "iekvd:factor=2;alpha=0"),
    ("iekvd-2-a0.9", "iekvd:factor=2;alpha=0.9"),
    ("iekvd-2-a0.8-1.2", "iekvd:factor=2;alpha=0.8;alpha_end=1.2"),
    ("freqkv-2-high", "freqkv:factor=2;keep=high"),
    ("freqkv-2-low", "freqkv:factor=2;keep=low"),
]
#: Cached-assignment variant → the uncached method it caches. ``-steps3`` keys only change
#: generation: the classifier's denoiser calls are new batches, which always recompute.
CACHED: dict[str, str] = {
    f"{name}-{r}-{how}": f"{name}-{r}"
    for name in ("tome", "lgtm")
    for r, how in (("0.5", "call"), ("0.7", "call"), ("0.7", "steps3"))
}
#: The ablation rows (``ablations``): L-GTM's other scorers (Table 8) and frequency-selected KV
#: (Table 12). Not in the default sets: 16 more rows would double the default classification run
#: on a CPU (about 1.5 min per row and model with one thread; seconds on a GPU).
ABLATIONS: list[str] = [
    *[f"lgtm-{r}-{s}" for r in SCORER_RATIOS for s in SCORERS],
    "freqkv-2-high",
    "freqkv-2-low",
]
#: Methods classified by default: every uncached one but the ablations (the cached variants on
#: request: ``cached``; the ablations: ``ablations``).
CLASSIFY_DEFAULT: list[str] = [k for k, _ in METHOD_SPECS if k not in CACHED and k not in ABLATIONS]
#: Methods whose samples are judged by default (the issue's set plus IE-KVD's generation schedule and SiTo).
GEN_DEFAULT: list[str] = ["baseline", "tome-0.5", "tome-0.7", "lgtm-0.5", "lgtm-0.7", "sito-0.5", "sito-0.7", "todo-2",
                          "iekvd-2-a0.8-1.2"]  # fmt: skip
#: Paired comparisons: (method, reference).
PAIRS: list[tuple[str, str]] = [
    *[(f"lgtm-{r}", f"tome-{r}") for r in (0.3, 0.5, 0.7)],
    *[(k, "todo-2") for k in ("iekvd-2-a0", "iekvd-2-a0.9", "iekvd-2-a0.8-1.2")],
    *CACHED.items(),
    *[(f"sito-{r}", f"{ref}-{r}") for r in RATIOS for ref in ("lgtm", "tome")],
    *[(f"lgtm-{r}-{s}", f"lgtm-{r}") for r in SCORER_RATIOS for s in SCORERS],
    *[(f"freqkv-2-{keep}", ref) for keep in ("high", "low") for ref in ("todo-2", "iekvd-2-a0.9")],
    ("freqkv-2-high", "freqkv-2-low"),
]
#: The cheap group (``core``): the paper's headline comparisons only (ToMe vs L-GTM at 0.5 / 0.7, ToDo
#: vs IE-KVD with the classification and the generation α), for CPU runs on the 1024-token glyph models.
CORE: list[str] = ["baseline", "tome-0.5", "lgtm-0.5", "tome-0.7", "lgtm-0.7", "todo-2", "iekvd-2-a0.9",
                   "iekvd-2-a0.8-1.2"]  # fmt: skip
#: Key groups the command line accepts next to single keys.
GROUPS = ("all", "default", "core", "cached", "ablations")
#: Per world: generated samples per class and sensitivity images when the command line does not say
#: (glyphs: 26 classes × 1024 tokens make every denoiser call ~20× a digits one on a CPU).
DEFAULT_SAMPLES: dict[str, int] = {"digits": 100, "glyphs": 10}
DEFAULT_SENSITIVITY_IMAGES: dict[str, int] = {"digits": 64, "glyphs": 26}


def world_for(model) -> worlds.World:
    """The world of a loaded embedded model (its card's ``world``; digits for cards without one)."""
    return worlds.world(getattr(model.card, "world", None) or "digits")


def balanced_subset(labels: np.ndarray | list[int], n: int | None) -> np.ndarray:
    """Sorted positions of ``n`` of ``labels`` with equal counts per class where possible (the first
    ``n mod classes`` classes, spread over the class list, get one more), every class's picks spread
    over its images and rotated with the class, so that e.g. one image per glyph class takes the five
    test fonts in turn. ``n`` None or ≥ len: every position."""
    y = np.asarray(labels)
    if n is None or n >= len(y):
        return np.arange(len(y))
    if n < 1:
        raise ValueError(f"--limit must be ≥ 1, got {n}")
    classes = np.unique(y)
    base, extra = divmod(n, len(classes))
    more = set(np.linspace(0, len(classes) - 1, extra).round().astype(int).tolist()) if extra else set()
    picks: list[int] = []
    for ci, c in enumerate(classes):
        pos = np.flatnonzero(y == c)
        k = min(len(pos), base + (ci in more))
        picks += [int(pos[(ci + (j * len(pos)) // k) % len(pos)]) for j in range(k)] if k else []
    return np.array(sorted(picks), dtype=int)


def _methods(
    keys: list[str] | None, default: list[str] | None = None, part: str | None = None
) -> list[tuple[str, Method]]:
    """(key, method) for ``keys`` (None: ``default``, or every key), in :data:`METHOD_SPECS` order.
    Keys may name groups: ``all``, ``default`` (the part's default set) and ``cached`` (the
    cached-assignment variants). For ``part="classification"`` the ``reuse="steps"`` variants
    are left out of groups and refused by name: there they would repeat their uncached method."""
    specs = {k: s for k, s in METHOD_SPECS}
    steps = {k for k, s in METHOD_SPECS if "reuse=steps" in s} if part == "classification" else set()
    wanted: list[str] = []
    for key in (default if default is not None else list(specs)) if keys is None else keys:
        if key == "all":
            wanted += [k for k in specs if k not in steps]
        elif key == "default":
            wanted += default if default is not None else list(specs)
        elif key == "core":
            wanted += CORE
        elif key == "cached":
            wanted += [k for k in CACHED if k not in steps]
        elif key == "ablations":
            wanted += ABLATIONS
        elif key in steps:
            raise ValueError(
                f"{key}: reuse=steps only changes generation (the classifier's calls are new batches, which always "
                f"recompute), so it would repeat {CACHED[key]}; use it in --gen-methods"
            )
        else:
            wanted.append(key)
    unknown = sorted(set(wanted) - set(specs))
    if unknown:
        raise ValueError(f"unknown method keys {unknown}; groups {list(GROUPS)} or one of {list(specs)}")
    return [(k, parse_method(s)) for k, s in METHOD_SPECS if k in wanted]


def _order(key: str) -> tuple[int, str]:
    keys = [k for k, _ in METHOD_SPECS]
    return (keys.index(key) if key in keys else len(keys), key)


def eval_classification(model, methods, limit: int | None, progress) -> dict[str, Any]:
    """Top-1 of every method on the world's test split (``limit``: a :func:`balanced_subset`)."""
    x, y = world_for(model).load("test")
    idx = balanced_subset(y.numpy(), limit)
    n = len(idx)
    out: dict[str, Any] = {"images": idx.tolist(), "labels": y[idx].tolist(), "methods": {}}
    proto = Protocol.from_dict(model.card.protocol)
    out["protocol"] = _json_like(asdict(proto))
    for key, meth in methods:
        t0 = time.perf_counter()
        preds, evals, den = [], 0, 0.0
        for j, i in enumerate(idx):
            r = classify(model, x[i], method=meth, seed=int(i), protocol=proto)
            preds.append(int(r.class_ids[r.prediction_index]))
            evals, den = evals + r.n_evals, den + r.denoiser_s
            progress(f"classify {key}", j + 1, n)
        correct = [p == int(t) for p, t in zip(preds, y[idx].tolist(), strict=True)]
        k = sum(correct)
        lo, hi = wilson(k, n)
        out["methods"][key] = {
            "method": meth.label(),
            "params": {"name": meth.name, **meth.params()},
            "correct": k,
            "n": n,
            "acc": 100 * k / n,
            "ci95": [100 * lo, 100 * hi],
            "evals_per_image": evals / n,
            "denoiser_s_per_image": den / n,
            "wall_s": time.perf_counter() - t0,
            "pred": preds,
        }
    out["paired"] = paired_tests(out, "classification")
    return out


def _outcomes(part: dict[str, Any], row: dict[str, Any], kind: str) -> list[bool] | None:
    """Per-image (classification) or per-sample (generation: recognised as its class) outcomes."""
    if "pred" not in row:
        return None  # a generation row from before per-sample predictions were recorded
    if kind == "classification":
        return [p == t for p, t in zip(row["pred"], part["labels"], strict=True)]
    pred = decode_pred(row["pred"])
    labels = [c for c in range(len(pred) // part["per_class"]) for _ in range(part["per_class"])]
    return [p == t for p, t in zip(pred, labels, strict=True)]


def encode_pred(pred: np.ndarray | list[int], num_classes: int) -> str | list[int]:
    """A generation row's per-sample labels: a string of digits where every id is one digit (the
    digits world, as its files always held them), else a list of ints."""
    ids = [int(p) for p in pred]
    return "".join(str(p) for p in ids) if num_classes <= 10 else ids


def decode_pred(pred: str | list[int]) -> list[int]:
    """The per-sample class ids of :func:`encode_pred` (either form)."""
    return [int(p) for p in pred]


def paired_tests(part: dict[str, Any], kind: str) -> dict[str, Any]:
    """Exact McNemar tests of :data:`PAIRS` (classification: also every method vs Baseline) on the
    rows of ``part``; ``same_run`` says whether both rows come from one run (same command and
    device); generation pairs of one run also get ``mse``, the mean squared difference between
    their samples (same noise)."""
    res = part["methods"]
    pairs = list(PAIRS)
    if kind == "classification":
        pairs += [(k, "baseline") for k in res if k != "baseline"]
    out: dict[str, Any] = {}
    for a, b in pairs:
        if a not in res or b not in res:
            continue
        ca, cb = _outcomes(part, res[a], kind), _outcomes(part, res[b], kind)
        if ca is None or cb is None:
            continue
        t = mcnemar_exact(ca, cb)
        t["same_run"] = res[a].get("run") == res[b].get("run")
        if kind == "generation" and t["same_run"] and b in res[a].get("mse_vs", {}):
            t["mse"] = res[a]["mse_vs"][b]
        out[f"{a} vs {b}"] = t
    return out


def _json_like(x: Any) -> Any:
    return json.loads(json.dumps(x))


def same_settings(old: dict[str, Any], new: dict[str, Any], kind: str) -> bool:
    """Whether rows of ``old`` can stand next to rows of ``new`` in one table: the same test images
    and protocol (classification); the same samples per class, sampler and reference classifier
    (generation: its train-vs-test FID may differ in the last digits between machines)."""
    if kind == "classification":
        return all(_json_like(old.get(k)) == _json_like(new[k]) for k in ("images", "labels", "protocol"))
    if any(old.get(k) != new[k] for k in ("per_class", "steps", "guidance")):
        return False
    a, b = old.get("reference") or {}, new["reference"]
    return (
        a.get("model") == b["model"]
        and a.get("test_acc") == b["test_acc"]
        and abs(a.get("fid_ref_train_vs_test", math.inf) - b["fid_ref_train_vs_test"]) < 1e-3
    )


def merge_part(old: dict[str, Any] | None, new: dict[str, Any], run: dict[str, Any], kind: str) -> dict[str, Any]:
    """The part ``new`` just measured by ``run``, with the rows of ``old`` (the same part from an
    earlier run on the same weights) it did not measure, when :func:`same_settings` allows.

    Every row records the run (:func:`bigain.provenance.summary`: command, device, commit, time)
    that measured it; rows of ``old`` without one get
    ``old["run"]``. A row measured again replaces the old one, which is appended to
    ``superseded[key]``; rows are ordered as :data:`METHOD_SPECS`; the paired tests are redone."""
    rows = {k: {**r, "run": run} for k, r in new["methods"].items()}
    superseded: dict[str, list[dict[str, Any]]] = {}
    if old is not None and same_settings(old, new, kind):
        first = old.get("run", {})
        superseded = {k: list(v) for k, v in old.get("superseded", {}).items()}
        for k, r in old["methods"].items():
            r = r if "run" in r else {**r, "run": first}
            if k in rows:
                superseded.setdefault(k, []).append(r)
            else:
                rows[k] = r
    elif old is not None:
        print(f"note: the earlier {kind} rows ({len(old['methods'])}) were measured with other settings; "
              "they are replaced", file=sys.stderr)  # fmt: skip
    part = {k: v for k, v in new.items() if k not in ("methods", "paired", "run", "superseded")}
    part["run"] = run
    part["methods"] = {k: rows[k] for k in sorted(rows, key=_order)}
    if superseded:
        part["superseded"] = superseded
    part["paired"] = paired_tests(part, kind)
    return part


#: Timesteps at which :func:`sensitivity` compares denoiser outputs.
SENSITIVITY_TIMESTEPS: tuple[int, ...] = (100, 300, 500, 700, 900)


@torch.no_grad()
def sensitivity(model, methods, n_images: int | None = None, seed: int = 0) -> dict[str, Any]:
    """How far each method moves the denoiser's ε, and how far it moves the *difference* between
    two classes' ε (what the diffusion classifier ranks on): a cheap predictor of whether
    compression can change the classifier's answers or only the samples.

    On ``n_images`` test images (default :data:`DEFAULT_SENSITIVITY_IMAGES` of the world; digits:
    the first ones, as its reports always used; other worlds: a :func:`balanced_subset`), noised at
    :data:`SENSITIVITY_TIMESTEPS` (one seeded noise draw each), with ε_c the uncompressed prediction
    for the true class and ε_o for the next class (c + 1 modulo the world's classes):

    * ``ratio[key]`` = mean ‖ε'_c − ε_c‖² / ‖ε_c − noise‖² (ε' under the method); references:
      ``class`` (ε_o in place of ε'_c: the class signal) and ``no self-attention`` (every
      self-attention output zeroed: the most token compression of self-attention could change);
    * ``contrast[key]`` = mean ‖(ε'_c − ε'_o) − (ε_c − ε_o)‖² / ‖ε_c − ε_o‖²: a method that shifts every
      class's ε alike leaves the ranking alone however large its ``ratio``."""
    from bigain import patch

    world = world_for(model)
    if n_images is None:
        n_images = DEFAULT_SENSITIVITY_IMAGES.get(world.name, 64)
    x, y = world.load("test")
    idx = np.arange(min(n_images, len(y))) if world.name == "digits" else balanced_subset(y.numpy(), n_images)
    n_images = len(idx)
    z, labels = model.encode(x[idx]), [int(c) for c in y[idx]]
    # Both classes in one batched call, as the classifier batches them: ToMe's random partition is shared.
    both = cat(model.condition(labels), model.condition([(c + 1) % world.num_classes for c in labels]))

    def eps_pair(xt: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return model.eps(torch.cat([xt, xt]), t, both).chunk(2)

    gen = torch.Generator().manual_seed(seed)
    patch.seed(model, seed)  # ToMe's random destinations too, so the figures do not depend on earlier calls
    blocks = [m.attn1 for m in model.denoiser.modules() if type(m).__name__ == "BasicTransformerBlock"]
    ratio: dict[str, float] = {}
    contrast: dict[str, float] = {}
    n_t = len(SENSITIVITY_TIMESTEPS)

    def add(table: dict[str, float], key: str, change: torch.Tensor, scale: torch.Tensor) -> None:
        table[key] = table.get(key, 0.0) + (change.square().mean() / scale.square().mean()).item() / n_t

    for t in SENSITIVITY_TIMESTEPS:
        noise = torch.randn(z.shape, generator=gen).to(z)
        a = model.alphas_cumprod[t].to(z)
        xt = a.sqrt() * z + (1 - a).sqrt() * noise
        eps_c, eps_o = eps_pair(xt, t)
        add(ratio, "class", eps_o - eps_c, eps_c - noise)
        hooks = [b.register_forward_hook(lambda mod, args, out: torch.zeros_like(out)) for b in blocks]
        try:
            variants = [("no self-attention", *eps_pair(xt, t))]
        finally:
            for h in hooks:
                h.remove()
        for key, meth in methods:
            if meth.compresses:
                with patch.compress(model, meth):
                    variants.append((key, *eps_pair(xt, t)))
        for key, c, o in variants:
            add(ratio, key, c - eps_c, eps_c - noise)
            add(contrast, key, (c - o) - (eps_c - eps_o), eps_c - eps_o)
    return {"n_images": n_images, "timesteps": list(SENSITIVITY_TIMESTEPS), "seed": seed, "ratio": ratio,
            "contrast": contrast}  # fmt: skip


def eval_generation(model, methods, per_class: int, progress) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``per_class`` samples of every class of the world per method, judged by its reference classifier."""
    world = world_for(model)
    ref = world.reference()
    x_test, y_test = world.load("test")
    real = ref.features(x_test)
    out: dict[str, Any] = {
        "per_class": per_class,
        "steps": model.card.steps,
        "guidance": model.card.guidance,
        "reference": _reference_record(world, ref, x_test, y_test),
        "methods": {},
    }
    samples: dict[str, np.ndarray] = {}
    for key, meth in methods:
        imgs, labels, den, calls, t0 = [], [], 0.0, 0, time.perf_counter()
        for c in range(world.num_classes):
            g = generate(model, c, method=meth, seed=c, num_images=per_class)
            imgs.append(g.array[..., 0] * 2 - 1)
            labels += [c] * per_class
            den, calls = den + g.denoiser_s, calls + g.n_calls
            progress(f"generate {key}", c + 1, world.num_classes)
        s = np.concatenate(imgs)[:, None].astype(np.float32)  # (N, 1, side, side) in [-1, 1]
        samples[key] = s
        pred = ref.predict(s)
        k, n = int((pred == np.array(labels)).sum()), len(labels)
        lo, hi = wilson(k, n)
        feats = ref.features(s)
        row = {
            "method": meth.label(),
            "recognised": k,
            "n": n,
            "cond_acc": 100 * k / n,
            "ci95": [100 * lo, 100 * hi],
            "fid_ref": digits.frechet_distance(feats, real),
            "kid_ref": digits.kernel_distance(feats, real),
            "denoiser_s_per_call": den / max(1, calls),
            "wall_s": time.perf_counter() - t0,
        }
        if "baseline" in samples and key != "baseline":
            row["mse_vs_baseline"] = float(((s - samples["baseline"]) ** 2).mean())
        row["pred"] = encode_pred(pred, world.num_classes)  # the reference classifier's label of every sample
        row["thumbs"] = encode_tiles(first_tiles(s, per_class))  # the sample grid's row
        out["methods"][key] = row
    for a, b in PAIRS:  # the same noise: how far one method's samples are from the other's
        if a in samples and b in samples:
            out["methods"][a].setdefault("mse_vs", {})[b] = float(((samples[a] - samples[b]) ** 2).mean())
    return out, samples


def _reference_record(world: worlds.World, ref, x_test, y_test) -> dict[str, Any]:
    acc = float((ref.predict(x_test) == y_test.numpy()).mean() * 100)
    x_tr, _ = world.load("train")
    return {
        "model": world.reference_name,
        "test_acc": acc,
        "fid_ref_train_vs_test": digits.frechet_distance(ref.features(x_tr), ref.features(x_test)),
        "kid_ref_train_vs_test": digits.kernel_distance(ref.features(x_tr), ref.features(x_test)),
    }


def first_tiles(samples: np.ndarray, per_class: int) -> np.ndarray:
    """(classes, H, W) uint8: the first sample of each class from (classes · per_class, 1, H, W)
    samples in [-1, 1], ordered by class."""
    n = len(samples) // per_class
    return np.stack([((samples[c * per_class, 0] + 1) * 127.5).clip(0, 255).astype(np.uint8) for c in range(n)])


def encode_tiles(tiles: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(tiles, dtype=np.uint8).tobytes()).decode("ascii")


def decode_tiles(text: str, n_tiles: int | None = None) -> np.ndarray:
    """(n_tiles, side, side) uint8 from :func:`encode_tiles`. ``n_tiles`` None: the first class count
    of a world (10, 26) that makes square tiles (digits rows: 10 of 16×16; glyphs: 26 of 32×32)."""
    flat = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    if n_tiles is None:
        counts = (10, 26)
        n_tiles = next((n for n in counts if len(flat) % n == 0 and _is_square(len(flat) // n)), 10)
    side = math.isqrt(len(flat) // n_tiles)
    return flat.reshape(n_tiles, side, side)


def _is_square(v: int) -> bool:
    return math.isqrt(v) ** 2 == v


GRID_SCALE, GRID_GAP = 3, 2


def grid_scale(side: int) -> int:
    """Upscaling of the sample picture's tiles: ×3 for 16-px digits (as before), ×2 from 32 px."""
    return GRID_SCALE if side < 32 else 2


def sample_grid(
    samples: dict[str, np.ndarray], labels: dict[str, str], per_class: int, path: Path, scale: int = GRID_SCALE
) -> None:
    """One row per method (labelled), one column per class: the first sample of each class, which
    starts from the same noise for every method, so rows differ only by the method."""
    tile_grid({k: first_tiles(s, per_class) for k, s in samples.items()}, labels, path, scale)


def tile_grid(tiles: dict[str, np.ndarray], labels: dict[str, str], path: Path, scale: int | None = None) -> None:
    """:func:`sample_grid` from (classes, H, W) uint8 tiles per row key (``scale`` None: :func:`grid_scale`)."""
    from PIL import ImageDraw

    texts = {k: labels[k].replace("α", "a").replace("→", "->") for k in tiles}  # the default bitmap font is ASCII
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    margin = max([150, *[int(probe.textlength(t)) + 12 for t in texts.values()]])
    first = next(iter(tiles.values()), np.zeros((10, 16, 16), np.uint8))
    n_cols, side = first.shape[0], first.shape[-1]
    scale = grid_scale(side) if scale is None else scale
    tile, gap = side * scale, GRID_GAP
    img = Image.new("L", (margin + n_cols * (tile + gap), len(tiles) * (tile + gap)), 40)
    draw = ImageDraw.Draw(img)
    for r, (key, row) in enumerate(tiles.items()):
        y = r * (tile + gap)
        draw.text((4, y + tile // 2 - 5), texts[key], fill=230)
        for c in range(n_cols):
            cell = Image.fromarray(row[c]).resize((tile, tile), Image.NEAREST)
            img.paste(cell, (margin + c * (tile + gap), y))
    img.convert("RGB").save(path)


def tiles_from_grid(
    path: Path, n_rows: int, side: int = 16, scale: int | None = None, n_tiles: int = 10
) -> list[np.ndarray] | None:
    """The (n_tiles, side, side) tiles of each row of a picture :func:`tile_grid` wrote (exact: nearest
    upscaling of uint8 pixels); None where the file is missing or is not ``n_rows`` rows of that layout."""
    if not path.is_file():
        return None
    scale = grid_scale(side) if scale is None else scale
    tile, gap = side * scale, GRID_GAP
    img = np.asarray(Image.open(path).convert("L"))
    margin = img.shape[1] - n_tiles * (tile + gap)
    if n_rows < 1 or img.shape[0] != n_rows * (tile + gap) or margin < 0:
        return None
    xs = range(margin, margin + n_tiles * (tile + gap), tile + gap)
    rows = range(0, n_rows * (tile + gap), tile + gap)
    return [np.stack([img[y : y + tile : scale, x : x + tile : scale] for x in xs]) for y in rows]


def grid_only(model_name: str, out_dir: Path | None = None, keys: list[str] | None = None) -> Path:
    """Just the labelled picture: one sample per class (one batch, seed 0) for every method."""
    model = load_model(model_name)
    methods = _methods(keys)
    ids = list(range(world_for(model).num_classes))
    samples = {k: generate(model, ids, method=m, seed=0).array[..., 0][:, None] * 2 - 1 for k, m in methods}
    out_dir = out_dir or assets_dir() / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model.card.name}-samples.png"
    sample_grid(samples, {k: m.label() for k, m in methods}, 1, path)
    return path


def run(
    model_name: str,
    out_dir: Path | None = None,
    limit: int | None = None,
    samples: int | None = None,
    method_keys: list[str] | None = None,
    gen_keys: list[str] | None = None,
    device: str | None = None,
    skip_classify: bool = False,
    skip_generate: bool = False,
    command: str | None = None,
    progress=None,
    sensitivity_images: int | None = None,
    log=None,
    estimate_only: bool = False,
) -> dict[str, Any]:
    """Evaluate one embedded model; writes ``<out_dir>/<model>.json|.md|-samples.png`` and returns
    the result. Rows of an earlier result on the same weights and settings that this run does not
    measure are kept (:func:`merge_part`). ``command`` is recorded in the provenance (default: this
    process's command line). ``samples`` / ``sensitivity_images`` None: the world's defaults
    (:data:`DEFAULT_SAMPLES`, :data:`DEFAULT_SENSITIVITY_IMAGES`; 0 skips the part). ``log``: where
    the cost estimate (:func:`estimate`, a few denoiser calls to time) is printed before measuring;
    ``estimate_only``: return ``{"estimate": …}`` after it, measuring and writing nothing."""
    progress = progress or (lambda desc, i, n: None)
    cls_methods = _methods(method_keys, CLASSIFY_DEFAULT, "classification")
    gen_methods = _methods(gen_keys, GEN_DEFAULT, "generation")
    model = load_model(model_name, device=device)
    world = world_for(model)
    samples = DEFAULT_SAMPLES.get(world.name, 10) if samples is None else samples
    if log is not None or estimate_only:
        est = estimate(model, [] if skip_classify else cls_methods, [] if skip_generate else gen_methods, limit,
                       samples, sensitivity_images, sens_methods=cls_methods)  # fmt: skip
        (log or print)(format_estimate(est))
        if estimate_only:
            return {"model": model.card.name, "estimate": est}
    out_dir = out_dir or assets_dir() / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance.provenance(model.device, command)
    run_info = provenance.summary(prov)  # stored with every row this run measures
    res: dict[str, Any] = {
        "model": model.card.name,
        "command": run_info["command"],
        "device": run_info["device"],
        "provenance": prov,
        "world": world_record(world),
        **reference_baseline(world),
        "training": _training(model_name),
    }
    # A part this run skips keeps its earlier result, if that was measured on the same weights;
    # a part it measures keeps the earlier rows it does not measure (same weights and settings).
    res.update(_kept_parts(out_dir / f"{model.card.name}.json", res["training"]))
    t0 = time.perf_counter()
    sens_methods = cls_methods
    if not skip_classify:
        for one in cls_methods:  # written after every row: a run stopped part-way keeps the rows it finished
            new = eval_classification(model, [one], limit, progress)
            res["classification"] = merge_part(res.get("classification"), new, run_info, "classification")
            _write(res, out_dir, model.card.name)
    if res.get("classification") and not (skip_classify and method_keys is not None):
        # the sensitivity section covers the whole table, kept rows too (seconds), unless --methods names rows
        known = {k for k, _ in METHOD_SPECS}
        sens_methods = _methods([k for k in res["classification"]["methods"] if k in known])
    if sensitivity_images is None:
        res["sensitivity"] = {**sensitivity(model, sens_methods), "run": run_info}
    elif sensitivity_images > 0:
        res["sensitivity"] = {**sensitivity(model, sens_methods, sensitivity_images), "run": run_info}
    if not skip_generate and samples > 0:
        gen, s = eval_generation(model, gen_methods, samples, progress)
        grid = out_dir / f"{model.card.name}-samples.png"
        old = res.get("generation")
        res["generation"] = merge_part(old, gen, run_info, "generation")
        _thumbs_from_old_grid(res["generation"], old, grid, s, samples)
        rows = res["generation"]["methods"]
        tiles = {k: decode_tiles(r["thumbs"], world.num_classes) for k, r in rows.items() if "thumbs" in r}
        tile_grid(tiles, {k: rows[k]["method"] for k in tiles}, grid)
    res["wall_s"] = time.perf_counter() - t0
    _write(res, out_dir, model.card.name)
    return res


def world_record(world: worlds.World) -> dict[str, Any]:
    """What a result file says about its world: name, classes, image side, test split, reference."""
    split = world.split_record()
    _, y = world.load("test")
    rule = split.get("rule", "")
    if split.get("test_faces"):
        rule += " (test fonts: " + ", ".join(f.removesuffix(".ttf") for f in split["test_faces"]) + ")"
    return {
        "name": world.name,
        "description": world.description,
        "classes": list(world.classes),
        "size": world.size,
        "test_split": {"n": len(y), "rule": rule},
        "reference": world.reference_name,
    }


def reference_baseline(world: worlds.World) -> dict[str, Any]:
    """The accuracy a report states before the diffusion classifier's: digits, logistic regression on
    raw pixels (as its reports always had); other worlds, the reference classifier's own held-out
    accuracy (its training record, in %)."""
    if world.name == "digits":
        lr = digits.logistic_baseline()
        return {"logistic_regression_acc": 100 * lr["correct"] / lr["n"], "logistic_regression": lr}
    ref = world.reference()
    acc = (getattr(ref, "record", None) or {}).get("accuracy") or {}
    return {"reference_accuracy": {k: 100 * float(v) for k, v in acc.items()}}


def evals_per_image(proto: Protocol, n_classes: int) -> int:
    """(class, timestep) denoiser evaluations the classifier's rounds make per image."""
    return planned_evaluations(proto, n_classes)


@torch.no_grad()
def seconds_per_eval(model, batch: int, method: Method | None = None, repeats: int = 2) -> float:
    """Wall seconds of one image's denoiser evaluation in a batch of ``batch`` under ``method``
    (None: uncompressed; the fastest of ``repeats`` timed calls, after a warm-up call)."""
    from bigain import patch
    from bigain.methods import Baseline

    batch = max(1, batch)
    shape = (batch, model.latent_channels, model.latent_size, model.latent_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(model.device, model.dtype)
    cond = model.condition([0] * batch)
    with patch.compress(model, method or Baseline()):
        model.eps(x[:1], 500, model.condition([0]))
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        best = math.inf
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            model.eps(x, 500, cond)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best / batch


def estimate(
    model,
    cls_methods: list[tuple[str, Method]],
    gen_methods: list[tuple[str, Method]],
    limit: int | None,
    per_class: int,
    sensitivity_images: int | None = None,
    sens_methods: list[tuple[str, Method]] | None = None,
    time_it: bool = True,
) -> dict[str, Any]:
    """What a :func:`run` with these settings costs: denoiser evaluations per part and, timed on this
    machine now (``time_it``: a batch of 32 under the baseline and every compressing method, and one
    of the generation size; one call each after a warm-up), seconds: expect ±20%, more on a busy machine."""
    world = world_for(model)
    _, y = world.load("test")
    n_images = len(balanced_subset(y.numpy(), limit))
    proto = Protocol.from_dict(model.card.protocol)
    per_image = evals_per_image(proto, world.num_classes)
    n_sens = DEFAULT_SENSITIVITY_IMAGES.get(world.name, 64) if sensitivity_images is None else sensitivity_images
    n_sens = min(n_sens, len(y))
    sens = [(k, m) for k, m in (cls_methods if sens_methods is None else sens_methods) if m.compresses]
    cfg = 1 if model.card.guidance == 1 else 2
    est: dict[str, Any] = {
        "world": world.name,
        "threads": torch.get_num_threads(),
        "classification": {"methods": len(cls_methods), "images": n_images, "evals_per_image": per_image,
                           "evals": len(cls_methods) * n_images * per_image},
        # per timestep: the true and the next class for every image, uncompressed, without
        # self-attention and under every compressing method
        "sensitivity": {"images": n_sens, "evals": len(SENSITIVITY_TIMESTEPS) * 2 * n_sens * (2 + len(sens))},
        "generation": {"methods": len(gen_methods), "samples": world.num_classes * per_class,
                       "evals": len(gen_methods) * world.num_classes * per_class * model.card.steps * cfg},
    }  # fmt: skip
    if time_it:
        batch = min(model_batch(model), per_image, 32)
        base = seconds_per_eval(model, batch, repeats=1)
        every = dict([*cls_methods, *gen_methods, *sens])
        rel = {k: seconds_per_eval(model, batch, m, repeats=1) / base for k, m in every.items() if m.compresses}
        s_gen = seconds_per_eval(model, cfg * per_class, repeats=1) if gen_methods and per_class else base
        est["s_per_eval"] = {"baseline": base, "generation_batch": s_gen}
        est["relative_cost"] = rel
        c, g = est["classification"], est["generation"]
        c["s"] = sum(rel.get(k, 1.0) for k, _ in cls_methods) * n_images * per_image * base
        est["sensitivity"]["s"] = len(SENSITIVITY_TIMESTEPS) * 2 * n_sens * (2 + sum(rel[k] for k, _ in sens)) * base
        g["s"] = sum(rel.get(k, 1.0) for k, _ in gen_methods) * g["samples"] * model.card.steps * cfg * s_gen
        est["s"] = c["s"] + est["sensitivity"]["s"] + g["s"]
    return est


def model_batch(model) -> int:
    """The classifier's default batch for this model (:func:`bigain.pipelines.classify.classify`)."""
    return 128 if model.vae is None else 16


def format_estimate(est: dict[str, Any]) -> str:
    c, s, g = est["classification"], est["sensitivity"], est["generation"]
    lines = [
        f"cost estimate ({est['world']} world, {est['threads']} thread(s)): denoiser evaluations",
        f"  classification {c['methods']} methods × {c['images']} images × {c['evals_per_image']} = {c['evals']:,}",
        f"  sensitivity    {s['images']} images: {s['evals']:,}",
        f"  generation     {g['methods']} methods × {g['samples']} samples: {g['evals']:,}",
    ]
    if "s" in est:
        ms = {k: 1000 * v for k, v in est["s_per_eval"].items()}
        rel = ", ".join(f"{k} {v:.2f}" for k, v in est["relative_cost"].items())
        lines += [
            f"  timed now: baseline {ms['baseline']:.1f} ms/eval ({ms['generation_batch']:.1f} in generation "
            f"batches); cost relative to it: {rel or '—'}",
            f"  ≈ classification {c['s'] / 60:.1f} min + sensitivity {s['s'] / 60:.1f} min + generation "
            f"{g['s'] / 60:.1f} min = {est['s'] / 60:.1f} min (timed on a few calls: ±20%, more on a busy "
            "machine)",
        ]
    return "\n".join(lines)


def _thumbs_from_old_grid(
    part: dict[str, Any], old: dict[str, Any] | None, grid: Path, samples: dict[str, np.ndarray], per_class: int
) -> None:
    """Kept generation rows from before thumbnails were recorded get theirs from the old picture,
    if it holds exactly the old part's rows and its Baseline row matches the Baseline just sampled
    from the same noise (so it is that part's picture, not a ``--grid-only`` one)."""
    if old is None or "baseline" not in old["methods"] or "baseline" not in samples:
        return
    missing = [k for k, r in part["methods"].items() if "thumbs" not in r and k in old["methods"]]
    if not missing:
        return
    base = samples["baseline"]
    tiles = tiles_from_grid(grid, len(old["methods"]), side=base.shape[-1], n_tiles=len(base) // per_class)
    if tiles is None:
        return
    by_key = dict(zip(old["methods"], tiles, strict=True))
    diff = np.abs(by_key["baseline"].astype(int) - first_tiles(samples["baseline"], per_class).astype(int))
    if diff.mean() > 2.0:  # another picture (device rounding moves a few pixels by a level or two)
        print(f"note: {grid} is not the earlier samples' picture; kept rows stay out of it", file=sys.stderr)
        return
    for k in missing:
        part["methods"][k]["thumbs"] = encode_tiles(by_key[k])


def _kept_parts(path: Path, training: dict[str, Any] | None) -> dict[str, Any]:
    """Classification / generation results of an earlier run on the same weights (same training
    record), each stamped with the run (command, device, …) that produced it."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("training") != training:
        return {}
    first = {"command": old.get("command", ""), "device": old.get("device", "")}  # files from before provenance
    if old.get("provenance"):
        first = provenance.summary(old["provenance"])
    return {k: {"run": first, **old[k]} for k in ("classification", "generation") if k in old}


def _training(name: str) -> dict[str, Any] | None:
    path = assets_dir() / name / "training.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    return {k: rec.get(k) for k in ("steps", "seed", "final_loss", "wall_s", "git_commit")}


def _write(res: dict[str, Any], out_dir: Path, name: str) -> None:
    store.write_json(out_dir / f"{name}.json", res, indent=1)
    store.write_text(out_dir / f"{name}.md", report.digits_markdown(res))

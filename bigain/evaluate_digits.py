"""The small-scale replication on the embedded digits models: ``python -m bigain eval digits``.

For each model and each method (Baseline; ToMe and L-GTM at ratio 0.3/0.5/0.7; ToDo and IE-KVD at
factor 2 with α = 0, 0.9 and the 0.8→1.2 schedule — α = 1 *is* ToDo):

* classification: the diffusion classifier (model card protocol: 10 shared-noise timesteps
  range(50, 1000, 100) for all 10 classes, seed = image index) on every image of the test split;
  top-1 with Wilson 95% intervals and an exact McNemar test of L-GTM vs ToMe at the same ratio and
  of IE-KVD vs ToDo (and of every method vs Baseline), on the same images;
* generation: ``--samples`` images per class (seed = class id, so every method starts from the
  same noise; DDIM 25 steps, guidance 2), judged by the reference classifier of
  :mod:`bigain.digits` (trained on the train split only): conditional accuracy, and FID / KID in its
  128-d hidden-layer feature space against the test split (not Inception FID), and the mean
  squared difference to the baseline's samples from the same noise.
* sensitivity (:func:`sensitivity`, seconds): how far each method moves ε and the class contrast
  the classifier ranks on, next to swapping the class and zeroing self-attention.

Writes ``assets/eval/<model>.json`` (with per-image predictions) and ``.md`` and a sample grid PNG;
each part records its command and device, and a part a run skips keeps its earlier result when
that was measured on the same weights.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bigain import digits
from bigain.evaluate.report import wilson
from bigain.methods import Method, parse_method
from bigain.models import assets_dir, cat, load_model
from bigain.pipelines.classify import Protocol, classify
from bigain.pipelines.generate import generate

#: (key, spec) of every method the replication compares; the key names rows and JSON entries.
METHOD_SPECS: list[tuple[str, str]] = [
    ("baseline", "baseline"),
    *[(f"tome-{r}", f"tome:ratio={r}") for r in (0.3, 0.5, 0.7)],
    *[(f"lgtm-{r}", f"lgtm:ratio={r}") for r in (0.3, 0.5, 0.7)],
    ("todo-2", "todo:factor=2"),
    ("iekvd-2-a0", "iekvd:factor=2;alpha=0"),
    ("iekvd-2-a0.9", "iekvd:factor=2;alpha=0.9"),
    ("iekvd-2-a0.8-1.2", "iekvd:factor=2;alpha=0.8;alpha_end=1.2"),
]
#: Methods whose samples are judged by default (the issue's set plus IE-KVD's generation schedule).
GEN_DEFAULT: list[str] = ["baseline", "tome-0.5", "tome-0.7", "lgtm-0.5", "lgtm-0.7", "todo-2", "iekvd-2-a0.8-1.2"]
#: Paired comparisons: (method, reference).
PAIRS: list[tuple[str, str]] = [
    *[(f"lgtm-{r}", f"tome-{r}") for r in (0.3, 0.5, 0.7)],
    *[(k, "todo-2") for k in ("iekvd-2-a0", "iekvd-2-a0.9", "iekvd-2-a0.8-1.2")],
]


def mcnemar_exact(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """Exact two-sided McNemar test on paired outcomes: b01 = a right & b wrong, b10 = the reverse."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    b01 = sum(x and not y for x, y in zip(a, b, strict=True))
    b10 = sum(y and not x for x, y in zip(a, b, strict=True))
    n = b01 + b10
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p": 1.0}
    k = min(b01, b10)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    return {"a_only": b01, "b_only": b10, "p": p}


def _methods(keys: list[str] | None) -> list[tuple[str, Method]]:
    chosen = [(k, parse_method(s)) for k, s in METHOD_SPECS if keys is None or k in keys]
    if keys is not None and len(chosen) != len(set(keys)):
        raise ValueError(f"unknown method keys {sorted(set(keys) - {k for k, _ in chosen})}; see {METHOD_SPECS}")
    return chosen


def eval_classification(model, methods, limit: int | None, progress) -> dict[str, Any]:
    x, y = digits.load("test")
    n = len(y) if limit is None else min(limit, len(y))
    idx = np.linspace(0, len(y) - 1, n).round().astype(int) if n < len(y) else np.arange(len(y))
    out: dict[str, Any] = {"images": idx.tolist(), "labels": y[idx].tolist(), "methods": {}}
    proto = Protocol.from_dict(model.card.protocol)
    out["protocol"] = asdict(proto)
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
    res = out["methods"]
    out["paired"] = {}
    for a, b in [*PAIRS, *[(k, "baseline") for k in res if k != "baseline"]]:
        if a in res and b in res:
            ca = [p == t for p, t in zip(res[a]["pred"], out["labels"], strict=True)]
            cb = [p == t for p, t in zip(res[b]["pred"], out["labels"], strict=True)]
            out["paired"][f"{a} vs {b}"] = mcnemar_exact(ca, cb)
    return out


#: Timesteps at which :func:`sensitivity` compares denoiser outputs.
SENSITIVITY_TIMESTEPS: tuple[int, ...] = (100, 300, 500, 700, 900)


@torch.no_grad()
def sensitivity(model, methods, n_images: int = 64, seed: int = 0) -> dict[str, Any]:
    """How far each method moves the denoiser's ε, and how far it moves the *difference* between
    two classes' ε (what the diffusion classifier ranks on): a cheap predictor of whether
    compression can change the classifier's answers or only the samples.

    On the first ``n_images`` test images, noised at :data:`SENSITIVITY_TIMESTEPS` (one seeded noise
    draw each), with ε_c the uncompressed prediction for the true class and ε_o for the next class:

    * ``ratio[key]`` = mean ‖ε'_c − ε_c‖² / ‖ε_c − noise‖² (ε' under the method); references:
      ``class`` (ε_o in place of ε'_c: the class signal) and ``no self-attention`` (every
      self-attention output zeroed: the most token compression of self-attention could change);
    * ``contrast[key]`` = mean ‖(ε'_c − ε'_o) − (ε_c − ε_o)‖² / ‖ε_c − ε_o‖²: a method that shifts every
      class's ε alike leaves the ranking alone however large its ``ratio``."""
    from bigain import patch

    x, y = digits.load("test")
    z, labels = model.encode(x[:n_images]), [int(c) for c in y[:n_images]]
    # Both classes in one batched call, as the classifier batches them: ToMe's random partition is shared.
    both = cat(model.condition(labels), model.condition([(c + 1) % 10 for c in labels]))

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
    ref = digits.reference()
    x_test, y_test = digits.load("test")
    real = ref.features(x_test)
    out: dict[str, Any] = {
        "per_class": per_class,
        "steps": model.card.steps,
        "guidance": model.card.guidance,
        "reference": _reference_record(ref, x_test, y_test),
        "methods": {},
    }
    samples: dict[str, np.ndarray] = {}
    for key, meth in methods:
        imgs, labels, den, calls, t0 = [], [], 0.0, 0, time.perf_counter()
        for c in range(digits.NUM_CLASSES):
            g = generate(model, c, method=meth, seed=c, num_images=per_class)
            imgs.append(g.array[..., 0] * 2 - 1)
            labels += [c] * per_class
            den, calls = den + g.denoiser_s, calls + g.n_calls
            progress(f"generate {key}", c + 1, digits.NUM_CLASSES)
        s = np.concatenate(imgs)[:, None].astype(np.float32)  # (N, 1, 16, 16) in [-1, 1]
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
        out["methods"][key] = row
    return out, samples


def _reference_record(ref, x_test, y_test) -> dict[str, Any]:
    acc = float((ref.predict(x_test) == y_test.numpy()).mean() * 100)
    x_tr, _ = digits.load("train")
    return {
        "model": "MLP(128 ReLU) on 16x16 train split (+1-px shifts)",
        "test_acc": acc,
        "fid_ref_train_vs_test": digits.frechet_distance(ref.features(x_tr), ref.features(x_test)),
        "kid_ref_train_vs_test": digits.kernel_distance(ref.features(x_tr), ref.features(x_test)),
    }


def sample_grid(
    samples: dict[str, np.ndarray], labels: dict[str, str], per_class: int, path: Path, scale: int = 3
) -> None:
    """One row per method (labelled), one column per class: the first sample of each class, which
    starts from the same noise for every method, so rows differ only by the method."""
    from PIL import ImageDraw

    tile, gap, margin = 16 * scale, 2, 150
    keys = list(samples)
    img = Image.new("L", (margin + 10 * (tile + gap), len(keys) * (tile + gap)), 40)
    draw = ImageDraw.Draw(img)
    for r, key in enumerate(keys):
        y = r * (tile + gap)
        text = labels[key].replace("α", "a").replace("→", "->")  # the default bitmap font is ASCII
        draw.text((4, y + tile // 2 - 5), text, fill=230)
        for c in range(10):
            a = ((samples[key][c * per_class, 0] + 1) * 127.5).clip(0, 255).astype(np.uint8)
            cell = Image.fromarray(a).resize((tile, tile), Image.NEAREST)
            img.paste(cell, (margin + c * (tile + gap), y))
    img.convert("RGB").save(path)


def grid_only(model_name: str, out_dir: Path | None = None, keys: list[str] | None = None) -> Path:
    """Just the labelled picture: one sample per class (one batch, seed 0) for every method."""
    model = load_model(model_name)
    methods = _methods(keys)
    samples = {k: generate(model, list(range(10)), method=m, seed=0).array[..., 0][:, None] * 2 - 1 for k, m in methods}
    out_dir = out_dir or assets_dir() / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model.card.name}-samples.png"
    sample_grid(samples, {k: m.label() for k, m in methods}, 1, path)
    return path


def markdown(res: dict[str, Any]) -> str:
    c, g = res.get("classification"), res.get("generation")
    lines = [f"# Digits replication: {res['model']}", ""]
    lines += [f"Logistic regression on raw 8×8 pixels (test split): {res['logistic_regression_acc']:.1f}%", ""]
    if c:
        n_t = c["protocol"]
        lines += [
            f"## Diffusion-classifier top-1 on the test split ({len(c['images'])} images; protocol {n_t})",
            *_provenance(c),
            "",
            "| method | top-1 % | Wilson 95% | Δ vs baseline | evals/image | denoiser s/image |",
            "|---|---|---|---|---|---|",
        ]
        base = c["methods"].get("baseline", {}).get("acc")
        for r in c["methods"].values():
            d = "" if base is None else f"{r['acc'] - base:+.1f}"
            lines.append(
                f"| {r['method']} | {r['acc']:.1f} | {r['ci95'][0]:.1f}–{r['ci95'][1]:.1f} | {d} | "
                f"{r['evals_per_image']:.0f} | {r['denoiser_s_per_image']:.3f} |"
            )
        lines += [
            "",
            "Exact McNemar tests (paired on the same images):",
            "",
            "| pair | only first right | only second right | p |",
        ]
        lines += ["|---|---|---|---|"]
        for pair, t in c["paired"].items():
            lines.append(f"| {pair} | {t['a_only']} | {t['b_only']} | {t['p']:.3g} |")
    if res.get("sensitivity"):
        lines += _sensitivity_md(res["sensitivity"], c)
    if g:
        ref = g["reference"]
        lines += [
            "",
            f"## Generated samples ({g['per_class']} per class, DDIM {g['steps']} steps, guidance {g['guidance']})",
            *_provenance(g),
            "",
            f"Reference classifier: {ref['model']}, test accuracy {ref['test_acc']:.1f}%; "
            f"train-vs-test FID_ref {ref['fid_ref_train_vs_test']:.2f} (a floor for real data).",
            "",
            "| method | recognised % | Wilson 95% | FID_ref | KID_ref | MSE vs baseline | denoiser s/call |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in g["methods"].values():
            mse = f"{r['mse_vs_baseline']:.4f}" if "mse_vs_baseline" in r else "—"
            lines.append(
                f"| {r['method']} | {r['cond_acc']:.1f} | {r['ci95'][0]:.1f}–{r['ci95'][1]:.1f} | {r['fid_ref']:.2f} | "
                f"{r['kid_ref']:.4f} | {mse} | {r['denoiser_s_per_call']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def run(
    model_name: str,
    out_dir: Path | None = None,
    limit: int | None = None,
    samples: int = 100,
    method_keys: list[str] | None = None,
    gen_keys: list[str] | None = None,
    device: str | None = None,
    skip_classify: bool = False,
    skip_generate: bool = False,
    command: str = "",
    progress=None,
) -> dict[str, Any]:
    """Evaluate one embedded model; writes ``<out_dir>/<model>.json|.md|-samples.png`` and returns the result."""
    progress = progress or (lambda desc, i, n: None)
    model = load_model(model_name, device=device)
    out_dir = out_dir or assets_dir() / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    lr = digits.logistic_baseline()
    run_info = {
        "command": command,
        "device": f"{model.device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
    }
    res: dict[str, Any] = {
        "model": model.card.name,
        **run_info,
        "logistic_regression_acc": 100 * lr["correct"] / lr["n"],
        "logistic_regression": lr,
        "training": _training(model_name),
    }
    # A part this run skips keeps its earlier result, if that was measured on the same weights.
    res.update(_kept_parts(out_dir / f"{model.card.name}.json", res["training"]))
    t0 = time.perf_counter()
    res["sensitivity"] = {**sensitivity(model, _methods(method_keys)), "run": run_info}
    if not skip_classify:
        res["classification"] = {**eval_classification(model, _methods(method_keys), limit, progress), "run": run_info}
        _write(res, out_dir, model.card.name)
    if not skip_generate and samples > 0:
        gen, s = eval_generation(model, _methods(gen_keys or GEN_DEFAULT), samples, progress)
        res["generation"] = {**gen, "run": run_info}
        names = {k: m.label() for k, m in _methods(gen_keys or GEN_DEFAULT)}
        sample_grid(s, names, samples, out_dir / f"{model.card.name}-samples.png")
    res["wall_s"] = time.perf_counter() - t0
    _write(res, out_dir, model.card.name)
    return res


def _sensitivity_md(sens: dict[str, Any], c: dict[str, Any] | None) -> list[str]:
    labels = {k: r["method"] for k, r in (c or {}).get("methods", {}).items()}
    contrast = sens.get("contrast", {})
    rows = [
        f"| {labels.get(k, k)} | {v:.3f} | {contrast[k]:.3f} |"
        if k in contrast
        else f"| {labels.get(k, k)} | {v:.3f} | — |"
        for k, v in sens["ratio"].items()
    ]
    return [
        "",
        f"## Denoiser sensitivity ({sens['n_images']} test images, t ∈ {sens['timesteps']})",
        *_provenance(sens),
        "",
        "ε moved: mean ‖ε_method − ε‖² / ‖ε − noise‖², next to swapping the class (`class`) and zeroing every",
        "self-attention output (`no self-attention`). Class contrast moved: mean ‖Δ(ε_true − ε_other)‖² /",
        "‖ε_true − ε_other‖², what the classifier ranks on; a change shared by every class leaves it alone.",
        "",
        "| change | ε moved | class contrast moved |",
        "|---|---|---|",
        *rows,
    ]


def _provenance(part: dict[str, Any]) -> list[str]:
    run = part.get("run")
    return ["", f"Command: `{run['command']}`  ", f"Device: {run['device']}"] if run else []


def _kept_parts(path: Path, training: dict[str, Any] | None) -> dict[str, Any]:
    """Classification / generation results of an earlier run on the same weights (same training
    record), each stamped with the command and device that produced it."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("training") != training:
        return {}
    first = {"command": old.get("command", ""), "device": old.get("device", "")}
    return {k: {"run": first, **old[k]} for k in ("classification", "generation") if k in old}


def _training(name: str) -> dict[str, Any] | None:
    path = assets_dir() / name / "training.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    return {k: rec.get(k) for k in ("steps", "seed", "final_loss", "wall_s", "git_commit")}


def _write(res: dict[str, Any], out_dir: Path, name: str) -> None:
    (out_dir / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(res))

"""Merge per-image records into the run's result: accuracy with Wilson 95% intervals, agreement
between methods, cost per image, FID; and the Markdown table laid out like the paper's Tables 2/4."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (fractions in [0, 1])."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _cost(recs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "n_evals_per_image": _mean([r.get("n_evals") for r in recs]),
        "n_calls_per_image": _mean([r.get("n_calls") for r in recs]),
        "wall_s_per_image": _mean([r.get("wall_s") for r in recs]),
        "denoiser_s_per_image": _mean([r.get("denoiser_s") for r in recs]),
    }


def summarize_classify(
    records: list[dict[str, Any]], methods: Sequence[tuple[str, str]], images: Sequence[int]
) -> dict[str, Any]:
    """``methods`` = [(key, label)], ``images`` = the evaluation indices. Only complete methods
    (a record for every image) get accuracy; others are reported as incomplete."""
    by = {(r["image"], r["method"]): r for r in records}
    out: dict[str, Any] = {"methods": [], "agreement": {}, "complete": True}
    preds: dict[str, list[int]] = {}
    for key, label in methods:
        recs = [by[(i, key)] for i in images if (i, key) in by]
        row: dict[str, Any] = {"method": label, "key": key, "n": len(recs), "complete": len(recs) == len(images)}
        out["complete"] &= row["complete"]
        k = sum(bool(r["correct"]) for r in recs)
        lo, hi = wilson(k, len(recs))
        row.update(correct=k, acc=100 * k / len(recs) if recs else None, ci95=[100 * lo, 100 * hi], **_cost(recs))
        out["methods"].append(row)
        if row["complete"]:
            preds[label] = [by[(i, key)]["pred"] for i in images]
    labels = list(preds)
    for a in labels:
        out["agreement"][a] = {b: 100 * _agree(preds[a], preds[b]) for b in labels}
    _speedups(out["methods"])
    base = _baseline(out["methods"])
    for row in out["methods"]:
        if base and row["complete"] and base["complete"]:
            row["agree_with_baseline"] = out["agreement"][row["method"]][base["method"]]
    return out


def _baseline(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((row for row in rows if row["key"].startswith("baseline:")), None)


def _speedups(rows: list[dict[str, Any]]) -> None:
    """Wall time per image of the baseline over that of each method (same run, same images)."""
    base = _baseline(rows)
    for row in rows:
        if base and base["wall_s_per_image"] and row["wall_s_per_image"]:
            row["speedup_vs_baseline"] = base["wall_s_per_image"] / row["wall_s_per_image"]


def _agree(a: Sequence[int], b: Sequence[int]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(1, len(a))


def summarize_generate(
    records: list[dict[str, Any]], methods: Sequence[tuple[str, str]], images: Sequence[int]
) -> dict[str, Any]:
    by = {(r["image"], r["method"]): r for r in records}
    out: dict[str, Any] = {"methods": [], "complete": True}
    for key, label in methods:
        recs = [by[(i, key)] for i in images if (i, key) in by]
        row = {"method": label, "key": key, "n": len(recs), "complete": len(recs) == len(images), **_cost(recs)}
        out["complete"] &= row["complete"]
        out["methods"].append(row)
    _speedups(out["methods"])
    return out


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def paper_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown ``| Dataset | Method | Acc@1 ↑ | FID ↓ |`` (the layout of the paper's Tables 2 and 4),
    with the 95% interval, the number of images and the FID feature space as extra columns."""
    lines = [
        "| Dataset | Method | Acc@1 ↑ (%) | 95% CI | FID ↓ | n (acc / FID) | FID features |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = r.get("ci95")
        ci_s = "–" if r.get("acc") is None or not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"
        n = f"{r.get('n_acc', '–')} / {r.get('n_fid', '–')}"
        lines.append(
            f"| {r['dataset']} | {r['method']} | {_fmt(r.get('acc'))} | {ci_s} | {_fmt(r.get('fid'))} | {n} | "
            f"{r.get('fid_features') or '–'} |"
        )
    return "\n".join(lines)


def cost_table(methods: Sequence[dict[str, Any]]) -> str:
    """Cost per image (and, when present, agreement with the baseline or the samples' conditional accuracy)."""
    extra = [("n_evals_per_image", "(class, t) evals / image")]
    extra += [("agree_with_baseline", "agree w/ baseline (%)"), ("cond_acc", "cond. acc (%)")]
    extra = [(k, t) for k, t in extra if any(m.get(k) is not None for m in methods)]
    head = ["Method", "denoiser calls / image", "wall s / image", "denoiser s / image", "speed-up vs baseline"]
    lines = ["| " + " | ".join(head + [t for _, t in extra]) + " |", "|---" * (len(head) + len(extra)) + "|"]
    for m in methods:
        cells = [
            m["method"],
            _fmt(m.get("n_calls_per_image"), 1),
            _fmt(m.get("wall_s_per_image"), 3),
            _fmt(m.get("denoiser_s_per_image"), 3),
            _fmt(m.get("speedup_vs_baseline")),
        ] + [_fmt(m.get(k), 1) for k, _ in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement_table(agreement: dict[str, dict[str, float]]) -> str:
    names = list(agreement)
    if not names:
        return ""
    lines = ["| agreement (%) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {a} | " + " | ".join(f"{agreement[a][b]:.1f}" for b in names) + " |" for a in names]
    return "\n".join(lines)

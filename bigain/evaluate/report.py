"""Every table of both evaluations: merge per-image records into the run's result (accuracy with
Wilson 95% intervals, agreement between methods, cost per image, FID) and the Markdown table laid
out like the paper's Tables 2/4 (``python -m bigain.evaluate classify|generate|report``); the
Markdown report of the digits replication (:func:`digits_markdown`, ``python -m bigain.evaluate
digits``); and, for both, the provenance lines of the runs behind a table (:func:`runs_block`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bigain import provenance
from bigain.evaluate.stats import wilson


def runs_block(runs: Sequence[dict[str, Any]], several: str) -> list[str]:
    """Markdown lines on the runs behind a table (provenance records, full or compact): one run →
    its ``Command`` / ``Device`` / ``Commit`` lines; several → ``several`` (``{n}`` = their number)
    and a numbered list, ``[i]`` being what a *run* column of the table shows."""
    if not runs:
        return []
    if len(runs) == 1:
        return ["", *provenance.markdown_lines(runs[0])]
    lines = ["", several.format(n=len(runs)), ""]
    return lines + [f"* [{i}] {provenance.markdown_inline(run)}" for i, run in enumerate(runs, 1)]


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


# ---- the replication on the embedded models (python -m bigain.evaluate replication|digits) ----------


def digits_markdown(res: dict[str, Any]) -> str:
    """The replication's report (``assets/eval/<model>.md``) from its JSON: classification with
    Wilson intervals and McNemar tests, the sensitivity section, generated samples; each part with
    the runs (command, device, commit) its rows come from. Results that record their world (every
    run since worlds exist) also get the world, its test split and the protocol up front, and the
    answers of the paired tests to the paper's two claims (:func:`verdict_lines`); older digits
    results render exactly as they did."""
    c, g = res.get("classification"), res.get("generation")
    world = res.get("world")
    title = "Digits" if world is None else world["name"].capitalize()
    lines = [f"# {title} replication: {res['model']}", ""]
    if world is not None:
        lines += _world_lines(world, c, g)
    if "logistic_regression_acc" in res:
        lines += [f"Logistic regression on raw 8×8 pixels (test split): {res['logistic_regression_acc']:.1f}%", ""]
    if res.get("reference_accuracy"):
        accs = ", ".join(f"{k.replace('_', ' ')} {v:.1f}%" for k, v in res["reference_accuracy"].items())
        name = world["reference"] if world else "reference classifier"
        lines += [f"Reference classifier ({name}), its own held-out accuracy: {accs}", ""]
    if world is not None and (c or g):
        lines += verdict_lines(c, g)
    if c:
        n_t = c["protocol"]
        runs = _runs(c)
        lines += [
            f"## Diffusion-classifier top-1 on the test split ({_images_text(c, world)}; protocol {n_t})",
            *_part_runs(c),
            "",
            "| method | top-1 % | Wilson 95% | Δ vs baseline | evals/image | denoiser s/image |" + _run_head(runs),
            "|---|---|---|---|---|---|" + "---|" * (len(runs) > 1),
        ]
        base = c["methods"].get("baseline", {}).get("acc")
        for r in c["methods"].values():
            d = "" if base is None else f"{r['acc'] - base:+.1f}"
            lines.append(
                f"| {r['method']} | {r['acc']:.1f} | {r['ci95'][0]:.1f}–{r['ci95'][1]:.1f} | {d} | "
                f"{r['evals_per_image']:.0f} | {r['denoiser_s_per_image']:.3f} |" + _run_cell(r, runs)
            )
        lines += [
            "",
            "Exact McNemar tests (paired on the same images):",
            "",
            "| pair | only first right | only second right | p |" + (" same run |" if len(runs) > 1 else ""),
        ]
        lines += ["|---|---|---|---|" + "---|" * (len(runs) > 1)]
        for pair, t in c["paired"].items():
            lines.append(f"| {pair} | {t['a_only']} | {t['b_only']} | {t['p']:.3g} |" + _same_run_cell(t, runs))
        lines += _superseded_md(c, runs, "classification")
        lines += _ablations_md(c, g)
    if res.get("sensitivity"):
        lines += _sensitivity_md(res["sensitivity"], c)
    if g:
        ref = g["reference"]
        runs = _runs(g)
        lines += [
            "",
            f"## Generated samples ({g['per_class']} per class, DDIM {g['steps']} steps, guidance {g['guidance']})",
            *_part_runs(g),
            "",
            f"Reference classifier: {ref['model']}, test accuracy {ref['test_acc']:.1f}%; "
            f"train-vs-test FID_ref {ref['fid_ref_train_vs_test']:.2f} (a floor for real data).",
            "",
            "| method | recognised % | Wilson 95% | FID_ref | KID_ref | MSE vs baseline | denoiser s/call |"
            + _run_head(runs),
            "|---|---|---|---|---|---|---|" + "---|" * (len(runs) > 1),
        ]
        for r in g["methods"].values():
            mse = f"{r['mse_vs_baseline']:.4f}" if "mse_vs_baseline" in r else "—"
            lines.append(
                f"| {r['method']} | {r['cond_acc']:.1f} | {r['ci95'][0]:.1f}–{r['ci95'][1]:.1f} | {r['fid_ref']:.2f} | "
                f"{r['kid_ref']:.4f} | {mse} | {r['denoiser_s_per_call']:.4f} |" + _run_cell(r, runs)
            )
        if g.get("paired"):
            lines += [
                "",
                "Paired on the same noise: exact McNemar tests on which samples the reference classifier recognises,",
                "and the mean squared difference between the two methods' samples (rows of one run only):",
                "",
                "| pair | only first recognised | only second recognised | p | MSE between samples |"
                + (" same run |" if len(runs) > 1 else ""),
                "|---|---|---|---|---|" + "---|" * (len(runs) > 1),
            ]
            for pair, t in g["paired"].items():
                mse = f"{t['mse']:.4f}" if "mse" in t else "—"
                lines.append(
                    f"| {pair} | {t['a_only']} | {t['b_only']} | {t['p']:.3g} | {mse} |" + _same_run_cell(t, runs)
                )
        lines += _superseded_md(g, runs, "generation")
    return "\n".join(lines) + "\n"


def _images_text(c: dict[str, Any], world: dict[str, Any] | None) -> str:
    n = len(c["images"])
    if world is None:
        return f"{n} images"
    total = world["test_split"]["n"]
    counts = {}
    for label in c["labels"]:
        counts[label] = counts.get(label, 0) + 1
    lo, hi = min(counts.values()), max(counts.values())
    per = f"{lo} per class" if lo == hi else f"{lo}–{hi} per class"
    return f"{n} images" if n == total else f"{n} of the {total} images, {per}"


def _world_lines(world: dict[str, Any], c: dict[str, Any] | None, g: dict[str, Any] | None) -> list[str]:
    classes = world["classes"]
    names = f"{classes[0]}…{classes[-1]}" if len(classes) > 3 else ", ".join(classes)
    split = world["test_split"]
    lines = [
        f"World: **{world['name']}** ({world['description']}): {len(classes)} classes ({names}), "
        f"images {world['size']}×{world['size']} px.  ",
        f"Test split: {split['n']} images; {split['rule']}.  ",
    ]
    if c:
        lines.append(
            f"Classification protocol: {_protocol_text(c['protocol'], len(classes))}; "
            f"{_images_text(c, world)} of the test split, noise seeded by the image index.  "
        )
    if g:
        lines.append(
            f"Generation: {g['per_class']} sample{'s' if g['per_class'] != 1 else ''} per class (seed = class id: "
            "every method starts from the same "
            f"noise), DDIM {g['steps']} steps, guidance {g['guidance']}, judged by the reference classifier.  "
        )
    lines[-1] = lines[-1].removesuffix("  ")
    return [*lines, ""]


def _protocol_text(proto: dict[str, Any], n_classes: int) -> str:
    """The classifier's rounds in words, with the evaluations they make per image."""
    n_pool, samples, keep = proto.get("n_pool"), proto.get("n_samples") or [], proto.get("to_keep") or []
    parts, total, alive, done = [], 0, n_classes, 0
    for n, k in zip(samples, keep, strict=False):
        parts.append(f"{n} timesteps for {alive} classes, keep {k}" if done == 0 else
                     f"{n - done} more for {alive} (all {n}), keep {k}")  # fmt: skip
        total += alive * (n - done)
        done, alive = n, min(alive, k)
    return f"a pool of {n_pool} timesteps; " + "; ".join(parts) + f" ({total} denoiser evaluations per image)"


#: The paper's two claims and the rows that test them: (claim, method, reference).
CLAIMS: tuple[tuple[str, str, str], ...] = (
    *((f"L-GTM beats ToMe at r = {r}", f"lgtm-{r}", f"tome-{r}") for r in ("0.3", "0.5", "0.7")),
    ("IE-KVD (α = 0.9) beats ToDo at s = 2", "iekvd-2-a0.9", "todo-2"),
    ("IE-KVD (α 0.8 → 1.2) beats ToDo at s = 2", "iekvd-2-a0.8-1.2", "todo-2"),
)


def verdict_lines(c: dict[str, Any] | None, g: dict[str, Any] | None, alpha: float = 0.05) -> list[str]:
    """Plain answers, from the exact McNemar tests, to whether L-GTM beats ToMe and IE-KVD beats ToDo
    (classification on the same images; generation on which samples from the same noise the
    reference classifier recognises), either way."""
    lines: list[str] = []
    for kind, part, what in (("classification", c, "top-1"), ("generation", g, "recognised")):
        if not part:
            continue
        rows, paired = part["methods"], part.get("paired", {})
        for claim, a, b in CLAIMS:
            t = paired.get(f"{a} vs {b}")
            if t is None:
                continue
            va = rows[a]["acc" if kind == "classification" else "cond_acc"]
            vb = rows[b]["acc" if kind == "classification" else "cond_acc"]
            if t["p"] < alpha and t["a_only"] > t["b_only"]:
                answer = "**yes**"
            elif t["p"] < alpha:
                answer = f"**no, the reverse**: {rows[b]['method']} is significantly better"
            else:
                answer = "**no significant difference**"
            lines.append(
                f"* {kind}: {claim}? {answer} ({rows[a]['method']} {va:.1f}% vs {rows[b]['method']} {vb:.1f}% {what} "
                f"on {rows[a]['n']}; only the first right {t['a_only']}, only the second {t['b_only']}, "
                f"exact McNemar p = {t['p']:.3g})"
            )
    if not lines:
        return []
    return ["## The paper's claims, at this scale", "",
            f"From the paired tests below (p < {alpha} counts as a difference; an exact McNemar test needs at least",
            "6 discordant images, all one way, to get there):", "", *lines, ""]  # fmt: skip


def _runs(part: dict[str, Any]) -> list[dict[str, Any]]:
    """The distinct runs (provenance summaries) behind a part's rows: earlier ones in order of
    appearance, then the part's own (latest) run."""
    runs: list[dict[str, Any]] = []
    rows = [*part["methods"].values(), *[r for v in part.get("superseded", {}).values() for r in v]]
    for r in rows:
        run = r.get("run") or part.get("run")
        if run and run not in runs:
            runs.append(run)
    if part.get("run") in runs:
        runs.remove(part["run"])
        runs.append(part["run"])
    return runs or ([part["run"]] if part.get("run") else [])


def _part_runs(part: dict[str, Any]) -> list[str]:
    """Command and device (and commit) of the part, or of each run its rows come from (numbered as the run column)."""
    runs = _runs(part) if "methods" in part else ([part["run"]] if part.get("run") else [])
    return runs_block(runs, "Rows come from {n} runs (column *run*):")


def _run_head(runs: list[dict[str, Any]]) -> str:
    return " run |" if len(runs) > 1 else ""


def _run_cell(row: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    if len(runs) <= 1:
        return ""
    run = row.get("run")
    return f" [{runs.index(run) + 1}] |" if run in runs else " ? |"


def _same_run_cell(t: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    if len(runs) <= 1:
        return ""
    return {True: " yes |", False: " no |"}.get(t.get("same_run"), " ? |")


def _superseded_md(part: dict[str, Any], runs: list[dict[str, Any]], kind: str) -> list[str]:
    old = part.get("superseded") or {}
    if not old:
        return []
    what = "top-1 %" if kind == "classification" else "recognised %"
    lines = [
        "",
        "Earlier measurements of re-measured rows (replaced above, kept in the JSON under `superseded`):",
        "",
        f"| method | {what} | Wilson 95% |" + (" FID_ref |" if kind == "generation" else "") + " run |",
        "|---|---|---|" + "---|" * (kind == "generation") + "---|",
    ]
    order = list(part["methods"])  # a re-measured key is in the table: its rows follow the table's order
    for key in sorted(old, key=lambda k: (order.index(k) if k in order else len(order), k)):
        for r in old[key]:
            acc = r["acc"] if kind == "classification" else r["cond_acc"]
            fid = f" {r['fid_ref']:.2f} |" if kind == "generation" else ""
            run = r.get("run")
            ref = f"[{runs.index(run) + 1}]" if run in runs else "?"
            lines.append(f"| {r['method']} | {acc:.1f} | {r['ci95'][0]:.1f}–{r['ci95'][1]:.1f} |{fid} {ref} |")
    return lines


def _ablations_md(c: dict[str, Any], g: dict[str, Any] | None) -> list[str]:
    """The ablation rows of the classification table, laid out like the paper's tables: L-GTM's
    destination scorers (Table 8; rows ``lgtm-<r>-<scorer>`` next to ``lgtm-<r>``) and the
    frequency-selected keys/values (Table 12; ``freqkv-<s>-high|low`` next to ToDo and IE-KVD),
    with the exact McNemar p of the part's paired tests. Nothing when the table has no such rows."""
    rows, paired = c["methods"], c.get("paired", {})
    scorers: dict[str, dict[str, str]] = {}  # scorer → ratio → key
    for key, r in rows.items():
        prm = r.get("params") or {}
        scorer = prm.get("scorer", "laplacian")
        if prm.get("name") == "lgtm" and scorer != "laplacian" and key == f"lgtm-{prm['ratio']:g}-{scorer}":
            scorers.setdefault(scorer, {})[f"{prm['ratio']:g}"] = key
    kv = [k for k, r in rows.items() if (r.get("params") or {}).get("name") == "freqkv"]
    if not scorers and not kv:
        return []

    def top1(key: str) -> str:
        r = rows.get(key)
        return "— | —" if r is None else f"{r['acc']:.1f} | {r['ci95'][0]:.1f}–{r['ci95'][1]:.1f}"

    def p(a: str, b: str) -> str:
        t = paired.get(f"{a} vs {b}")
        return "—" if t is None else f"{t['p']:.3g} ({t['a_only']}/{t['b_only']})"

    lines = ["", "## Ablations (rows of the tables above, laid out like the paper's)"]
    if scorers:
        ratios = sorted({r for v in scorers.values() for r in v}, key=float)
        lines += [
            "",
            "L-GTM's destination scorer (the paper's Table 8): in every cell the lowest-scoring token becomes the",
            "destination. p: exact McNemar vs the Laplacian ℓ1 (L-GTM) at the same ratio, with (only this scorer",
            "right / only the Laplacian right).",
            "",
            "| scorer |" + "".join(f" r={r} top-1 % | Wilson 95% | p vs Laplacian |" for r in ratios),
            "|---|" + "---|---|---|" * len(ratios),
            "| laplacian (L-GTM) |" + "".join(f" {top1(f'lgtm-{r}')} | — |" for r in ratios),
        ]
        for scorer, keys in scorers.items():
            cells = "".join(
                f" {top1(keys[r])} | {p(keys[r], f'lgtm-{r}')} |" if r in keys else " — | — | — |" for r in ratios
            )
            lines.append(f"| {scorer} |{cells}")
    if kv:
        gen = (g or {}).get("methods", {})
        refs = [k for k in ("todo-2", "iekvd-2-a0.9") if k in rows]
        lines += [
            "",
            "Keys/values from one token per cell, chosen by its Laplacian ℓ1 score (the paper's Table 12: only the",
            "highest- or only the lowest-frequency token), next to ToDo (nearest-exact) and IE-KVD's blend. Top-1",
            "and p (exact McNemar, with only the row right / only the reference right): classification;",
            "recognised % and FID_ref: the generated samples (section below), where measured.",
            "",
            "| method | top-1 % | Wilson 95% | Δ vs baseline |" + "".join(f" p vs {rows[k]['method']} |" for k in refs)
            + " recognised % | FID_ref |",
            "|---|---|---|---|" + "---|" * len(refs) + "---|---|",
        ]  # fmt: skip
        base = rows.get("baseline", {}).get("acc")
        for key in [*refs, *kv]:
            r = rows[key]
            d = "" if base is None else f"{r['acc'] - base:+.1f}"
            ps = "".join(" — |" if key == k else f" {p(key, k)} |" for k in refs)
            gr = gen.get(key)
            gs = " — | — |" if gr is None else f" {gr['cond_acc']:.1f} | {gr['fid_ref']:.2f} |"
            lines.append(f"| {r['method']} | {top1(key)} | {d} |{ps}{gs}")
        pair = [k for k in paired if k.startswith("freqkv-") and k.split(" vs ")[1].startswith("freqkv-")]
        for k in pair:
            t = paired[k]
            lines += ["", f"{k}: only first right {t['a_only']}, only second right {t['b_only']}, p = {t['p']:.3g}."]
    return lines


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
        *_part_runs(sens),
        "",
        "ε moved: mean ‖ε_method − ε‖² / ‖ε − noise‖², next to swapping the class (`class`) and zeroing every",
        "self-attention output (`no self-attention`). Class contrast moved: mean ‖Δ(ε_true − ε_other)‖² /",
        "‖ε_true − ε_other‖², what the classifier ranks on; a change shared by every class leaves it alone.",
        "",
        "| change | ε moved | class contrast moved |",
        "|---|---|---|",
        *rows,
    ]

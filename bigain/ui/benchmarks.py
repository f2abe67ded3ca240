"""Benchmarks: a short headline (best speed-up per setting against its ceiling, accuracy cost per
method), then the recorded tables and plots, folded."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from bigain import explain
from bigain.explain.bundled import benchmark_headline, benchmark_sections, digits_quality
from bigain.ui.common import ROOT

PAPER_LABELS = [
    "ToMe r=0.5",
    "L-GTM r=0.5",
    "ToMe r=0.7",
    "L-GTM r=0.7",
    "ToDo s=2",
    "IE-KVD s=2 α=0.9",
    "IE-KVD s=2 α=0",
]


def headline() -> str:
    """Markdown: the best speed-up of every speed benchmark setting and its ceiling, then what each
    method costs in classification accuracy on the digits models."""
    assets = ROOT / "assets"
    lines = ["## Headline", ""]
    rows = benchmark_headline(assets)
    if rows:
        lines += [
            "**Speed.** The best measured speed-up over the baseline in each recorded setting, next to its "
            "*ceiling*: the speed-up if the compressed attention cost nothing (attention's share of the call).",
            "",
            "| model | setting | device | best | speed-up | ceiling |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            ceiling = "—" if r["ceiling"] is None else f"×{r['ceiling']:.2f}"
            lines.append(
                f"| {html.escape(str(r['model']))} | {html.escape(str(r['setting']))} | "
                f"{html.escape(str(r['device']))} | {html.escape(str(r['best']))} | ×{r['speedup']:.2f} | "
                f"{ceiling} |"
            )
    acc = {m: digits_quality(assets, m) for m in ("digits-dit", "digits-unet")}
    acc = {m: q for m, q in acc.items() if q}
    if acc:
        models = list(acc)
        lines += [
            "",
            "**Accuracy cost.** Diffusion-classifier top-1 on the digits test split, change against the baseline "
            "in points (and generation: share of samples a reference classifier recognises).",
            "",
            "| method | " + " | ".join(f"{m} top-1 Δ | {m} recognised %" for m in models) + " |",
            "|---|" + "---|---|" * len(models),
        ]
        for label in PAPER_LABELS:
            cells = []
            for m in models:
                r = acc[m].get(label, {})
                cells += [
                    f"{r['acc_delta']:+.1f}" if "acc_delta" in r else "—",
                    f"{r['recognised']:.1f}" if "recognised" in r else "—",
                ]
            lines.append(f"| {html.escape(label)} | " + " | ".join(cells) + " |")
    if len(lines) == 2:
        lines.append("No benchmark or evaluation results are recorded yet.")
    return "\n".join(lines)


def benchmarks() -> tuple[str, list]:
    """What the benchmark and evaluation commands wrote to assets/ (never typed by hand)."""
    return explain.benchmark_report(ROOT / "assets")


def build() -> dict[str, Any]:
    gr.Markdown(headline(), elem_id="bench-headline")
    _, plots = benchmarks()
    gr.Markdown(
        "Everything here was written by the repository's benchmark (`python -m bigain.bench …`) and evaluation "
        "(`python -m bigain eval digits`) commands, each with the command and machine that produced it.",
        elem_classes=["note"],
    )
    with gr.Accordion("Plots", open=True, elem_id="bench-plots"), gr.Column(elem_id="bench-gallery"):
        for i in range(0, len(plots), 2):  # each plot whole, two a row (a gallery would crop them into tiles)
            with gr.Row(equal_height=False):
                for path, caption in plots[i : i + 2]:
                    with gr.Column():
                        gr.Markdown(f"`{html.escape(caption)}`", elem_classes=["note"])  # above, not over the plot
                        gr.Image(path, label=caption, show_label=False, format="png", interactive=False)
    for title, body in benchmark_sections(ROOT / "assets"):
        with gr.Accordion(title, open=False):
            gr.Markdown(body)
    return {}

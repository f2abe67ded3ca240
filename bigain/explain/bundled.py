"""Bundled example images and the benchmark/evaluation result files the app shows."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from PIL import Image

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

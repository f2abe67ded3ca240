"""Bundled example images and the benchmark/evaluation result files the app shows."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from PIL import Image

# ---- bundled examples and benchmark files -------------------------------------------------


_PRIVATE: list[Path] = []


def examples_dir() -> Path:
    """Where example images are written: ``$BIGAIN_EXAMPLES`` when set, else a folder private to this
    process (``tempfile.mkdtemp``: a fresh, unpredictable name, mode 0700), made once. Never a fixed
    name in the shared temp dir, which another user could create first or point elsewhere with a symlink."""
    env = os.environ.get("BIGAIN_EXAMPLES")
    if env:
        return Path(env)
    if not _PRIVATE:
        _PRIVATE.append(Path(tempfile.mkdtemp(prefix="bigain-examples-")))
    return _PRIVATE[0]


def digit_examples(per_class: int = 1) -> list[list[str]]:
    """Test-split digits (never seen in training), ``per_class`` per digit, saved as 16×16 PNGs
    exactly as the embedded models see them. Returns [[path], …] for ``gr.Examples``."""
    return world_examples("digits", per_class)


def world_examples(name: str, per_class: int = 1) -> list[list[str]]:
    """Images of a world's test split (:mod:`bigain.worlds`; glyphs: letters of the held-out fonts, digits:
    the held-out digits), the first ``per_class`` of every class in class order, saved as PNGs at the
    world's size exactly as the embedded models see them (``<world>-<class>-test<k>.png``; digits keep
    their old name ``digit<c>_test<k>.png``). Returns [[path], …] for ``gr.Examples``."""
    from bigain.worlds import world

    w = world(name)
    out = examples_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths: list[list[str]] = []
    want = [(c, k) for c in range(w.num_classes) for k in range(per_class)]
    names = {(c, k): out / (f"digit{c}_test{k}.png" if name == "digits" else f"{name}-{w.classes[c]}-test{k}.png")
             for c, k in want}  # fmt: skip
    if any(p.is_symlink() or not p.is_file() for p in names.values()):  # render the split only when needed
        images, labels = w.load("test")
        for c in range(w.num_classes):
            for k, i in enumerate((labels == c).nonzero().flatten()[:per_class].tolist()):
                path = names[(c, k)]
                path.unlink(missing_ok=True)
                pixels = ((images[i, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels, mode="L").save(path)
    for c, k in want:
        if names[(c, k)].is_file():
            paths.append([str(names[(c, k)])])
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


# ---- what the app shows next to its own measurements --------------------------------------------


def digits_quality(assets: Path, model: str) -> dict[str, dict[str, float]]:
    """The digits evaluation of ``model`` (``assets/eval/<model>.json``) by method label: classification
    top-1 % (``acc``, ``acc_delta`` vs the baseline) and generation recognised % and FID_ref (``recognised``,
    ``fid``), where measured. Empty when the model has no evaluation file."""
    path = Path(assets) / "eval" / f"{model}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    out: dict[str, dict[str, float]] = {}
    cls = (data.get("classification") or {}).get("methods") or {}
    base = (cls.get("baseline") or {}).get("acc")
    for row in cls.values():
        if isinstance(row, dict) and "method" in row and "acc" in row:
            entry = out.setdefault(str(row["method"]), {})
            entry["acc"] = float(row["acc"])
            if base is not None:
                entry["acc_delta"] = float(row["acc"]) - float(base)
            entry["n_cls"] = float(row.get("n", 0))
    gen = (data.get("generation") or {}).get("methods") or {}
    for row in gen.values():
        if isinstance(row, dict) and "method" in row:
            entry = out.setdefault(str(row["method"]), {})
            for src, dst in (("cond_acc", "recognised"), ("fid_ref", "fid")):
                if row.get(src) is not None:
                    entry[dst] = float(row[src])
    return out


def benchmark_headline(assets: Path) -> list[dict[str, object]]:
    """One row per speed benchmark setting (``assets/bench/speed-*.json``): the model, the setting,
    the best measured speed-up, the method that reached it and the attention ceiling of that setting
    (the speed-up if compressed attention cost nothing)."""
    rows: list[dict[str, object]] = []
    for path in sorted((Path(assets) / "bench").glob("*speed-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        for setting in data.get("settings") or []:
            results = [r for r in setting.get("results") or [] if r.get("method") != "baseline" and r.get("speedup")]
            if not results:
                continue
            best = max(results, key=lambda r: float(r["speedup"]))
            what = ", ".join(f"{k} {setting[k]}" for k in ("res", "batch", "mode") if setting.get(k) is not None)
            rows.append(
                {
                    "file": path.stem,
                    "model": data.get("model", "?"),
                    "device": data.get("device_name") or data.get("device", "?"),
                    "setting": what,
                    "best": best.get("label", best.get("method")),
                    "speedup": float(best["speedup"]),
                    "ceiling": None if best.get("ceiling") is None else float(best["ceiling"]),
                }
            )
    return rows


#: scikit-image's bundled photos the app uses, with their licences (see docs/app.md)
PHOTOS = {
    "astronaut": "Eileen Collins, NASA: public domain",
    "coffee": "Rachel Michetti: CC0",
    "chelsea": "Chelsea the cat, Stefan van der Walt: CC0",
    "rocket": "DSCOVR on Falcon 9, SpaceX: public domain",
}


def photo_examples(side: int = 256) -> list[list[str]]:
    """scikit-image's bundled photos (:data:`PHOTOS`), centre-cropped to squares of ``side`` pixels and
    saved as PNGs in :func:`examples_dir`; [[path], …] for ``gr.Examples``. Empty without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return []
    out = examples_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTOS:
        path = out / f"photo_{name}_{side}.png"
        if path.is_symlink() or not path.is_file():
            path.unlink(missing_ok=True)
            img = Image.fromarray(getattr(data, name)())
            s = min(img.size)
            left, top = (img.width - s) // 2, (img.height - s) // 2
            img.crop((left, top, left + s, top + s)).resize((side, side), Image.Resampling.LANCZOS).save(path)
        paths.append([str(path)])
    return paths


def benchmark_sections(assets: Path) -> list[tuple[str, str]]:
    """(title, markdown) per table the benchmark / evaluation commands wrote (``assets/bench/*.md``,
    ``assets/eval/*.md``): the title is the file's first heading (or its name), the body the rest, with
    the recorded command when the table does not show it."""
    out = []
    for sub in BENCH_DIRS:
        for md in sorted((Path(assets) / sub).glob("*.md")):
            text = md.read_text(encoding="utf-8").strip()
            first, _, rest = text.partition("\n")
            title, body = (first.lstrip("#").strip(), rest.strip()) if first.startswith("#") else (md.stem, text)
            cmd = _command_of(md.with_suffix(".json"))
            if cmd and cmd not in text:
                body += f"\n\nReproduce: `{cmd}`"
            out.append((f"{sub}/{md.stem}: {title.strip('`*')}"[:160], body))
    return out

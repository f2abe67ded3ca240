"""The finished example every model tab opens with: computed once by a command, read at start-up.

    python -m bigain.ui.examples                 # the default model (glyphs-dit) → assets/examples/
    python -m bigain.ui.examples --rounds 3 --out assets/examples

For each of Compare generation, Compare classification and Look inside it runs the tab's first example
(the settings the page opens with) and writes ``<tab>.json`` (the request, the numbers, the timings, the
torch thread count, the device and the provenance record with the commit, :mod:`bigain.provenance`, and a
fingerprint of the weights it was made with) next to the images as PNGs (Look inside: its recorded maps in
``inside-maps.npz``, plain arrays). ``startup()`` of each tab only reads those files; when they are
missing, unreadable or were made for other weights, the tab says so in one note and the first click
computes. Nothing here imports gradio except through the ``bigain.ui`` package.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from bigain import threads
from bigain.explain.compare import ClassificationRow, GenerationRow, methods_from_settings
from bigain.explain.inside import Inside
from bigain.methods import Method, make_method, method_class
from bigain.record import AttnEvent, Recorder
from bigain.zoo import CARDS, assets_dir

VERSION = 1
TABS = ("generate", "classify", "inside")
COMMAND = "python -m bigain.ui.examples"
#: timing rounds of the written examples (more than a click's default: they are shown to every visitor)
WRITE_ROUNDS = 3


class Missing(Exception):
    """No usable precomputed example: ``note`` says why and what to do, for the tab to show."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


def folder() -> Path:
    """Where the examples live: ``examples/`` in the assets folder (``$BIGAIN_ASSETS`` or ``assets/``),
    next to the weights they were made with."""
    return assets_dir() / "examples"


def weights_id(model_name: str) -> str | None:
    """A fingerprint of an embedded model's weights (sha256 of ``model.safetensors``, 16 hex digits);
    None when they are not here or the model is not embedded."""
    card = CARDS.get(model_name)
    if card is None or card.source != "embedded":
        return None
    path = assets_dir() / card.name / "model.safetensors"
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


# ---- what each tab opens with ------------------------------------------------------------------


def generation_request(model_name: str) -> dict[str, Any]:
    """The Compare generation tab's first example: the page's default settings."""
    from bigain.ui import knobs
    from bigain.ui.common import default_class
    from bigain.ui.shared import SAMPLES

    card = CARDS[model_name]
    return {
        "condition": default_class(model_name),
        "methods": list(knobs.DEFAULT),
        "seed": 0,
        "steps": card.steps,
        "guidance": card.guidance,
        "samples": SAMPLES,
    }


def classification_request(model_name: str) -> dict[str, Any]:
    """The Compare classification tab's first example: the fourth test image of the model's world."""
    from bigain.ui import knobs

    card = CARDS[model_name]
    return {"world": card.world, "index": 3, "classes": None, "methods": list(knobs.CLASSIFY), "seed": 0}


def inside_request(model_name: str) -> dict[str, Any]:
    """The Look inside tab's first example: L-GTM on the default class."""
    from bigain.ui.common import default_class

    card = CARDS[model_name]
    return {"condition": default_class(model_name), "method": "lgtm", "seed": 0, "steps": card.steps}


def classification_image(model_name: str) -> str:
    """The path of the classification example's input (a PNG of the world's test split)."""
    from bigain.explain.bundled import world_examples

    req = classification_request(model_name)
    return world_examples(req["world"])[req["index"]][0]


# ---- writing ------------------------------------------------------------------------------------


def _method(m: Method) -> dict[str, Any]:
    """A method as JSON: its registry name and its constructor arguments (fixed fields left out)."""
    names = {p.name for p in type(m).parameters()}
    return {"name": m.name, "params": {k: v for k, v in m.params().items() if k in names}}


def _unmethod(d: dict[str, Any]) -> Method:
    names = {p.name for p in method_class(d["name"]).parameters()}
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in (d.get("params") or {}).items() if k in names}
    return make_method(d["name"], **params)


def _finite(x: Any) -> Any:
    """JSON-safe number (NaN and infinities become None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _meta(tab: str, model_name: str, device: Any, request: dict[str, Any], rounds: int | None) -> dict[str, Any]:
    from bigain.provenance import provenance

    prov = provenance(device=str(device), command=" ".join([COMMAND, *sys.argv[1:]]) if _as_main() else COMMAND)
    return {
        "version": VERSION,
        "tab": tab,
        "model": model_name,
        "weights": weights_id(model_name),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "request": request,
        "provenance": prov,
    }


def _as_main() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == __name__


def _save_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_generation(out: Path, model_name: str, rounds: int = WRITE_ROUNDS, progress: Any = None) -> Path:
    from bigain import explain
    from bigain.models import load_model

    m = load_model(model_name)
    req = generation_request(model_name)
    rows = explain.compare_generation(
        m,
        [req["condition"]] * req["samples"],
        methods_from_settings(req["methods"]),
        seed=req["seed"],
        steps=req["steps"],
        guidance=req["guidance"],
        rounds=rounds,
        progress=progress,
    )
    data = _meta("generate", model_name, m.device, req, rounds)
    data["rows"] = []
    for i, r in enumerate(rows):
        files = []
        for k, im in enumerate(r.result.images):
            name = f"generate-{i}-{k}.png"
            im.save(out / name)
            files.append(name)
        res = r.result
        data["rows"].append(
            {
                "label": r.label,
                "method": _method(r.method),
                "wall_s": r.wall_s,
                "per_call_s": r.per_call_s,
                "speedup": r.speedup,
                "call_speedup": r.call_speedup,
                "flops": r.flops,
                "flops_ratio": r.flops_ratio,
                "mean_abs_diff": _finite(r.mean_abs_diff),
                "images": files,
                "result": {
                    "condition": [str(c) for c in res.condition],
                    "seed": res.seed,
                    "sampler": res.sampler,
                    "steps": res.steps,
                    "guidance": res.guidance,
                    "n_calls": res.n_calls,
                },
            }
        )
    path = out / "generate.json"
    _save_json(path, data)
    return path


def write_classification(out: Path, model_name: str, rounds: int = WRITE_ROUNDS, progress: Any = None) -> Path:
    from bigain import explain
    from bigain.images import read_image
    from bigain.models import load_model

    m = load_model(model_name)
    req = classification_request(model_name)
    source = classification_image(model_name)
    Image.open(source).save(out / "classify-input.png")
    rows = explain.compare_classification(
        m,
        read_image(source),
        methods_from_settings(req["methods"]),
        classes=req["classes"],
        seed=req["seed"],
        rounds=rounds,
        progress=progress,
    )
    data = _meta("classify", model_name, m.device, req, rounds)
    data["input"] = "classify-input.png"
    data["rows"] = [
        {
            "label": r.label,
            "method": _method(r.method),
            "wall_s": r.wall_s,
            "speedup": r.speedup,
            "result": {
                "classes": [str(c) for c in r.result.classes],
                "prediction": str(r.result.prediction),
                "ranking": [{"cls": str(k.cls), "score": float(k.score)} for k in r.result.ranking],
                "timesteps": [int(t) for t in r.result.timesteps],
                "errors": [[_finite(v) for v in row] for row in np.asarray(r.result.errors, dtype=float)],
                "n_evals": int(r.result.n_evals),
                "n_calls": int(r.result.n_calls),
            },
        }
        for r in rows
    ]
    path = out / "classify.json"
    _save_json(path, data)
    return path


_ARRAYS = ("scores", "groups", "dst")


def write_inside(out: Path, model_name: str, progress: Any = None) -> Path:
    from bigain import explain
    from bigain.models import load_model

    m = load_model(model_name)
    req = inside_request(model_name)
    inside = explain.record_generation(
        m,
        req["condition"],
        methods_from_settings([req["method"]])[0],
        seed=req["seed"],
        steps=req["steps"],
        progress=progress,
    )
    inside.image.save(out / "inside-image.png")
    arrays: dict[str, np.ndarray] = {}
    events = []
    for i, e in enumerate(inside.recorder.events):
        meta = {f.name: getattr(e, f.name) for f in dataclasses.fields(AttnEvent) if f.name not in _ARRAYS}
        meta["t"] = _finite(meta["t"])
        meta["alpha"] = _finite(meta["alpha"])
        for a in _ARRAYS:
            value = getattr(e, a)
            if value is not None:  # positions as int32, scores as float16 (for pictures; read back as int64, float32)
                v = value.cpu().numpy()
                arrays[f"{i}.{a}"] = v.astype(np.int32 if np.issubdtype(v.dtype, np.integer) else np.float16)
        events.append(meta)
    np.savez_compressed(out / "inside-maps.npz", **arrays)
    data = _meta("inside", model_name, m.device, req, None)
    data |= {
        "image": "inside-image.png",
        "maps": "inside-maps.npz",
        "method": _method(inside.method),
        "steps": inside.steps,
        "blocks": inside.blocks,
        "calls": inside.recorder.calls,
        "events": events,
    }
    path = out / "inside.json"
    _save_json(path, data)
    return path


def write_examples(
    out: Path | str | None = None,
    model_name: str | None = None,
    tabs: Sequence[str] = TABS,
    rounds: int = WRITE_ROUNDS,
    quiet: bool = True,
) -> list[Path]:
    """Compute every tab's first example on ``model_name`` (default: the app's default model) and write
    them to ``out`` (default :func:`folder`). Sets torch's threads as the app does
    (:func:`bigain.threads.configure`) so the recorded timings are what a visitor would see."""
    from bigain.ui.common import DEFAULT_MODEL

    model_name = model_name or DEFAULT_MODEL
    out = Path(out) if out is not None else folder()
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(tabs) - set(TABS))
    if unknown:
        raise ValueError(f"tabs must be among {list(TABS)}, got {unknown}")
    threads.configure()
    writers = {
        "generate": lambda: write_generation(out, model_name, rounds),
        "classify": lambda: write_classification(out, model_name, rounds),
        "inside": lambda: write_inside(out, model_name),
    }
    paths = []
    for tab in tabs:
        t = time.perf_counter()
        paths.append(writers[tab]())
        if not quiet:
            print(f"{tab}: {time.perf_counter() - t:.1f} s → {paths[-1]}", flush=True)
    return paths


# ---- reading ------------------------------------------------------------------------------------


def how_to_write(model_name: str) -> str:
    from bigain.ui.common import DEFAULT_MODEL

    extra = "" if model_name == DEFAULT_MODEL else f" --model {model_name}"
    return f"`{COMMAND}{extra}`"


def _read(tab: str, model_name: str, base: Path | None = None) -> tuple[dict[str, Any], Path]:
    """The JSON of one tab's example, checked against the weights here; :class:`Missing` otherwise."""
    base = folder() if base is None else base
    path = base / f"{tab}.json"
    write = how_to_write(model_name)
    here = weights_id(model_name)
    if here is None:
        raise Missing(f"{model_name} has no trained weights here, so there is no example to show.")
    if not path.is_file():
        raise Missing(f"No precomputed example in `{path}`: it is written by {write}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise Missing(
            f"The precomputed example `{path}` could not be read ({type(e).__name__}); rewrite it with {write}."
        ) from e
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("tab") != tab:
        raise Missing(f"The precomputed example `{path}` is of another format; rewrite it with {write}.")
    if data.get("model") != model_name:
        raise Missing(
            f"The precomputed example `{path}` is for {data.get('model')}, not {model_name}; rewrite it with {write}."
        )
    if data.get("weights") != here:
        raise Missing(
            f"The precomputed example `{path}` was made with other weights of {model_name} than the ones here; "
            f"rewrite it with {write}."
        )
    return data, base


def _incomplete(what: str, model_name: str, e: Exception) -> Missing:
    return Missing(
        f"The precomputed {what} example is incomplete ({type(e).__name__}: {e}); "
        f"rewrite it with {how_to_write(model_name)}."
    )


def measured(data: dict[str, Any]) -> dict[str, Any]:
    """How the example's timings were measured: device, threads, commit, time and the command."""
    prov = data.get("provenance") or {}
    return {
        "device": data.get("device", "cpu"),
        "threads": data.get("threads"),
        "precomputed": True,
        "commit": prov.get("git_commit"),
        "timestamp": prov.get("timestamp"),
        "command": prov.get("command") or COMMAND,
        "rounds": data.get("rounds"),
    }


def _image(base: Path, name: str) -> Image.Image:
    with Image.open(base / name) as im:
        return im.convert("RGB")


def read_generation(model_name: str, base: Path | None = None) -> tuple[list[GenerationRow], dict[str, Any]]:
    """The rows of the precomputed generation example (images from the PNGs) and how they were timed."""
    data, base = _read("generate", model_name, base)
    try:
        rows = []
        for r in data["rows"]:
            res = r["result"]
            result = SimpleNamespace(images=[_image(base, f) for f in r["images"]], **res)
            rows.append(
                GenerationRow(
                    label=r["label"],
                    method=_unmethod(r["method"]),
                    result=result,
                    wall_s=float(r["wall_s"]),
                    per_call_s=float(r["per_call_s"]),
                    speedup=float(r["speedup"]),
                    call_speedup=float(r["call_speedup"]),
                    flops=r.get("flops"),
                    flops_ratio=r.get("flops_ratio"),
                    mean_abs_diff=float("nan") if r.get("mean_abs_diff") is None else float(r["mean_abs_diff"]),
                )
            )
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise _incomplete("generation", model_name, e) from e
    return rows, measured(data)


def read_classification(
    model_name: str, base: Path | None = None
) -> tuple[list[ClassificationRow], str, dict[str, Any]]:
    """The rows of the precomputed classification example, the path of its input image, how it was timed."""
    data, base = _read("classify", model_name, base)
    try:
        rows = []
        for r in data["rows"]:
            res = r["result"]
            result = SimpleNamespace(
                classes=res["classes"],
                prediction=res["prediction"],
                ranking=[SimpleNamespace(**k) for k in res["ranking"]],
                timesteps=res["timesteps"],
                errors=np.array([[np.nan if v is None else v for v in row] for row in res["errors"]], dtype=float),
                n_evals=res["n_evals"],
                n_calls=res["n_calls"],
            )
            method = _unmethod(r["method"])
            rows.append(ClassificationRow(r["label"], method, result, float(r["wall_s"]), float(r["speedup"])))
        image = base / data["input"]
        if not image.is_file():
            raise FileNotFoundError(image)
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise _incomplete("classification", model_name, e) from e
    return rows, str(image), measured(data)


def read_inside(model_name: str, base: Path | None = None) -> tuple[Inside, dict[str, Any]]:
    """The precomputed recording of the Look inside example (maps from the npz, no pickles)."""
    data, base = _read("inside", model_name, base)
    try:
        with np.load(base / data["maps"], allow_pickle=False) as npz:
            arrays = {k: torch.from_numpy(npz[k]) for k in npz.files}
        arrays = {k: v.float() if v.is_floating_point() else v.long() for k, v in arrays.items()}
        events = [
            AttnEvent(**meta, **{a: arrays.get(f"{i}.{a}") for a in _ARRAYS}) for i, meta in enumerate(data["events"])
        ]
        rec = Recorder(maps=True, events=events, calls=int(data["calls"]))
        image, method = _image(base, data["image"]), _unmethod(data["method"])
        inside = Inside(rec, image, method, list(data["steps"]), list(data["blocks"]))
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise _incomplete("Look inside", model_name, e) from e
    return inside, measured(data)


# ---- the command --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from bigain.ui.common import DEFAULT_MODEL

    p = argparse.ArgumentParser(
        prog=COMMAND, description="Compute the example every app tab opens with and write it to assets/examples/."
    )
    p.add_argument("--model", default=DEFAULT_MODEL, choices=[n for n, c in CARDS.items() if c.source == "embedded"],
                   help=f"the embedded model the tabs open with (default: {DEFAULT_MODEL})")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="folder (default: examples/ in $BIGAIN_ASSETS or assets/)")
    p.add_argument("--tabs", nargs="+", default=list(TABS), choices=TABS, help="which tabs (default: all)")
    p.add_argument("--rounds", type=int, default=WRITE_ROUNDS, help=f"timing rounds (default {WRITE_ROUNDS})")
    a = p.parse_args(argv)
    if a.model != DEFAULT_MODEL:
        print(f"note: the app opens with {DEFAULT_MODEL}; examples for {a.model} are only read if that changes")
    t = time.perf_counter()
    paths = write_examples(a.out, a.model, a.tabs, a.rounds, quiet=False)
    n = torch.get_num_threads()
    print(f"{len(paths)} example(s) for {a.model} in {time.perf_counter() - t:.1f} s, {n} threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

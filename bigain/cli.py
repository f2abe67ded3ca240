"""Command line: ``python -m bigain {generate,classify,inside,inside-figure6,train,eval,bench} ...``
(``--help`` on each)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bigain import threads
from bigain.errors import BadInput, BigainError, check_int
from bigain.zoo import CARDS


def _int_arg(text: str) -> int:
    """argparse type: an integer, refusing 1 MB digit strings before Python's int() does."""
    if len(text) > 20:
        raise argparse.ArgumentTypeError(f"not an integer of at most 20 digits: {text[:20]}…")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None


def _float_arg(text: str) -> float:
    """argparse type: a finite number (nan and inf are refused here, not silently used)."""
    if len(text) > 40:
        raise argparse.ArgumentTypeError(f"not a number: {text[:20]}…")
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return v


def _out_path(path: Path, what: str = "--out") -> Path:
    """An output image file: not a folder, a suffix PIL can write."""
    from PIL import Image

    if path.is_dir():
        raise BadInput(f"{what} {path} is a folder; give a file name such as {path / 'image.png'}")
    if path.suffix.lower() not in Image.registered_extensions():
        raise BadInput(f"{what} {path} has no image suffix PIL can write (.png, .jpg, .webp, …)")
    return path


def method_help() -> str:
    """The --method help, written from the method registry (so a new method appears without editing this)."""
    from bigain.methods import describe_methods

    return (
        "compression method as name or name:key=value;key=value, e.g. 'lgtm:ratio=0.7', "
        f"'iekvd:alpha=0.8;alpha_end=1.2', 'sito:ratio=0.5' (default: baseline). Methods: {describe_methods()}"
    )


class _Bar:
    """A tqdm bar driven by the pipelines' progress(fraction, desc) callback, drawn at the first
    progress report: input refused before any work prints its message and no empty bar."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, fraction: float, desc: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            fmt = "{l_bar}{bar}| {elapsed}<{remaining}"
            self.bar = tqdm(total=1000, disable=not self.enabled, bar_format=fmt)
        self.bar.set_description(desc, refresh=False)
        self.bar.update(int(fraction * 1000) - self.bar.n)

    def reset(self) -> None:
        if self.bar is not None:
            self.bar.reset()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="glyphs-dit",
        help=f"card name ({', '.join(CARDS)}) or a local diffusers folder (default: glyphs-dit)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: fp16 on GPU for hub models)")
    p.add_argument("--method", default=None, help=method_help().replace("%", "%%"))
    p.add_argument("--seed", type=_int_arg, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _mode_arg(p: argparse.ArgumentParser) -> None:
    from bigain.execution import MODES

    p.add_argument(
        "--mode", choices=MODES, default="eager",
        help="how the denoiser runs: eager (default), compile (torch.compile, fused kernels; the first call "
        "compiles) or cudagraph (one captured CUDA graph per method and kind of step, replayed; GPU only)",
    )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bigain", description="BiGain: token compression for diffusion models")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="sample images with a compression method")
    _model_args(g)
    g.add_argument("--condition", "-c", required=True, help="class id or name (digits: 0-9), or a prompt (SD)")
    g.add_argument("--steps", type=_int_arg, default=None, help="sampling steps (default: the model card's)")
    g.add_argument("--guidance", type=_float_arg, default=None, help="classifier-free guidance scale")
    g.add_argument("--num-images", type=_int_arg, default=1)
    g.add_argument("--sampler", choices=["ddim", "euler", "dpm", "flow"], default=None, help="default: the card's")
    g.add_argument(
        "--upscale",
        type=_int_arg,
        default=None,
        help="nearest-neighbour upscaling of the saved image(s) (default: to at least 256 px; ×8 for glyphs)",
    )
    g.add_argument("--out", type=Path, default=Path("bigain.png"), help="output PNG (several: _0, _1, … appended)")
    _mode_arg(g)

    c = sub.add_parser("classify", help="classify image(s) with the diffusion classifier")
    _model_args(c)
    c.add_argument("images", nargs="+", help="image file(s)")
    c.add_argument("--classes", default=None, help="comma-separated candidate classes (SD: required)")
    c.add_argument("--prompt-template", default=None, help="SD prompt template with {} (default 'a photo of a {}.')")
    c.add_argument("--n-pool", type=_int_arg, default=None, help="timestep pool size (paper 20)")
    c.add_argument("--n-samples", default=None, help="timesteps per round, comma-separated (paper 5,20)")
    c.add_argument("--to-keep", default=None, help="classes kept after each round (paper 5,1)")
    c.add_argument("--batch-size", type=_int_arg, default=None)
    c.add_argument("--temperature", type=_float_arg, default=None, help="score temperature (relative, default 0.05)")
    c.add_argument("--top", type=_int_arg, default=5, help="ranking rows to print")
    c.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    _mode_arg(c)

    t = sub.add_parser("train", help="train an embedded model (python -m bigain.train)", add_help=False)
    t.add_argument("rest", nargs=argparse.REMAINDER)

    e = sub.add_parser(
        "eval",
        help="evaluations (python -m bigain.evaluate): digits (the replication), classify, generate, report",
        add_help=False,
    )
    e.add_argument("rest", nargs=argparse.REMAINDER)

    i = sub.add_parser("inside", help="picture of what a method did at one step and block (the app's Look inside)")
    _model_args(i)
    i.add_argument("--condition", "-c", required=True, help="class id or name, or a prompt (SD)")
    i.add_argument(
        "--step", type=_int_arg, default=None, help="denoising step, 1 = the noisiest (default: the middle one)"
    )
    i.add_argument("--block", default=None, help="block name (default: the first compressed block)")
    i.add_argument("--steps", type=_int_arg, default=None, help="sampling steps (default: the model card's)")
    i.add_argument("--out", type=Path, default=Path("inside.png"), help="output PNG")

    f = sub.add_parser("inside-figure6", help="the paper's Figure 6 (and Table 12) on the model's own tokens")
    _model_args(f)
    f.add_argument("--condition", "-c", default="3", help="class id or name (default: 3)")
    f.add_argument("--t", type=_int_arg, default=200, help="timestep the clean image is noised to (default 200)")
    f.add_argument("--ratio", type=_float_arg, default=0.75, help="ToMe / L-GTM merge ratio (default 0.75)")
    f.add_argument("--block", default=None, help="layer name (default: the first compressed layer)")
    f.add_argument("--image", default="test", help="'test' (a test image of the class), 'generated' or a file")
    f.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    f.add_argument("--out", type=Path, default=Path("figure6-inside.png"), help="output PNG")

    b = sub.add_parser("bench", help="benchmarks (python -m bigain.bench)", add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _inside(a: argparse.Namespace) -> int:
    """Record one generation and save the gate / merge / KV figures of one (step, block) side by side."""
    from PIL import Image

    from bigain import explain, viz
    from bigain.methods import parse_method
    from bigain.models import load_model

    out = _out_path(a.out)
    model = load_model(a.model, device=a.device, dtype=a.dtype)
    method = parse_method(a.method or "lgtm")
    if not method.compresses:
        raise BadInput(f"inside shows what a compression method did; {method.title} compresses nothing (try lgtm)")
    planned = check_int("--steps", model.card.steps if a.steps is None else a.steps, 1, 1000)
    wanted = (planned + 1) // 2 if a.step is None else a.step
    check_int("--step", wanted, 1, planned)  # before the recording, not after it
    inside = explain.record_generation(model, a.condition, method, seed=a.seed, steps=a.steps)
    step = check_int("--step", wanted, 1, len(inside.steps)) - 1
    if a.block is not None and a.block not in inside.blocks:
        raise BadInput(f"--block must be one of {', '.join(inside.blocks)}, got {a.block[:60]!r}")
    figs = [f for f in explain.inside_figures(inside, step, a.block, seed=a.seed)[:3] if f is not None]
    images = [viz.figure_to_image(f) for f in figs]
    sheet = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)), "white")
    x = 0
    for im in images:
        sheet.paste(im, (x, 0))
        x += im.width
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"{method.label()}, step {wanted} of {len(inside.steps)}, block {a.block or inside.blocks[0]} → {out}")
    return 0


def _inside_figure6(a: argparse.Namespace) -> int:
    """Figure 6 inside the model: the figure, the table on stdout, the numbers as JSON if asked."""
    from bigain import explain, viz
    from bigain.models import load_model

    out = _out_path(a.out)
    if a.method is not None:
        raise BadInput("inside-figure6 runs its own methods (ToMe, L-GTM, ToDo, IE-KVD, Freq-KV); drop --method")
    model = load_model(a.model, device=a.device, dtype=a.dtype)
    res = explain.figure6_inside(model, a.condition, seed=a.seed, t=a.t, ratio=a.ratio, block=a.block, image=a.image)
    out.parent.mkdir(parents=True, exist_ok=True)
    viz.figure_to_image(explain.figure6_inside_figure(res)).save(out)
    if a.json:
        a.json.write_text(json.dumps(res.to_json(), indent=1) + "\n")
    print(f"{res.model}, class {res.condition}, {res.source}, t = {res.t}, layer {res.block} → {out}")
    print(res.table())
    return 0


def _generate(a: argparse.Namespace) -> int:
    from PIL import Image

    from bigain.models import load_model
    from bigain.pipelines import generate

    _out_path(a.out)
    upscale = None if a.upscale is None else check_int("--upscale", a.upscale, 1, 64)
    model = load_model(a.model, device=a.device, dtype=a.dtype)
    cond: Any = a.condition
    bar = _Bar(not a.quiet)
    try:
        r = generate(
            model,
            cond,
            method=a.method,
            seed=a.seed,
            steps=a.steps,
            guidance=a.guidance,
            num_images=a.num_images,
            sampler=a.sampler,
            progress=bar,
            mode=a.mode,
        )
    finally:
        bar.close()
    paths = (
        [a.out]
        if len(r.images) == 1
        else [a.out.with_name(f"{a.out.stem}_{i}{a.out.suffix}") for i in range(len(r.images))]
    )
    k = upscale or max(1, -(-256 // max(r.images[0].size)))
    for img, path in zip(r.images, paths, strict=True):
        if k > 1:
            img = img.resize((img.width * k, img.height * k), Image.NEAREST)
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    side = f"{r.images[0].width * k}×{r.images[0].height * k} px"
    where = ", ".join(map(str, paths))
    print(f"{r.method.label()}: {_plural(len(r.images), 'image')} of {r.condition[0]!r} at {side} → {where}")
    print(
        f"{_plural(r.steps, 'step')}, guidance {r.guidance:g}, {_plural(r.n_calls, 'denoiser call')}, "
        f"{r.per_call_s * 1000:.1f} ms/call, wall {r.wall_s:.2f} s"
    )
    return 0


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(_int_arg(v.strip()) for v in text.split(",") if v.strip())
    except argparse.ArgumentTypeError as err:
        raise BadInput(f"{what} takes integers separated by commas: {err}") from None


def _classify(a: argparse.Namespace) -> int:
    from bigain.models import load_model
    from bigain.pipelines import classify
    from bigain.pipelines.classify import DEFAULT_TEMPERATURE

    top = check_int("--top", a.top, 1, 1000)  # before any work: -1 would silently drop a row
    model = load_model(a.model, device=a.device, dtype=a.dtype)
    proto = dict(model.card.protocol)
    for key, val in (
        ("n_pool", a.n_pool),
        ("n_samples", _ints(a.n_samples, "--n-samples")),
        ("to_keep", _ints(a.to_keep, "--to-keep")),
    ):
        if val is not None:
            proto[key] = val
    classes = None if a.classes is None else [c.strip() for c in a.classes.split(",")]
    out = []
    bar = _Bar(not a.quiet)
    try:
        for path in a.images:
            bar.reset()
            r = classify(
                model,
                path,
                classes=classes,
                method=a.method,
                seed=a.seed,
                protocol=proto,
                batch_size=a.batch_size,
                temperature=DEFAULT_TEMPERATURE if a.temperature is None else a.temperature,
                prompt_template=a.prompt_template,
                progress=bar,
                mode=a.mode,
            )
            out.append((path, r))
    finally:
        bar.close()
    for path, r in out:
        print(
            f"{path}: {r.prediction}  ({r.method.label()}, {_plural(r.n_evals, 'evaluation')} in "
            f"{_plural(r.n_calls, 'call')}, {r.wall_s:.2f} s)"
        )
        rows = r.ranking[:top]
        width = max((len(row.cls) for row in rows), default=0)
        for row in rows:
            print(
                f"  {row.cls:<{width}}  error {row.mean_error:.5f}  score {row.score:.3f}  "
                f"({_plural(row.n_timesteps, 'timestep')})"
            )
    if a.json:
        a.json.write_text(json.dumps([_result_json(p, r) for p, r in out], indent=1) + "\n")
    return 0


def _result_json(path: str, r: Any) -> dict[str, Any]:
    return {
        "image": str(path),
        "prediction": r.prediction,
        "method": r.method.label(),
        "ranking": [row.__dict__ for row in r.ranking],
        "timesteps": r.timesteps,
        "errors": [[None if e != e else e for e in row] for row in r.errors.tolist()],
        "n_evals": r.n_evals,
        "n_calls": r.n_calls,
        "wall_s": r.wall_s,
        "denoiser_s": r.denoiser_s,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from bigain import train

        train.main(argv[1:])
        return 0
    if argv[:1] == ["eval"]:  # the evaluations' own command line (python -m bigain.evaluate)
        from bigain.evaluate.__main__ import main as evaluate

        return evaluate(argv[1:], prog="python -m bigain eval")
    if argv[:1] == ["bench"]:
        import importlib

        bench: Callable[..., Any] = importlib.import_module("bigain.bench").main
        return int(bench(argv[1:]) or 0)
    a = _parser().parse_args(argv)
    try:
        threads.configure()  # the container's CPUs, not the host's cores (bigain.threads)
        if a.command == "generate":
            return _generate(a)
        if a.command == "classify":
            return _classify(a)
        if a.command == "inside":
            return _inside(a)
        if a.command == "inside-figure6":
            return _inside_figure6(a)
        raise AssertionError(a.command)  # train, eval and bench are dispatched above
    except (BigainError, ValueError, TypeError, OSError) as err:  # every input problem: one line, exit 2
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

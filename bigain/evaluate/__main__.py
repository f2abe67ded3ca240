"""``python -m bigain.evaluate {classify,generate,report,replication} …`` — the one command line of
the evaluations (``python -m bigain eval …`` is the same); classify/generate also under ``accelerate launch``.

Examples::

    python -m bigain.evaluate classify --model digits-dit --dataset digits --subset 100 \\
        --methods baseline tome:ratio=0.5 lgtm:ratio=0.5 todo iekvd:alpha=0.9 --out runs/digits-cls
    accelerate launch --num_processes 8 -m bigain.evaluate classify --model sd2-base \\
        --dataset pets --data-root /data/pets --methods baseline tome:ratio=0.7 lgtm:ratio=0.7 --out runs/pets
    python -m bigain.evaluate report runs/pets-cls runs/pets-gen
    python -m bigain.evaluate replication --models glyphs-dit --limit 26 --samples 1 --methods core \\
        --gen-methods core --out /tmp/glyphs-eval

``replication`` (alias ``digits``, its first name) is the small replication on the embedded models
(:mod:`bigain.evaluate.digits`) in their worlds (glyphs, digits), written to
``assets/eval/<model>.json|.md|-samples.png`` by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from bigain.datasets import DEFAULT_TEMPLATE, open_dataset
from bigain.evaluate.run import (
    Job,
    check_card,
    execute,
    finalize,
    make_accelerator,
    method_specs,
    render_markdown,
    select_indices,
)

PROG = "python -m bigain.evaluate"


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("classify", "diffusion-classifier accuracy"), ("generate", "one image per evaluation image")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--model", required=True, help="digits-dit, digits-unet, sd2-base, dit-xl-2-256/512 or a folder")
        s.add_argument("--dataset", required=True, help="digits, pets, imagenet, imagenet100 or folder")
        s.add_argument("--data-root", help="the dataset on disk (not for digits)")
        s.add_argument(
            "--classes",
            help="class list for --dataset folder/imagenet*: pets, imagenet1k, imagenet100, digits or a CSV",
        )
        s.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt template for folder classes without a list")
        s.add_argument("--split", help="digits: test (default)/train; pets: test (default)/trainval")
        s.add_argument("--methods", nargs="+", required=True, help="e.g. baseline tome:ratio=0.7 iekvd:alpha=0.9")
        s.add_argument("--out", required=True, type=Path, help="result folder (a rerun resumes it)")
        g = s.add_argument_group("subset (indices are recorded in run.json)")
        g.add_argument("--subset", type=int, help="evaluate N random images")
        g.add_argument("--subset-per-class", type=int, help="evaluate K random images of every class")
        g.add_argument("--subset-seed", type=int, default=0)
        g.add_argument("--subset-file", help="JSON list or whitespace-separated dataset indices")
        s.add_argument("--seed", type=int, default=0, help="image i uses seed + i for its noise/latents (all methods)")
        s.add_argument("--device", help="default: the process's accelerator device")
        s.add_argument(
            "--dtype",
            choices=["fp16", "float16", "bf16", "bfloat16", "fp32", "float32"],
            help="default: fp16 for hub models on GPU, else fp32",
        )
        s.add_argument("--cpu", action="store_true", help="force CPU (gloo) even where GPUs exist")
        s.add_argument("--timeout-min", type=float, default=180.0, help="how long processes wait for each other")
        s.add_argument("--max-new", type=int, help="stop each process after this many new results (resume later)")
        if name == "classify":
            c = s.add_argument_group("protocol (default: the model card's — the paper's §F rounds for hub models)")
            c.add_argument("--n-samples", type=int, nargs="+", help="cumulative timesteps per round, e.g. 5 20")
            c.add_argument("--to-keep", type=int, nargs="+", help="classes kept after each round, e.g. 5 1")
            c.add_argument("--n-pool", type=int, help="size of the timestep pool (20 in the paper)")
            c.add_argument("--batch-size", type=int, help="denoiser batch (16 in the paper)")
        else:
            c = s.add_argument_group("sampling (default: the model card's)")
            c.add_argument("--steps", type=int)
            c.add_argument("--guidance", type=float)
            c.add_argument("--sampler", choices=["ddim", "euler"])
    r = sub.add_parser("report", help="merge finished or partial runs into one table")
    r.add_argument("runs", nargs="+", type=Path)
    r.add_argument("--md", type=Path, help="also write the Markdown here")
    _digits_parser(sub)
    return p


#: The replication's subcommand and its other names (``digits`` was its first).
REPLICATION = ("replication", "digits")
#: ``--models`` when none are given: the glyph models, or under the old name ``digits`` the digits
#: models (so a command typed before worlds existed still measures what it did).
DEFAULT_MODELS = {"replication": ["glyphs-dit", "glyphs-unet"], "digits": ["digits-dit", "digits-unet"]}


def _digits_parser(sub: Any) -> None:
    e = sub.add_parser(
        REPLICATION[0],
        aliases=list(REPLICATION[1:]),
        help="the small replication on the embedded models, glyphs or digits (accuracy + sample quality per method)",
    )
    e.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="embedded models or their folders (default: glyphs-dit glyphs-unet; under the name `digits`: "
        "digits-dit digits-unet)",
    )
    e.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate a balanced subset of this many test images, equal per class where possible "
        "(default: all; glyphs 130, digits 360)",
    )
    e.add_argument(
        "--samples", type=int, default=None, help="generated samples per class (0: skip; default glyphs 10, digits 100)"
    )
    e.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method keys for classification, or groups: all, default, core, cached, ablations "
        "(default: every uncached method but the ablations; core: baseline, ToMe / L-GTM 0.5 and 0.7, ToDo, "
        "IE-KVD α 0.9 and 0.8→1.2); earlier rows on the same weights and images that this run does not "
        "measure are kept",
    )
    e.add_argument(
        "--gen-methods",
        nargs="+",
        default=None,
        help="method keys for generation, or groups: all, default, core, cached, ablations (default: the key set); "
        "earlier rows with the same samples setting that this run does not measure are kept",
    )
    e.add_argument(
        "--sensitivity-images",
        type=int,
        default=None,
        help="test images of the denoiser-sensitivity section (0: skip; default glyphs 26, digits 64)",
    )
    e.add_argument(
        "--estimate", action="store_true", help="print the run's cost estimate (times a few denoiser calls) and stop"
    )
    e.add_argument("--skip-classify", action="store_true")
    e.add_argument("--grid-only", action="store_true", help="only the labelled sample picture (1 per class, seed 0)")
    e.add_argument("--device", default=None)
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--out", type=Path, default=None, help="output folder (default: assets/eval)")
    e.add_argument("--quiet", action="store_true")


def run_digits(a: argparse.Namespace, command: str) -> int:
    """``replication`` (``digits``): every model in ``--models``, each report printed as it is written,
    after the cost estimate (on stderr)."""
    import torch
    from tqdm import tqdm

    from bigain.evaluate import digits
    from bigain.evaluate.report import digits_markdown

    if a.threads:
        torch.set_num_threads(a.threads)
    bars: dict[str, Any] = {}

    def progress(desc: str, i: int, n: int) -> None:
        if a.quiet:
            return
        bar = bars.get(desc)
        if bar is None:
            for old in bars.values():
                old.close()
            bars.clear()
            bar = bars[desc] = tqdm(total=n, desc=desc)
        bar.update(i - bar.n)

    for name in a.models or DEFAULT_MODELS[a.command]:
        if a.grid_only:
            print(digits.grid_only(name, a.out, a.gen_methods))
            continue
        res = digits.run(
            name,
            a.out,
            a.limit,
            a.samples,
            a.methods,
            a.gen_methods,
            a.device,
            skip_classify=a.skip_classify,
            command=command,
            progress=progress,
            sensitivity_images=a.sensitivity_images,
            log=partial(print, file=sys.stderr, flush=True),
            estimate_only=a.estimate,
        )
        for bar in bars.values():
            bar.close()
        bars.clear()
        if not a.estimate:
            print(digits_markdown(res))
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        ("n_samples", "to_keep", "n_pool", "batch_size")
        if args.command == "classify"
        else ("steps", "guidance", "sampler")
    )
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def build_job(args: argparse.Namespace, command: str | None = None) -> Job:
    """Everything that can be checked without the model: methods, dataset, subset, model name.
    ``command`` is what the provenance records (default: this process's command line)."""
    methods = method_specs(args.methods)
    name = args.model
    card = card_of(name)  # unknown model → ValueError before anything is read or loaded
    dataset = open_dataset(args.dataset, args.data_root, args.classes, args.template, args.split)
    check_card(card, dataset)
    indices = select_indices(dataset, args.subset, args.subset_seed, args.subset_per_class, args.subset_file)
    options = _protocol(name, args.command, _options(args))
    job = Job(args.command, args.out, name, dataset, indices, methods, args.seed, options, args.device, args.dtype)
    job.command = command
    return job


def _protocol(model: str, task: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options the pipeline gets (recorded in run.json): the card's defaults overridden by the
    command line. Classification: {"protocol": {n_pool, n_samples, to_keep}, "batch_size"}."""
    card = card_of(model)
    if task == "generate":
        base = {} if card is None else {"steps": card.steps, "guidance": card.guidance, "sampler": card.sampler}
        opts = {**base, **given}
        if not 1 <= opts.get("steps", 1) <= 1000 or not 0 <= opts.get("guidance", 1.0) <= 50:
            raise ValueError(f"--steps must be in [1, 1000] and --guidance in [0, 50], got {opts}")
        return opts
    proto = {k: list(v) if isinstance(v, tuple) else v for k, v in (card.protocol if card else {}).items()}
    proto |= {k: given[k] for k in ("n_pool", "n_samples", "to_keep") if k in given}
    if proto:
        from bigain.pipelines import Protocol

        Protocol.from_dict(proto)  # validates rounds before any compute
    embedded = card is not None and card.source == "embedded"
    batch = given.get("batch_size") or (128 if embedded else 16)
    if batch < 1:
        raise ValueError(f"--batch-size must be ≥ 1, got {batch}")
    return {"protocol": proto or None, "batch_size": batch}


def card_of(name: str) -> Any:
    """The model card for a name or hub id, None for a local folder; ValueError if neither."""
    from bigain.models import CARDS

    key = name.lower()
    card = CARDS.get(key) or next((c for c in CARDS.values() if c.repo.lower() == key), None)
    folder = Path(name).expanduser()
    if card is None and not folder.is_dir():
        raise ValueError(f"unknown model {name!r}: use one of {sorted(CARDS)} or the path of a local diffusers folder")
    if card is None and (folder / "config.json").is_file():  # an embedded model saved elsewhere
        base = json.loads((folder / "config.json").read_text()).get("name", "")
        card = CARDS.get(base)
    return card


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command; ``prog`` is how it was invoked (``python -m bigain eval`` from
    :mod:`bigain.cli`), recorded with the arguments in every result's provenance."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(prog).parse_args(argv)
    command = " ".join([prog, *argv])
    log = partial(print, flush=True)
    try:
        if args.command in REPLICATION:
            return run_digits(args, command)
        if args.command == "report":
            results = []
            for run in args.runs:
                if not (run / "run.json").is_file():
                    raise ValueError(f"{run} holds no run (no run.json)")
                results.append(finalize(run, log=lambda *a, **k: None, command=command))
            md = render_markdown(results)
            print(md)
            if args.md:
                args.md.write_text(md + "\n", encoding="utf-8")
            return 0
        job = build_job(args, command)
        acc = make_accelerator(args.cpu, args.timeout_min)
        execute(job, acc, args.max_new, log=log if acc.is_main_process else _rank_log(acc.process_index))
        acc.end_training()
        return 0
    except (ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _rank_log(rank: int) -> Any:
    def log(*a: Any, **k: Any) -> None:
        if k.get("file") is sys.stderr or os.environ.get("BIGAIN_VERBOSE"):
            print(*a, **{**k, "flush": True})

    return log


if __name__ == "__main__":
    sys.exit(main())

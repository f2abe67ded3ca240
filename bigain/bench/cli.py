"""The command line of ``python -m bigain.bench`` (subcommands speed, count, ops, kernels, report)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bigain.bench.common import log
from bigain.bench.count import DEFAULT_COUNT_METHODS, run_count
from bigain.bench.kernels import run_kernels
from bigain.bench.ops import run_ops
from bigain.bench.report import run_report, write_outputs
from bigain.bench.speed import run_speed
from bigain.execution import MODES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bigain.bench",
        description="Benchmarks: how much time token compression saves, measured the way a sceptical reviewer would.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed", help="time one denoiser call (or a generation) per method")
    sp.add_argument("--model", default="sd2-base")
    sp.add_argument("--random-weights", action="store_true", help="published config, random weights")
    sp.add_argument("--width-scale", type=int, default=1, help="divide the published widths by this (random weights)")
    sp.add_argument("--res", type=int, nargs="*", help="pixel resolutions (default: the model's)")
    sp.add_argument("--batch", type=int, nargs="+", default=[2])
    sp.add_argument(
        "--regime",
        nargs="+",
        metavar="RESxBATCH",
        help="(resolution, batch) pairs, e.g. 512x2 1024x2 512x64, instead of every --res with every --batch",
    )
    sp.add_argument(
        "--mode",
        nargs="+",
        choices=MODES,
        default=["eager"],
        help="execution modes; each method is compared with the baseline in the same mode",
    )
    sp.add_argument("--methods", nargs="+", default=["baseline", "tome:ratio=0.7", "lgtm:ratio=0.7", "todo", "iekvd"])
    sp.add_argument("--rounds", type=int, default=5)
    sp.add_argument("--warmup", type=int, default=1)
    sp.add_argument(
        "--job",
        choices=["call", "layer", "generate"],
        default="call",
        help="call: one denoiser call; layer: the first compressed transformer layer alone; generate: a generation",
    )
    sp.add_argument("--steps", type=int, default=10, help="--job generate: steps per generation")
    sp.add_argument("--attn", choices=["sdpa", "vanilla"], default="sdpa")
    sp.add_argument("--no-tomesd", action="store_true", help="do not add tomesd at the ToMe/L-GTM ratios")
    sp.add_argument("--no-flops", action="store_true")
    sp.add_argument("--no-profile", action="store_true")
    sp.add_argument("--no-count", action="store_true", help="no ATen op count (the host-bound estimate)")
    sp.add_argument(
        "--layer-index",
        type=int,
        nargs="+",
        help="--job layer: which compressed layers, by position among them (default: the first)",
    )
    _shape(sp)
    sp.add_argument("--out", default="assets/bench/speed")
    _common(sp)
    cp = sub.add_parser("count", help="ATen / kernel ops, syncs and copies each method adds per compressed layer")
    cp.add_argument("--model", default="sd2-base")
    cp.add_argument("--random-weights", action="store_true", help="digits models: random instead of shipped weights")
    cp.add_argument("--width-scale", type=int, default=1, help="divide the published widths by this")
    cp.add_argument("--res", type=int, help="pixel resolution (default: the model's, at most a 32×32 U-Net latent)")
    cp.add_argument("--batch", type=int, default=2)
    cp.add_argument("--methods", nargs="+", help=f"default: {' '.join(DEFAULT_COUNT_METHODS)}")
    cp.add_argument("--no-tomesd", action="store_true", help="do not count tomesd at the ToMe/L-GTM ratios")
    _shape(cp)
    cp.add_argument("--out", default="assets/bench/count")
    _common(cp)
    op = sub.add_parser("ops", help="time the operators alone, as fractions of one attention call")
    op.add_argument("--tokens", type=int, default=4096)
    op.add_argument("--channels", type=int, default=320)
    op.add_argument("--batch", type=int, default=2)
    op.add_argument("--ratio", type=float, default=0.7)
    op.add_argument("--rounds", type=int, default=20)
    op.add_argument("--warmup", type=int, default=3)
    op.add_argument("--out", default="assets/bench/ops")
    _common(op)
    kp = sub.add_parser("kernels", help="Triton kernels vs torch on the device")
    kp.add_argument("--cases", type=int, default=5)
    kp.add_argument("--out", default="assets/bench/kernels")
    _common(kp)
    rp = sub.add_parser("report", help="BENCHMARKS.md from the JSON results")
    rp.add_argument("inputs", nargs="*", default=["assets/bench"])
    rp.add_argument("--md", default="BENCHMARKS.md")
    rp.add_argument("--eval", default="assets/eval")
    return p


def _shape(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--layers",
        type=int,
        help="transformers: build N layers of each kind (Flux: N double + N single) at full width, all compressed",
    )
    p.add_argument("--blocks", type=int, nargs="+", help="transformers: the blocks compressed by default")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--triton", choices=["both", "on", "off"], default="both", help="CUDA: which paths to time")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.cmd == "report":
        log(f"wrote {run_report(args)}")
        return 0
    runner = {"speed": run_speed, "count": run_count, "ops": run_ops, "kernels": run_kernels}[args.cmd]
    res = runner(args)
    for path in write_outputs(res, Path(args.out)):
        log(f"wrote {path}")
    if (args.cmd == "kernels" and not res["all_ok"]) or (args.cmd == "count" and not res["all_met"]):
        return 1
    return 0

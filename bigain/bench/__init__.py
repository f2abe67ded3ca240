"""Benchmarks: how much time token compression saves, measured the way a sceptical reviewer would.

``python -m bigain.bench speed``   time of one denoiser call (or one generation) per method, mode and setting
``python -m bigain.bench count``   ATen ops, kernel ops, host syncs and host-to-device copies each method adds
                                   per compressed layer, next to the issue's budgets (deterministic: no timing)
``python -m bigain.bench ops``     the operators alone, each as a fraction of one attention call
``python -m bigain.bench kernels`` the Triton kernels against their torch references (CUDA)
``python -m bigain.bench report``  BENCHMARKS.md and plots from the JSON files of the runs above

Protocol (``speed``): one model, patched once for every bigain method; tomesd runs on its own
copy of the plain model, deep-copied before bigain patches it and patched by ``tomesd.apply_patch``
once, as tomesd's users run it. Every method runs through the same attention processor (SDPA by
default, ``--attn vanilla`` for diffusers' materialised-softmax ``AttnProcessor``); the same
random inputs (fixed seed) for everyone. ``--mode eager compile cudagraph`` runs each method (and
tomesd) in that execution mode (:mod:`bigain.execution`), and every speed-up is against the
baseline *in the same mode* (eager vs eager, compiled vs compiled, graphed vs graphed). Selecting a
method, compiling, capturing and warm-up happen outside the timed region: the timed region is the
denoiser call alone (an ``Executor`` call; CUDA synchronised around it). Where a mode cannot run
(``cudagraph`` on a CPU, tomesd that cannot be compiled or captured) the row records why instead
of the run failing. Methods are interleaved round by round in an order that rotates every round,
so drift and thermal state hit everyone alike. We report min and median times, speed-ups as
ratios to the baseline of the same run (paired per round, and from the minima), FLOPs from
``FlopCounterMode`` on one call, CUDA peak memory, compiled/graphed vs eager output differences,
and two bounds: the Amdahl ceiling 1 / (1 − share), share = the time the eager baseline spends
inside the self-attention modules a method compresses, and the host-bound estimate
base_ops / method_ops (ATen ops of one eager call: what a launch-bound GPU at batch 1–2 gives,
``../shared/docs/gpu-speed.md``). ``--regime 512x2 1024x2 512x64`` names (resolution, batch)
pairs (generation at batch 1–2, the classifier's batch) instead of the product of ``--res`` and
``--batch``.

Protocol (``count``): one denoiser call under ``torch.no_grad`` counted with ``TorchDispatchMode``
(:mod:`bigain.opcount`), minus the unpatched model's count, divided by the number of compressed
layers; the torch path (fused Triton kernels are invisible to the counter). Each method is
counted on a call that computes its matching (after one untimed call that builds cached
constants); ``reuse="steps"`` methods also on the next call, which reuses it. Counts do not
depend on width or weights, so ``--width-scale`` narrows the published configs and a small
latent keeps it quick on a CPU.

Models: every architecture of :data:`bigain.zoo.ARCHS` (digits-dit, digits-unet, sd2-base, sdxl-base,
dit-xl-2-256/512, pixart-alpha-512, pixart-sigma-1024, sd3-medium, flux-schnell), built by
:func:`bigain.zoo.build` and called through its backbone adapter. ``--layers N`` builds a transformer
with N layers of each kind at full width (SD3: N joint blocks; Flux: N double- and N single-stream
blocks), every one compressed: with ``--job layer`` (``--layer-index``) the speed-up of one full-width
block at the model's real token count, on a CPU.

Layout: :mod:`bigain.bench.models` (denoisers, inputs, calls), :mod:`~bigain.bench.variants` (what is
measured), :mod:`~bigain.bench.speed`, :mod:`~bigain.bench.count`, :mod:`~bigain.bench.ops`,
:mod:`~bigain.bench.kernels`, :mod:`~bigain.bench.report` (Markdown, plots, BENCHMARKS.md) and
:mod:`~bigain.bench.cli`; the generic timing pieces are :mod:`bigain.timing`.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bigain.bench`` (:func:`bigain.bench.cli.main`)."""
    from bigain.bench.cli import main as cli_main

    return cli_main(argv)


__all__ = ["main"]

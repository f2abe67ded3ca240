"""Look inside: a recorded generation and the pictures of one (step, block) of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from bigain import viz
from bigain.errors import BadInput
from bigain.explain.learn import kv_choice
from bigain.methods import IEKVD, Method
from bigain.record import AttnEvent, Recorder

Progress = Callable[[float, str], Any]

# ---- recorded events ("look inside") -------------------------------------------------------


@dataclass
class Inside:
    """Recorded attention events of one generation, indexed for the look-inside view."""

    recorder: Recorder
    image: Image.Image
    method: Method
    steps: list[int] = field(default_factory=list)  # denoiser call indices that compressed something
    blocks: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, recorder: Recorder, image: Image.Image, method: Method) -> Inside:
        calls = sorted({e.call for e in recorder.events})
        blocks = recorder.blocks()
        return cls(recorder, image, method, calls, blocks)

    def event(self, step: int, block: str | None) -> AttnEvent:
        """The event of denoiser call ``step`` in ``block`` (the first block if None)."""
        if not self.recorder.events:
            raise BadInput("nothing was recorded: this method did not touch any attention block")
        if block is None:
            block = self.blocks[0]
        found = [e for e in self.recorder.events if e.call == step and e.block == block]
        if not found:
            raise BadInput(f"no attention call recorded for step {step} in block {block!r}")
        return found[0]


def inside_figures(inside: Inside, step: int, block: str | None, seed: int = 0) -> tuple[Any, Any, Any, str]:
    """Figures for one (step, block): Laplacian gate, merge groups, KV picture, and a caption.

    The gate and merge maps are the model's own (recorded from the denoiser at that step). The KV
    picture applies the method's downsampling at that block's token grid to the final image, with
    the α the method used at that step."""
    e = inside.event(step, block)
    t = "?" if e.t is None else f"{e.t:.0f}"
    head = (
        f"**step {step + 1} of {len(inside.steps)}** (t = {t}), **{viz.short_block(e.block)}** ({e.h}×{e.w} tokens): "
        f"attention used {e.n_q} of {e.n_tokens} tokens as queries and {e.n_kv} as keys/values."
    )
    gate = merge = kv = None
    notes = []
    if e.scores is not None:
        gate = viz.gate_figure(
            inside.image, e.scores.numpy(), e.h, e.w, _np(e.dst), f"Laplacian gate — {viz.short_block(e.block)}"
        )
    elif e.groups is not None:
        notes.append(f"{inside.method.title} picks destinations at random, so there is no gate to show.")
    if e.groups is not None:
        merge = viz.merge_figure(
            inside.image, e.groups.numpy(), e.h, e.w, _np(e.dst), f"{e.method} — {viz.short_block(e.block)}"
        )
    if isinstance(inside.method, IEKVD):
        tokens = _event_tokens(inside.image, e.h, e.w)
        alpha = e.alpha if e.alpha is not None else inside.method.alpha
        if e.n_kv == e.n_tokens:
            notes.append("Nothing was downsampled at this step (IE-KVD runs the last step at full resolution).")
        c = kv_choice(tokens, inside.method, alpha)
        kv = viz.kv_figure(tokens, c["kept"], c["nearest"], c["average"], c["grid"], c["factor"], float(alpha))
    if not inside.method.compresses:
        notes.append("The baseline compresses nothing: pick a method to see its maps.")
    return gate, merge, kv, "\n\n".join([head, *notes])


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.numpy()


def _event_tokens(image: Image.Image, h: int, w: int) -> np.ndarray:
    """The image averaged to an h×w token grid (any h, w), (h, w[, 3]) in [0, 1]."""
    mode = "L" if viz.as_array(image).ndim == 2 else "RGB"
    return np.asarray(image.convert(mode).resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255.0


# ---- recording a generation ("look inside") -----------------------------------------------


def record_generation(
    model: Any,
    condition: Any,
    method: Method,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    progress: Progress | None = None,
) -> Inside:
    """Generate one image with ``method`` while recording Laplacian scores and merge maps of every
    compressed attention call (per denoiser call and block)."""
    from bigain.pipelines import generate
    from bigain.record import record

    with record(maps=True) as rec:
        res = generate(model, condition, method=method, seed=seed, steps=steps, guidance=guidance, progress=progress)
    inside = Inside.of(rec, res.images[0], method)
    if not inside.steps:
        raise BadInput(f"{method.label()} did not compress any attention call of {model.card.name}")
    return inside

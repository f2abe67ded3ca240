"""Opt-in capture of what compression did, per (denoiser call, block): token counts always,
Laplacian scores and merge maps when ``maps=True`` (for pictures)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from bigain.methods import Plan


@dataclass
class AttnEvent:
    """One patched self-attention call. Tensors are on the CPU, first sample of the batch."""

    block: str
    call: int  # index of the denoiser call within the recording
    t: float | None
    h: int
    w: int
    n_tokens: int
    n_q: int
    n_kv: int
    method: str
    scores: torch.Tensor | None = None  # (h·w,) Laplacian energy
    groups: torch.Tensor | None = None  # (h·w,) position each token was merged into
    dst: torch.Tensor | None = None  # (Nd,) destination positions
    alpha: float | None = None


@dataclass
class Recorder:
    maps: bool = False
    events: list[AttnEvent] = field(default_factory=list)
    calls: int = 0

    def by_call(self, call: int) -> list[AttnEvent]:
        return [e for e in self.events if e.call == call]

    def blocks(self) -> list[str]:
        return list(dict.fromkeys(e.block for e in self.events))


_ACTIVE: ContextVar[Recorder | None] = ContextVar("bigain_recorder", default=None)


@contextmanager
def record(maps: bool = False) -> Iterator[Recorder]:
    """Record every patched attention call made in this context (this thread/task only)."""
    rec = Recorder(maps=maps)
    token = _ACTIVE.set(rec)
    try:
        yield rec
    finally:
        _ACTIVE.reset(token)


def new_call() -> None:
    """Mark the start of a denoiser call (called by the model's pre-hook)."""
    rec = _ACTIVE.get()
    if rec is not None:
        rec.calls += 1


def emit(block: str, t: torch.Tensor | None, h: int, w: int, n: int, plan: Plan | None, method: str) -> None:
    rec = _ACTIVE.get()
    if rec is None:
        return
    n_q = plan.q.shape[1] if plan is not None else n
    n_kv = plan.n_kv if plan is not None else n
    ev = AttnEvent(block, rec.calls - 1, None if t is None else float(t[0]), h, w, n, n_q, n_kv, method)
    if rec.maps and plan is not None:
        if plan.scores is not None:
            ev.scores = plan.scores[0].detach().float().cpu()
        if plan.merge is not None:
            ev.groups = plan.merge.groups()[0].cpu()
            ev.dst = plan.merge.dst_idx[0].cpu()
        if plan.alpha is not None:
            ev.alpha = float(plan.alpha.flatten()[0])
    rec.events.append(ev)

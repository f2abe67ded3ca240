"""Opt-in capture of what compression did, per (denoiser call, block): token counts always,
Laplacian scores and merge maps when ``maps=True`` (for pictures)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
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

    def new_call(self) -> None:
        """Mark the start of a denoiser call (called by the model's pre-hook)."""
        self.calls += 1


# Thread-local, not a ContextVar: the patched forward reads it, and torch.compile can trace
# attribute reads of a threading.local but not ContextVar.get.
_ACTIVE = threading.local()


def current() -> Recorder | None:
    """The recorder of this thread, if a :func:`record` block is open."""
    return getattr(_ACTIVE, "recorder", None)


@contextmanager
def record(maps: bool = False) -> Iterator[Recorder]:
    """Record every patched attention call made in this context (this thread only, eager mode).
    Recording reads tensors on the host, so it is for pictures, never for timed runs."""
    rec = Recorder(maps=maps)
    old = current()
    _ACTIVE.recorder = rec
    try:
        yield rec
    finally:
        _ACTIVE.recorder = old


def emit(
    rec: Recorder, block: str, t: torch.Tensor | float | None, h: int, w: int, n: int, plan: Plan, method: str
) -> None:
    """Append one event; with ``maps`` also the pictures' tensors (extra gathers, host copies)."""
    t0 = None if t is None else float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)
    ev = AttnEvent(block, rec.calls - 1, t0, h, w, n, plan.q.shape[1], plan.n_kv, method)
    if rec.maps:
        if plan.scores is not None:
            ev.scores = plan.scores[0].detach().float().cpu()
        if plan.merge is not None:
            ev.groups = plan.merge.groups()[0].cpu()
            ev.dst = plan.merge.dst_idx[0].cpu()
        if plan.alpha is not None:
            a = plan.alpha
            ev.alpha = float(a.reshape(-1)[0]) if isinstance(a, torch.Tensor) else float(a)
    rec.events.append(ev)

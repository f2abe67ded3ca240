"""Stoppable work: a time budget and a cancel switch, checked between denoiser calls.

The pipelines report progress between denoiser calls (and the comparisons between timing rounds);
a :class:`Job` wraps that callback and raises :class:`bigain.errors.Stopped` there once the job is
cancelled or over its budget, so the work unwinds cleanly (``compress`` blocks restore the model) at
the next call instead of running to the end. :func:`run_stoppable` runs a function in a worker
thread and cancels it when the caller goes away (the app uses it for requests a visitor cancels).

Python::

    job = bigain.jobs.Job(budget_s=60)
    bigain.generate(m, 3, progress=job.progress())  # Stopped after 60 s, or once job.cancel() is called
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from bigain.errors import BadInput, Stopped

Progress = Callable[[float, str], Any]
T = TypeVar("T")

#: default per-request budget of the app (seconds); BIGAIN_MAX_SECONDS overrides, 0 = none
DEFAULT_BUDGET_S = 300.0


def budget_from_env(default: float = DEFAULT_BUDGET_S) -> float | None:
    """The per-request time budget from ``BIGAIN_MAX_SECONDS`` (seconds; 0 or "none": no budget)."""
    text = os.environ.get("BIGAIN_MAX_SECONDS", "").strip().lower()
    if not text:
        return default
    if text in ("0", "none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"BIGAIN_MAX_SECONDS must be a number of seconds, got {text[:20]!r}") from None
    if not value > 0:
        raise BadInput(f"BIGAIN_MAX_SECONDS must be positive (or 0 for none), got {text!r}")
    return value


class Job:
    """A cancel switch and an optional time budget for one piece of work (thread-safe)."""

    def __init__(self, budget_s: float | None = None) -> None:
        self.budget_s = budget_s
        self.started = time.monotonic()
        self._cancelled = threading.Event()
        self.checks = 0  # how often the work looked (tests: the work stopped at a check)
        self.worker: threading.Thread | None = None  # set by run_stoppable

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check(self) -> None:
        """Raise :class:`Stopped` if the job was cancelled or is over its budget."""
        self.checks += 1
        if self._cancelled.is_set():
            raise Stopped("the request was cancelled; its work stopped")
        if self.budget_s is not None and self.elapsed() > self.budget_s:
            raise Stopped(
                f"the request ran out of its time budget ({self.budget_s:g} s); ask for fewer steps, methods or "
                "timing rounds (the budget is BIGAIN_MAX_SECONDS)"
            )

    def progress(self, inner: Progress | None = None) -> Progress:
        """A progress callback that checks the job first, then forwards to ``inner``."""

        def report(fraction: float, desc: str = "") -> None:
            self.check()
            if inner is not None:
                inner(fraction, desc)

        return report


def run_stoppable(fn: Callable[[Job], T], job: Job, poll_s: float = 0.1) -> Iterator[T | None]:
    """Run ``fn(job)`` in a worker thread; yield None while it runs and its result at the end.

    Closing the generator (a consumer that goes away: Gradio closes a cancelled request's generator
    at its next yield) cancels the job, so the worker stops at its next check. Exceptions of ``fn``
    are raised here."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn(job)
        except BaseException as e:  # handed to the consumer below
            box["error"] = e

    worker = job.worker = threading.Thread(target=work, name="bigain-job", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(poll_s)
            if worker.is_alive():
                yield None
    finally:
        if worker.is_alive():
            job.cancel()
    if "error" in box:
        raise box["error"]
    yield box["value"]

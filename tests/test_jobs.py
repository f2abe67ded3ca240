"""Cancelled or over-budget work stops at the next denoiser call, and the model is left as it was."""

from __future__ import annotations

import time

import numpy as np
import pytest

import bigain
from bigain import patch
from bigain.errors import BadInput, Stopped
from bigain.jobs import Job, budget_from_env, run_stoppable


@pytest.fixture
def counted(monkeypatch):
    """The shipped digits DiT with its denoiser calls counted."""
    m = bigain.load_model("digits-dit")
    calls = []
    real = type(m).eps

    def eps(self, *a, **kw):
        calls.append(time.monotonic())
        return real(self, *a, **kw)

    monkeypatch.setattr(type(m), "eps", eps)
    return m, calls


def test_a_cancelled_generation_stops_after_one_more_denoiser_call(counted) -> None:
    m, calls = counted
    job = Job()

    def inner(fraction: float, desc: str) -> None:
        if len(calls) == 3:
            job.cancel()

    with pytest.raises(Stopped, match="cancelled"):
        bigain.generate(m, 3, method=bigain.LGTM(), steps=25, progress=job.progress(inner))
    assert len(calls) == 4  # the call in flight finishes, the next one never starts
    assert patch.active_method(m) == bigain.Baseline()  # the compress block unwound
    ok = bigain.generate(m, 3, steps=2).array
    assert np.isfinite(ok).all()


def test_a_cancelled_classification_stops_between_batches(counted) -> None:
    m, calls = counted
    job = Job()
    image = np.zeros((16, 16), np.uint8)

    def inner(fraction: float, desc: str) -> None:
        job.cancel()

    with pytest.raises(Stopped):
        bigain.classify(m, image, batch_size=10, progress=job.progress(inner))
    assert len(calls) == 2  # 100 evaluations in batches of 10: stopped after the second


def test_the_time_budget_stops_work_and_says_how_to_change_it(counted, monkeypatch) -> None:
    m, calls = counted
    with pytest.raises(Stopped, match=r"time budget \(0.001 s\).*BIGAIN_MAX_SECONDS"):
        job = Job(budget_s=0.001)
        job.started -= 1.0  # as if it had started a second ago
        bigain.generate(m, 3, steps=25, progress=job.progress())
    assert len(calls) == 1
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "45")
    assert budget_from_env() == 45
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "0")
    assert budget_from_env() is None
    monkeypatch.setenv("BIGAIN_MAX_SECONDS", "soon")
    with pytest.raises(BadInput, match="BIGAIN_MAX_SECONDS must be a number"):
        budget_from_env()


def test_a_consumer_that_goes_away_stops_the_worker(counted) -> None:
    """What the app relies on: Gradio closes a cancelled request's generator at its next yield."""
    m, calls = counted
    job = Job()
    stream = run_stoppable(lambda j: bigain.generate(m, 3, steps=200, progress=j.progress()), job, poll_s=0.02)
    while len(calls) < 2:
        assert next(stream) is None
    stream.close()
    assert job.cancelled
    job.worker.join(2.0)
    assert not job.worker.is_alive()  # idle within 2 s
    assert len(calls) < 20


def test_run_stoppable_returns_the_result_and_raises_the_error() -> None:
    assert list(run_stoppable(lambda j: 7, Job()))[-1] == 7
    with pytest.raises(BadInput, match="bad"):
        list(run_stoppable(lambda j: (_ for _ in ()).throw(BadInput("bad")), Job()))

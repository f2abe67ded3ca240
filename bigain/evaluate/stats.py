"""The statistics of both evaluations, from scipy: Wilson score intervals for accuracies and
exact (binomial) McNemar tests for paired outcomes on the same images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (fractions in [0, 1]);
    ``(0.0, 1.0)`` for ``n = 0``. ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``."""
    if n <= 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Exact two-sided McNemar test on paired outcomes: ``a_only`` = a right & b wrong, ``b_only``
    = the reverse, ``p`` = two-sided binomial test of ``a_only`` out of the discordant pairs at 1/2
    (``scipy.stats.binomtest``); ``p = 1`` without discordant pairs."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    b01 = sum(bool(x) and not y for x, y in zip(a, b, strict=True))
    b10 = sum(bool(y) and not x for x, y in zip(a, b, strict=True))
    if b01 + b10 == 0:
        return {"a_only": 0, "b_only": 0, "p": 1.0}
    from scipy.stats import binomtest

    return {"a_only": b01, "b_only": b10, "p": float(binomtest(b01, b01 + b10, 0.5).pvalue)}

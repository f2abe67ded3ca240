"""Timing that a sceptical reviewer accepts: synchronised wall clocks, interleaved rounds in a rotating
order, the time spent inside chosen modules (the Amdahl share), CUDA peak memory and paired summaries.

Used by the benchmark (:mod:`bigain.bench`); the app's comparisons (:mod:`bigain.explain`) can take
their round order from :func:`rotating_rounds`::

    for r, method in rotating_rounds(runs, rounds):  # every round runs every method, the order rotating
        ...

Nothing here knows models or methods: items are anything with a ``key`` (or hashable themselves).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def sync(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work, so wall-clock timings cover it (no-op elsewhere)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rotating_rounds(items: Sequence[T], rounds: int) -> list[tuple[int, T]]:
    """(round, item) in the order they run: every round runs every item once, the order rotating by
    one from round to round (round r starts with item r mod n), so that drift and machine load hit
    every item alike."""
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an integer ≥ 0, got {rounds!r}")
    n = len(items)
    return [(r, items[(r + k) % n]) for r in range(rounds) for k in range(n)]


def _key(item: Any) -> Hashable:
    return getattr(item, "key", item)


def time_interleaved(
    items: Sequence[T],
    run: Callable[[T], Any],
    device: torch.device | str | None,
    rounds: int,
    warmup: int,
    setup: Callable[[T], Any] | None = None,
    key: Callable[[T], Hashable] = _key,
) -> dict[Hashable, list[float]]:
    """Seconds of each ``run(item)``, ``rounds`` timed rounds after ``warmup`` untimed ones, the order
    rotating every round (:func:`rotating_rounds`). ``setup(item)`` runs before each call, outside
    the timed region (selecting a method, seeding). Keys: ``item.key`` (or the item itself)."""
    times: dict[Hashable, list[float]] = {key(v): [] for v in items}
    for k, v in rotating_rounds(items, warmup + rounds):
        if setup is not None:
            setup(v)
        sync(device)
        t0 = time.perf_counter()
        run(v)
        sync(device)
        if k >= warmup:
            times[key(v)].append(time.perf_counter() - t0)
    return times


class AttnClock:
    """Time spent inside chosen modules (the compressed attention layers) during one call
    (synchronised forward hooks). Run as an extra entry of the interleaved rounds, so the Amdahl
    share comes from the same rounds and conditions as the speed-ups. ``modules``: name → module."""

    def __init__(self, modules: Mapping[str, torch.nn.Module], device: torch.device | str | None) -> None:
        self.blocks = list(modules)
        self.attns = list(modules.values())
        self.device = device
        self.inside: list[float] = []
        self.total: list[float] = []
        self._t0 = 0.0
        self._acc = 0.0

    def _pre(self, *_: Any) -> None:
        sync(self.device)
        self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        sync(self.device)
        self._acc += time.perf_counter() - self._t0

    def run(self, call: Callable[[], Any]) -> Any:
        handles = [a.register_forward_pre_hook(self._pre) for a in self.attns]
        handles += [a.register_forward_hook(self._post) for a in self.attns]
        self._acc = 0.0
        try:
            sync(self.device)
            t0 = time.perf_counter()
            out = call()
            sync(self.device)
            self.total.append(time.perf_counter() - t0)
            self.inside.append(self._acc)
        finally:
            for h in handles:
                h.remove()
        return out

    def summary(self, skip: int) -> dict[str, Any]:
        """Median share over the timed rounds (the first ``skip`` are warm-up); ceiling = 1/(1 − share)."""
        inside, total = self.inside[skip:], self.total[skip:]
        share = statistics.median(i / t for i, t in zip(inside, total, strict=True))
        return {
            "share": share,
            "ceiling": 1.0 / (1.0 - share),
            "attn_s": statistics.median(inside),
            "call_s": statistics.median(total),
            "blocks": self.blocks,
            "rounds": len(inside),
        }


def peak_memory(call: Callable[[], Any], device: torch.device | str) -> dict[str, int | None]:
    """CUDA peak bytes of one call (absolute and above what was allocated before). None on CPU:
    torch's CPU allocator keeps no peak and ru_maxrss is a process-wide high-water mark."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"peak_bytes": None, "peak_extra_bytes": None}
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_bytes": int(peak), "peak_extra_bytes": int(peak - before)}


def paired_summary(times: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """Min and median of ``times``; the speed-up over ``base`` (same rounds) as the median of the
    per-round ratios, from the minima, and the per-round ratios' interquartile range."""
    paired = [b / t for b, t in zip(base, times, strict=True)]
    return {
        "times_s": list(times),
        "min_s": min(times),
        "median_s": statistics.median(times),
        "speedup": statistics.median(paired),
        "speedup_min": min(base) / min(times),
        "speedup_iqr": iqr(paired),
    }


def iqr(v: Sequence[float]) -> list[float]:
    """[first quartile, third quartile] (with fewer than 4 values: [min, max])."""
    if len(v) < 4:
        return [min(v), max(v)]
    q = statistics.quantiles(v, n=4)
    return [q[0], q[2]]


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Median over rounds of b/a (how much faster a is than b, paired round by round); None if unpaired."""
    if not a or len(a) != len(b):
        return None
    return statistics.median(y / x for x, y in zip(a, b, strict=True))

"""The errors bigain raises on purpose, and the checks that raise them.

Every message is one sentence that names the field and what is allowed (or what is wrong with a
file), so the app, the CLI (exit status 2, no traceback) and Python callers can show it as it is.
:class:`BadInput` is a ``ValueError`` and :class:`BadType` a ``TypeError``, so ordinary ``except
ValueError`` code keeps working; ``except bigain.BigainError`` catches everything bigain means.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class BigainError(Exception):
    """Base of every error bigain raises on purpose."""


class BadInput(BigainError, ValueError):
    """A value out of range, a file that is not what it should be, an unknown name."""


class BadType(BigainError, TypeError):
    """A value of the wrong type (types are checked, never coerced: 2.5 is not a step count)."""


class Stopped(BigainError):
    """Work stopped before it finished: cancelled by the caller or over its time budget."""


def check_int(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``v`` as an int if it is one (numpy ints too; not bools, floats or strings) within [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise BadType(f"{name} must be an integer{_range(lo, hi)}, got {excerpt(v)}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BadInput(f"{name} must be an integer{_range(lo, hi)}, got {v}")
    return v


def check_number(name: str, v: Any, lo: float | None = None, hi: float | None = None) -> float:
    """``v`` as a float if it is a finite real number (not a bool or a string) within [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise BadType(f"{name} must be a number{_range(lo, hi)}, got {excerpt(v)}")
    v = float(v)
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BadInput(f"{name} must be a finite number{_range(lo, hi)}, got {v}")
    return v


def whole(v: Any, name: str) -> int:
    """A widget's number (sliders send floats) as an integer; 2.5, NaN and text are refused, not rounded."""
    f = check_number(name, v)
    if f != int(f):
        raise BadInput(f"{name} must be a whole number, got {v!r}")
    return int(f)


def _num(x: float) -> str:
    """A limit as written: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f" ≥ {_num(lo)}"
    return "" if hi is None else f" ≤ {_num(hi)}"


def excerpt(v: Any) -> str:
    """A short, safe rendering of a bad value (long strings are cut: no 1 MB echoes)."""
    text = repr(v) if isinstance(v, (str, bytes)) else f"{type(v).__name__} {v!r}"
    return text if len(text) <= 60 else text[:57] + "…"

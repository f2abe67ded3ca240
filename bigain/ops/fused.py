"""Dispatcher between the torch operators (the reference) and the fused Triton kernels of the CUDA path.

Each function here has the signature and result of a torch operator in ``bigain.ops`` and runs
the Triton kernel only when the tensor is on a CUDA device, ``triton`` imports, and the fused path
is allowed: by default unless ``BIGAIN_DISABLE_TRITON`` is set (read once, at import), and per
thread / task with :func:`allow` (a ContextVar, so a benchmark can compare both paths side by side).
Nothing here imports triton at import time: :mod:`bigain.ops._kernels` is imported on the first
CUDA call, so a machine without a GPU (or without triton) never touches it. The operators never
import this module; the methods pass its functions to them (``match(..., row_max=fused.row_max)``). A driver failure at
launch ("0 active drivers", a broken install) turns the fused path off for the process with one
warning and falls back to torch.

* :func:`laplacian_slots` — Laplacian score + per-cell argmin in one pass (L-GTM's destinations);
* :func:`kv_downsample` — IE-KVD's α-blend of nearest and average pooling, one read per window,
  written as the contiguous (B, N', C) tensor the K/V projections take;
* :func:`row_max` — ToMe's best destination per source, streamed over destination tiles.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import ModuleType
from typing import Any, TypeVar

import torch

from bigain.ops.kv import blend_downsample
from bigain.ops.laplacian import NORMS, laplacian_score
from bigain.ops.merge import destination_slots
from bigain.ops.merge import row_max as torch_row_max

ENV_DISABLE = "BIGAIN_DISABLE_TRITON"
#: Messages of launch failures that mean "Triton cannot run here" (not a bug in a kernel).
DRIVER_ERRORS = ("active driver", "libcuda", "driver version", "no cuda gpus", "cuda driver")
DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_state: dict[str, Any] = {"kernels": None, "tried": False, "broken": False}
T = TypeVar("T")


def env_disabled() -> bool:
    """True when ``BIGAIN_DISABLE_TRITON`` is set to anything but '', 0, false or no."""
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("", "0", "false", "no")


_ALLOWED: ContextVar[bool] = ContextVar("bigain_fused_allowed", default=not env_disabled())


def disabled() -> bool:
    """True when the fused path is switched off here (:func:`allow`, or ``BIGAIN_DISABLE_TRITON`` at import)."""
    return not _ALLOWED.get()


def set_allowed(on: bool) -> None:
    """Allow (or forbid) the fused path in the current context from now on (see :func:`allow`)."""
    _ALLOWED.set(bool(on))


@contextlib.contextmanager
def allow(on: bool) -> Iterator[None]:
    """Inside the block the fused path is allowed (``on``) or forced off; the previous setting comes back after."""
    token = _ALLOWED.set(bool(on))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def load_kernels() -> ModuleType | None:
    """The kernel module, imported on first use; None when triton is missing or cannot start."""
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["kernels"] = importlib.import_module("bigain.ops._kernels")
        except (ImportError, RuntimeError) as err:  # no triton, or no driver at decoration time
            warnings.warn(f"bigain: Triton kernels unavailable, using torch ({err})", RuntimeWarning, stacklevel=2)
    return _state["kernels"]


def enabled(x: torch.Tensor) -> bool:
    """Whether the fused path would run for ``x``: a CUDA tensor of a supported dtype, triton usable,
    and not inside ``torch.compile`` (which generates its own fused kernels from the torch ops)."""
    if not x.is_cuda or torch.compiler.is_compiling() or x.dtype not in DTYPES or disabled() or _state["broken"]:
        return False
    return load_kernels() is not None


def _guarded(fused: Callable[[], T], fallback: Callable[[], T]) -> T:
    """Run the kernel; on a driver failure switch the fused path off and use the torch fallback."""
    try:
        return fused()
    except RuntimeError as err:
        if not any(k in str(err).lower() for k in DRIVER_ERRORS):
            raise
        _state["broken"] = True
        warnings.warn(f"bigain: Triton launch failed, using torch from now on ({err})", RuntimeWarning, stacklevel=3)
        return fallback()


def laplacian_slots(
    x: torch.Tensor, h: int, w: int, sx: int, sy: int, mode: str = "laplacian", norm: str = "l1"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Destinations of L-GTM: slots (B, h//sy, w//sx) as ``destination_slots(mode=...)`` and the
    per-token scores (B, h·w) float32 as ``laplacian_score``. x: (B, h·w, C)."""
    if mode not in ("laplacian", "laplacian-code"):
        raise ValueError(f"laplacian_slots: mode must be 'laplacian' or 'laplacian-code', got {mode!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")

    def reference() -> tuple[torch.Tensor, torch.Tensor]:
        scores = laplacian_score(x, h, w, norm)
        return destination_slots(h, w, sx, sy, mode, scores=scores), scores

    if not enabled(x):
        return reference()
    k = load_kernels()
    assert k is not None
    code, l2 = mode == "laplacian-code", norm == "l2"
    return _guarded(lambda: k.laplacian_slots(x, h, w, sx, sy, code=code, l2=l2), reference)


def kv_downsample(x: torch.Tensor, h: int, w: int, factor: int, alpha: float | torch.Tensor) -> torch.Tensor:
    """D_α of IE-KVD, as ``blend_downsample``: (B, h·w, C) → (B, (h//s)·(w//s), C); α float or per sample.

    α = 0 and α = 1 given as floats are pure average / nearest: the torch ops are exact copies
    or one reduction, so they stay on torch."""
    if not enabled(x) or (isinstance(alpha, (int, float)) and alpha in (0, 1)):
        return blend_downsample(x, h, w, factor, alpha)
    k = load_kernels()
    assert k is not None
    return _guarded(lambda: k.kv_blend(x, h, w, factor, alpha), lambda: blend_downsample(x, h, w, factor, alpha))


def row_max(a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """max and argmax over j of a[b, i]·d[b, j]: a (B, Ns, C), d (B, Nd, C) → ((B, Ns), (B, Ns)).

    Values in a's dtype (the rounding of ``torch.bmm``), the first index on ties."""

    if not enabled(a):
        return torch_row_max(a, d)
    k = load_kernels()
    assert k is not None
    return _guarded(lambda: k.row_max(a, d), lambda: torch_row_max(a, d))


__all__ = [
    "ENV_DISABLE",
    "allow",
    "disabled",
    "enabled",
    "env_disabled",
    "kv_downsample",
    "laplacian_slots",
    "load_kernels",
    "row_max",
    "set_allowed",
]

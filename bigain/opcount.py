"""Counting what a denoiser call asks of the device: ATen ops, kernel-launching ops, host syncs.

On a launch-bound GPU (batch 1–2) every op costs host time whether or not it saves FLOPs, and
every host sync drains the queue (``../shared/docs/gpu-speed.md``). Counts are deterministic, so
they are the CPU's view of that cost and tests may pin them. Counted with ``TorchDispatchMode``
under ``torch.no_grad`` (``inference_mode`` hides the ``_to_copy``/``_local_scalar_dense`` inside
``to``/``is_nonzero``), as the ops reach the backend after autograd and decompositions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

#: Ops that read a device value on the host (or have a data-dependent output size).
SYNC_OPS = {
    "_local_scalar_dense",
    "is_nonzero",
    "equal",
    "nonzero",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "bincount",
    "repeat_interleave",
    "_assert_async",
}
#: Ops that copy host data onto the device (a Python list or scalar becoming a tensor).
H2D_OPS = {"lift_fresh", "lift_fresh_copy", "scalar_tensor"}
#: Ops that launch nothing: they allocate or only change metadata.
NO_KERNEL = {
    "empty",
    "empty_strided",
    "new_empty",
    "new_empty_strided",
    "empty_like",
    "_unsafe_view",
    "detach",
    "alias",
    "lift_fresh",
    "set_",
    "resize_",
}


def _name(func: Any) -> str:
    return func.overloadpacket.__name__


def launches(func: Any) -> bool:
    """Whether ``func`` (an OpOverload) runs a kernel: not a view, not a bare allocation."""
    return not func.is_view and _name(func) not in NO_KERNEL


def _is_h2d(func: Any, args: tuple, kwargs: dict) -> bool:
    if _name(func) in H2D_OPS:
        return True
    if _name(func) in ("_to_copy", "copy_"):
        src = args[1] if _name(func) == "copy_" else args[0]
        dst_dev = args[0].device if _name(func) == "copy_" else kwargs.get("device")
        return isinstance(src, torch.Tensor) and dst_dev is not None and torch.device(dst_dev) != src.device
    return False


@dataclass
class Counts:
    """What one call dispatched. ``ops`` counts every ATen op by name."""

    aten: int = 0
    kernels: int = 0
    syncs: int = 0
    h2d: int = 0
    ops: Counter = field(default_factory=Counter)

    def minus(self, other: Counts) -> Counts:
        return Counts(
            self.aten - other.aten,
            self.kernels - other.kernels,
            self.syncs - other.syncs,
            self.h2d - other.h2d,
            self.ops - other.ops,
        )

    def per(self, n: int) -> dict[str, float]:
        """The counts divided by ``n`` (compressed layers), for tables."""
        k = max(1, n)
        return {"aten": self.aten / k, "kernels": self.kernels / k, "syncs": self.syncs / k, "h2d": self.h2d / k}


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        c = self.counts
        name = _name(func)
        c.aten += 1
        c.ops[name] += 1
        c.kernels += launches(func)
        c.syncs += name in SYNC_OPS
        c.h2d += _is_h2d(func, args, kwargs)
        return func(*args, **kwargs)


def count_ops(call: Callable[[], Any]) -> Counts:
    """Run ``call`` once under ``torch.no_grad`` and count what it dispatched."""
    counter = _Counter()
    with torch.no_grad(), counter:
        call()
    return counter.counts


def added_per_layer(method_call: Callable[[], Any], baseline_call: Callable[[], Any], layers: int) -> dict[str, Any]:
    """ATen ops, kernel ops and syncs ``method_call`` adds over ``baseline_call``, per compressed layer.
    Each is run once first, so one-time work (cached constants, lazy state) is not counted."""
    with torch.no_grad():
        method_call()
        baseline_call()
    added = count_ops(method_call).minus(count_ops(baseline_call))
    return {**added.per(layers), "layers": layers, "total_aten": added.aten, "total_syncs": added.syncs}

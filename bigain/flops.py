"""FLOPs of one call, with torch's FlopCounterMode — including attention on the CPU.

FlopCounterMode has formulas for the CUDA SDPA kernels but none for
``aten._scaled_dot_product_flash_attention_for_cpu``, so on a CPU it silently counts
attention as zero. We add that formula (same count as the CUDA kernels: 4·B·H·Nq·Nk·d).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

_aten = torch.ops.aten


def _cpu_sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)  # shapes: the registration wrapper converts tensors


CUSTOM = {}
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    CUSTOM[_aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of ``fn()`` (matmuls, convolutions and attention; elementwise ops are not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CUSTOM) as counter:
        fn()
    return int(counter.get_total_flops())

"""Random integers that live on the device and inside the graph: a counter-based generator.

ToMe picks a random destination per cell on every call. A ``torch.Generator`` cannot be traced
by ``torch.compile``, and reading or forking RNG state on the host breaks CUDA-graph replay. So
the draws are a hash of (a per-model key tensor, a per-cell id): integer ops that are exact on
every device and backend, hence the same pattern in eager, compiled and graphed runs, on CPU and
GPU. The key advances in place after every draw, so a captured graph draws anew on each replay,
and seeding is writing the key.
"""

from __future__ import annotations

import zlib

import torch

MASK = 0xFFFFFFFF
#: ids of one call span less than this, so consecutive calls never share a hashed input
STRIDE = 1 << 20
_MUL = 0x45D9F3B  # < 2**27: a 32-bit value times it stays exact in int64


def new_key(seed: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A (1,) int64 key tensor for ``seed``."""
    return torch.tensor([seed & MASK], dtype=torch.long, device=device)


def seed_from_state(state: torch.Tensor) -> int:
    """A key seed derived from a ``get_rng_state()`` byte tensor, without consuming the RNG."""
    return zlib.crc32(state.numpy().tobytes()) & MASK


def draw(key: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Uniform 32-bit integers (int64 tensor shaped like ``ids``) for this call; advances ``key``.

    ids: distinct non-negative int64 ids < STRIDE (one per draw). Two multiply–xorshift rounds
    of ``(key + id) mod 2**32``; 10 element-wise ops, each one kernel."""
    z = (ids + key).bitwise_and_(MASK).mul_(_MUL).bitwise_and_(MASK)
    z = z.bitwise_xor_(z >> 16).mul_(_MUL).bitwise_and_(MASK)
    out = z.bitwise_xor_(z >> 16)
    key.add_(STRIDE).bitwise_and_(MASK)
    return out

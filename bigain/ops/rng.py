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

    ids: distinct non-negative int64 ids < STRIDE (one per draw). ``(key + id) mod 2**32``, an
    xor-shift, then three multiply–xorshift rounds; 16 element-wise ops, each one kernel. Why so many:
    consecutive keys differ only above bit 20 and callers read the low bits (``% (sx·sy)``); the first
    xor-shift brings the key's bits down, and with two rounds only (as before) a 2×2 cell drew the same
    slot at the next call with probability 0.227 and two calls later 0.190 instead of 0.25
    (``tests/test_ops.py`` measures it against the binomial spread)."""
    z = (ids + key).bitwise_and_(MASK)
    z = z.bitwise_xor_(z >> 16)
    for _ in range(3):
        z = z.mul_(_MUL).bitwise_and_(MASK)
        z = z.bitwise_xor_(z >> 16)
    key.add_(STRIDE).bitwise_and_(MASK)
    return z

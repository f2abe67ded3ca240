"""Pure tensor operators behind BiGain and its baselines (no diffusers import)."""

from bigain.ops.kv import alpha_at, avg_pool_tokens, blend_downsample, nearest_exact_tokens
from bigain.ops.laplacian import laplacian_score
from bigain.ops.merge import Merge, bipartite_merge, destination_slots, grid_cells

__all__ = [
    "Merge",
    "alpha_at",
    "avg_pool_tokens",
    "bipartite_merge",
    "blend_downsample",
    "destination_slots",
    "grid_cells",
    "laplacian_score",
    "nearest_exact_tokens",
]

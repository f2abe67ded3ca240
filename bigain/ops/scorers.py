"""Per-token scores for L-GTM's destination choice: the Laplacian and its Table 8 ablations (method doc §E).

Every scorer maps tokens x, (B, N, C) or (B, h, w, C) on a row-major h×w grid, to a (B, N)
float32 score, the same contract as :func:`bigain.ops.laplacian.laplacian_score`. L-GTM uses
the score raw: in every cell the **lowest** score becomes the destination
(:func:`bigain.ops.merge.score_slots`, argmin), so "high score" means high-frequency /
high-contrast, a token that should stay a source. The energy-like scores (Laplacian, mean
deviation, ℓ1, ℓ2, variance, DFT) follow that orientation. ``cosine`` is the released
"similarity" scorer as the doc states it: the raw mean cosine to the 4 neighbours, which is
*high* for smooth tokens (so under argmin it makes the least typical token the destination);
``inverse_cosine`` is its negation (the "_inverted" variant), oriented like the Laplacian.

Borders: the Laplacian is zero padded (``laplacian.py``, as in the released code). ``cosine``
averages over the neighbours that exist (2 in a corner, 3 on an edge; a 1×1 grid scores 0).
The other scorers are per token (``mean_deviation`` uses the mean over all N tokens of the
sample) and have no border. A zero token has no direction: the cosine scorers give NaN for it
and its neighbours, as the cosine of ToMe's matching does.

Lean like the other operators: no host reads, constants cached per (shape, device), one to
five kernels per scorer (``tests/test_ops_new.py`` pins the counts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bigain.ops.laplacian import laplacian_score
from bigain.ops.merge import constant

Scorer = Callable[[torch.Tensor, int, int], torch.Tensor]
_NEIGHBOURS = ((0.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 0.0))


def _tokens(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, N, C) tokens from (B, N, C) or (B, h, w, C), checking the grid."""
    if x.ndim == 4:
        if tuple(x.shape[1:3]) != (h, w):
            raise ValueError(f"scorer: grid {tuple(x.shape[1:3])} is not {h}x{w}")
        x = x.reshape(x.shape[0], h * w, x.shape[3])
    if x.ndim != 3 or x.shape[1] != h * w:
        raise ValueError(f"scorer: tokens of shape {tuple(x.shape)} do not form a {h}x{w} grid")
    return x


def laplacian_l1(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Σ_c |(x * L)[n, c]|, the paper's score: exactly :func:`laplacian_score` (zero padding)."""
    return laplacian_score(_tokens(x, h, w), h, w, "l1")


def mean_deviation(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """‖x_n − mean_m x_m‖₂: distance of each token from the sample's mean token (over all N)."""
    t = _tokens(x, h, w).float()
    return torch.linalg.vector_norm(t - t.mean(dim=1, keepdim=True), dim=-1)


def _norm(x: torch.Tensor, h: int, w: int, order: int) -> torch.Tensor:
    t = _tokens(x, h, w)
    if t.dtype == torch.float64:  # vector_norm may widen its accumulator, never narrow it
        t = t.float()
    return torch.linalg.vector_norm(t, ord=order, dim=-1, dtype=torch.float32)


def l1_norm(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Σ_c |x_n,c|, accumulated in float32 (one kernel, no copy of a half input)."""
    return _norm(x, h, w, 1)


def l2_norm(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """‖x_n‖₂, accumulated in float32 (one kernel, no copy of a half input)."""
    return _norm(x, h, w, 2)


def channel_variance(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Population variance of each token over its C channels, (1/C)·Σ_c (x_c − x̄)²
    (the ranking does not depend on the 1/C vs 1/(C−1) choice)."""
    return _tokens(x, h, w).float().var(dim=-1, correction=0)


def _dft_weights(c: int, device: torch.device) -> torch.Tensor:
    """(C//2 + 1,) multiplicity of each one-sided bin in the full spectrum, DC excluded."""

    def make() -> torch.Tensor:
        wts = torch.full((c // 2 + 1,), 2.0, device=device)
        wts[0] = 0.0  # DC
        if c % 2 == 0:
            wts[-1] = 1.0  # Nyquist has no mirror
        return wts

    return constant(("dft-weights", c, device), make)


def dft_energy(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Σ_{k=1}^{C−1} |X_k| with X = DFT of the token along its channel axis: the spectrum's
    non-DC (high-frequency) magnitude. Computed from the one-sided ``rfft`` with each bin
    weighted by how often it occurs in the full spectrum (|X_{C−k}| = |X_k| for real x)."""
    t = _tokens(x, h, w).float()
    spec = torch.fft.rfft(t, dim=-1).abs()
    return spec @ _dft_weights(t.shape[-1], t.device)


def _neighbour_count(h: int, w: int, sign: float, device: torch.device) -> torch.Tensor:
    """(h, w) number of in-grid 4-neighbours of each cell (at least 1), times ``sign``."""

    def make() -> torch.Tensor:
        y = torch.arange(h).view(h, 1)
        x = torch.arange(w).view(1, w)
        count = (y > 0).float() + (y < h - 1).float() + (x > 0).float() + (x < w - 1).float()
        return (count.clamp(min=1) * sign).to(device)

    return constant(("neighbours", h, w, sign, device), make)


def _neighbour_cosine(x: torch.Tensor, h: int, w: int, sign: float) -> torch.Tensor:
    t = _tokens(x, h, w).float()
    b, n, c = t.shape
    u = t / torch.linalg.vector_norm(t, dim=-1, keepdim=True)
    g = u.view(b, h, w, c).permute(0, 3, 1, 2)  # channels-last view, as in the Laplacian
    kernel = constant(
        ("neighbour-kernel", c, g.device), lambda: torch.tensor(_NEIGHBOURS, device=g.device).expand(c, 1, 3, 3)
    )
    total = F.conv2d(g, kernel, padding=1, groups=c)  # Σ of the in-grid neighbours' unit vectors
    dot = (total * g).sum(dim=1)  # (B, h, w): Σ over neighbours of cos(n, neighbour)
    return (dot / _neighbour_count(h, w, sign, g.device)).view(b, n)


def neighbour_cosine(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Mean cosine similarity of each token to its in-grid 4-neighbours (high = smooth)."""
    return _neighbour_cosine(x, h, w, 1.0)


def inverse_neighbour_cosine(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """−(mean cosine to the 4-neighbours): the doc's "_inverted" variant (negation), high = contrast.
    The sign rides on the cached neighbour count, so it costs no extra kernel."""
    return _neighbour_cosine(x, h, w, -1.0)


#: Table 8's scorers by name; all return (B, N) float32 with "high = keep as a source".
SCORERS: dict[str, Scorer] = {
    "laplacian": laplacian_l1,
    "mean_deviation": mean_deviation,
    "l1": l1_norm,
    "l2": l2_norm,
    "variance": channel_variance,
    "dft": dft_energy,
    "cosine": neighbour_cosine,
    "inverse_cosine": inverse_neighbour_cosine,
}


def token_score(x: torch.Tensor, h: int, w: int, scorer: str = "laplacian") -> torch.Tensor:
    """The score named ``scorer`` (a key of :data:`SCORERS`) of x (B, N, C) or (B, h, w, C): (B, N) float32."""
    fn = SCORERS.get(scorer)
    if fn is None:
        raise ValueError(f"scorer must be one of {tuple(SCORERS)}, got {scorer!r}")
    return fn(x, h, w)

"""SiTo, Table 8's scorers and frequency-selected KV against plain-loop references from the method doc."""

from __future__ import annotations

import cmath
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bigain.opcount import count_ops
from bigain.ops.kv_select import select_kv, select_kv_index
from bigain.ops.laplacian import laplacian_score
from bigain.ops.rng import new_key
from bigain.ops.scorers import SCORERS, token_score
from bigain.ops.sito import gaussian_noise, prune_count, sim_score, sito_memory, sito_plan

SIZES = (5, 7, 8, 9, 12)
GRIDS = [(8, 8, 2, 2), (7, 9, 2, 2), (9, 12, 3, 3), (5, 7, 2, 3), (12, 5, 3, 2), (9, 8, 3, 2)]


def tokens(b: int, n: int, c: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(b, n, c, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def no_syncs(call) -> None:
    call()  # cached constants are built on the first call
    counts = count_ops(call)
    assert counts.syncs == 0 and counts.h2d == 0, counts.ops


def kernels(call) -> int:
    call()
    return count_ops(call).kernels


# ----------------------------------------------------------------------------------------------
# Scorers (method doc §E, Table 8)


def neighbours(y: int, x: int, h: int, w: int) -> list[tuple[int, int]]:
    return [(y + dy, x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)) if 0 <= y + dy < h and 0 <= x + dx < w]


def loop_score(name: str, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Method doc §E, one token at a time with Python floats."""
    b, n, c = x.shape
    rows = x.tolist()
    out = torch.empty(b, n, dtype=torch.float64)
    for s in range(b):
        mean = [sum(rows[s][t][k] for t in range(n)) / n for k in range(c)]
        unit = [[v / math.sqrt(sum(e * e for e in r)) for v in r] for r in rows[s]]
        for t in range(n):
            r = rows[s][t]
            if name == "mean_deviation":
                val = math.sqrt(sum((r[k] - mean[k]) ** 2 for k in range(c)))
            elif name == "l1":
                val = sum(abs(v) for v in r)
            elif name == "l2":
                val = math.sqrt(sum(v * v for v in r))
            elif name == "variance":
                mu = sum(r) / c
                val = sum((v - mu) ** 2 for v in r) / c
            elif name == "dft":  # Σ_{k=1}^{C−1} |Σ_c x_c e^{−2πi kc/C}|
                val = sum(abs(sum(r[q] * cmath.exp(-2j * math.pi * f * q / c) for q in range(c))) for f in range(1, c))
            elif name in ("cosine", "inverse_cosine"):
                nb = neighbours(t // w, t % w, h, w)
                cos = [sum(a * e for a, e in zip(unit[t], unit[y * w + z], strict=True)) for y, z in nb]
                val = sum(cos) / len(cos) if cos else 0.0
                val = -val if name == "inverse_cosine" else val
            else:
                raise KeyError(name)
            out[s, t] = val
    return out


def test_scorer_registry() -> None:
    assert set(SCORERS) == {"laplacian", "mean_deviation", "l1", "l2", "variance", "dft", "cosine", "inverse_cosine"}
    with pytest.raises(ValueError, match="scorer must be one of"):
        token_score(torch.zeros(1, 4, 2), 2, 2, "centre")
    with pytest.raises(ValueError, match="do not form"):
        token_score(torch.zeros(1, 10, 2), 3, 3, "l1")


@pytest.mark.parametrize(("h", "w"), [(5, 7), (8, 9), (12, 5), (1, 6), (1, 1)])
def test_laplacian_scorer_is_the_existing_one(h: int, w: int) -> None:
    x = tokens(2, h * w, 5, seed=h * w, dtype=torch.float32)
    assert torch.equal(SCORERS["laplacian"](x, h, w), laplacian_score(x, h, w))
    assert torch.equal(token_score(x.view(2, h, w, 5), h, w), laplacian_score(x, h, w))


@pytest.mark.parametrize("name", [k for k in SCORERS if k != "laplacian"])
@pytest.mark.parametrize(("h", "w", "c"), [(5, 7, 6), (9, 8, 5), (12, 5, 7), (1, 6, 4), (1, 1, 3)])
def test_scorer_matches_loop(name: str, h: int, w: int, c: int) -> None:
    x = tokens(2, h * w, c, seed=h + w + c)
    got = SCORERS[name](x, h, w)
    assert got.dtype == torch.float32 and got.shape == (2, h * w)
    torch.testing.assert_close(got.double(), loop_score(name, x, h, w), rtol=1e-5, atol=1e-5)
    assert torch.equal(SCORERS[name](x.view(2, h, w, c), h, w), got)  # (B, h, w, C) input


def test_scorers_orientation_on_an_edge() -> None:
    """Two flat half-planes of orthogonal tokens: the edge columns are high-frequency."""
    img = torch.zeros(1, 6, 8, 2)
    img[..., :4, 0] = 1.0
    img[..., 4:, 1] = 1.0
    x = img.view(1, 48, 2)
    for name in ("laplacian", "inverse_cosine"):
        s = SCORERS[name](x, 6, 8).view(6, 8)
        assert s[1:5, 3:5].min() > s[1:5, [0, 7]].max(), name
    cos = SCORERS["cosine"](x, 6, 8).view(6, 8)
    assert cos[1:5, 3:5].max() < 1 and torch.allclose(cos[:, [0, 1, 6, 7]], torch.ones(6, 4))


def test_scorers_half_input_no_syncs_and_op_budget() -> None:
    # kernels per call, float32 input (a half input adds one cast where the scorer needs float32)
    budget = {"laplacian": 2, "mean_deviation": 3, "l1": 1, "l2": 1, "variance": 1, "dft": 3, "cosine": 6}
    budget["inverse_cosine"] = budget["cosine"]
    x = tokens(2, 63, 6, dtype=torch.float32)
    for name, fn in SCORERS.items():
        assert fn(x.half(), 7, 9).dtype == torch.float32
        no_syncs(lambda fn=fn: fn(x, 7, 9))
        assert kernels(lambda fn=fn: fn(x, 7, 9)) <= budget[name], name
        assert kernels(lambda fn=fn, xh=x.half(): fn(xh, 7, 9)) <= budget[name] + 1, name


@pytest.mark.parametrize("name", ["dft", "cosine", "mean_deviation"])
def test_scorers_compile_fullgraph(name: str) -> None:
    x = tokens(2, 35, 6, dtype=torch.float32)
    fn = SCORERS[name]
    eager = fn(x, 5, 7)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, 5, 7), eager)


# ----------------------------------------------------------------------------------------------
# Frequency-selected KV (method doc §E, Table 12)


def loop_select(score: torch.Tensor, h: int, w: int, s: int, highest: bool) -> list[list[int]]:
    """One token per s×s cell of the ceil-covered grid, partial cells choosing among their own tokens;
    first in row-major order on ties."""
    out = []
    for row in score.tolist():
        picks = []
        for i in range(math.ceil(h / s)):
            for j in range(math.ceil(w / s)):
                cell = [y * w + x for y in range(i * s, min(h, i * s + s)) for x in range(j * s, min(w, j * s + s))]
                vals = [row[t] for t in cell]
                best = max(vals) if highest else min(vals)
                picks.append(cell[vals.index(best)])
        out.append(picks)
    return out


@pytest.mark.parametrize("h", SIZES)
@pytest.mark.parametrize("w", SIZES)
@pytest.mark.parametrize("s", [2, 3])
def test_select_kv_matches_loop(h: int, w: int, s: int) -> None:
    x = tokens(2, h * w, 3, seed=h * 13 + w)
    score = laplacian_score(x, h, w)
    for highest in (True, False):
        ref = loop_select(score, h, w, s, highest)
        idx = select_kv_index(score, h, w, s, highest)
        assert idx.tolist() == ref
        out = select_kv(x, h, w, s, score, highest)
        assert out.shape == (2, math.ceil(h / s) * math.ceil(w / s), 3)
        assert torch.equal(out, torch.stack([x[b, ref[b]] for b in range(2)]))


def test_select_kv_ties_go_to_the_first_token_of_the_cell() -> None:
    score = torch.randint(0, 3, (3, 7 * 9), generator=torch.Generator().manual_seed(1)).float()
    for highest in (True, False):
        assert select_kv_index(score, 7, 9, 2, highest).tolist() == loop_select(score, 7, 9, 2, highest)
        assert select_kv_index(score, 7, 9, 3, highest).tolist() == loop_select(score, 7, 9, 3, highest)


def test_select_kv_stride_one_is_identity_and_bad_grid_fails() -> None:
    x = tokens(1, 20, 2)
    assert torch.equal(select_kv(x, 4, 5, 1, laplacian_score(x, 4, 5)), x)
    with pytest.raises(ValueError, match="do not form"):
        select_kv(x, 3, 5, 2, torch.zeros(1, 20))


def test_select_kv_lean_and_compiles() -> None:
    x = tokens(2, 63, 4, dtype=torch.float32)
    score = laplacian_score(x, 7, 9)
    no_syncs(lambda: select_kv(x, 7, 9, 2, score, True))
    assert kernels(lambda: select_kv(x, 7, 9, 2, score, False)) <= 4  # index, argmin, index, gather
    eager = select_kv(x, 7, 9, 3, score, True)  # builds the cell table outside the graph
    compiled = torch.compile(select_kv, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, 7, 9, 3, score, True), eager)


# ----------------------------------------------------------------------------------------------
# SiTo (method doc §J)


def loop_sito(metric, noise, h, w, ratio, sx, sy, alpha, beta):
    """Method doc §J steps 1–7 for one sample, with the N×N cosine matrix and Python lists.
    Returns (bases per cell, pruned positions, source position of every token)."""
    n = h * w
    u = metric / metric.norm(dim=-1, keepdim=True)
    cos = (u @ u.T).tolist()
    eps = noise.tolist()
    score = [beta * sum(cos[i]) + alpha * eps[i] for i in range(n)]
    bases = []
    for i in range(h // sy):
        for j in range(w // sx):
            cell = [(i * sy + a) * w + j * sx + c for a in range(sy) for c in range(sx)]
            vals = [score[t] for t in cell]
            bases.append(cell[vals.index(max(vals))])
    cand = [t for t in range(n) if t not in bases]
    v = {t: max(cos[t][b] for b in bases) for t in cand}
    p = min(int(n * ratio), len(cand))
    pruned = sorted(cand, key=lambda t: (-v[t], t))[:p]
    kept = [t for t in range(n) if t not in pruned]
    source = list(range(n))
    for t in pruned:
        source[t] = max(kept, key=lambda k: cos[t][k])
    return bases, pruned, source


@pytest.mark.parametrize(("h", "w", "sx", "sy"), GRIDS)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize(("alpha", "beta"), [(0.1, 1.0), (3.0, 0.5)])
def test_sito_matches_loop(h: int, w: int, sx: int, sy: int, ratio: float, alpha: float, beta: float) -> None:
    b, n, c = 2, h * w, 6
    metric, x = tokens(b, n, c, seed=n), tokens(b, n, 5, seed=n + 1)
    noise = gaussian_noise(new_key(h * 100 + w), b, n)
    plan = sito_plan(metric, h, w, ratio, sx, sy, alpha=alpha, beta=beta, noise=noise)
    nb = (h // sy) * (w // sx)
    assert plan.n_prune == prune_count(n, ratio, nb)[1] == min(int(n * ratio), n - nb)
    assert plan.capped == (int(n * ratio) > n - nb)
    kept_x = plan.prune(x)
    assert kept_x.shape == (b, plan.n_keep, 5)
    back = plan.recover(kept_x)
    for s in range(b):
        bases, pruned, source = loop_sito(metric[s], noise[s], h, w, ratio, sx, sy, alpha, beta)
        assert plan.base[s].tolist() == bases
        assert sorted(plan.pruned[s].tolist()) == sorted(pruned)
        assert sorted(plan.kept[s].tolist()) == sorted(set(range(n)) - set(pruned))
        assert plan.source()[s].tolist() == source
        assert torch.equal(back[s], x[s, source])
    y = torch.randn(b, plan.n_keep, 5, dtype=torch.float64)
    assert torch.equal(plan.prune(plan.recover(y)), y)  # kept tokens keep their own outputs


def test_sito_key_is_deterministic_and_advances() -> None:
    metric = tokens(2, 63, 4)

    def plan(key):
        return sito_plan(metric, 7, 9, alpha=5.0, key=key)

    a, b = plan(new_key(11)), plan(new_key(11))
    assert torch.equal(a.order, b.order) and torch.equal(a.base, b.base) and torch.equal(a.flat, b.flat)
    key = new_key(11)
    first, second = plan(key), plan(key)  # the key advanced in place: a new draw
    assert torch.equal(first.base, a.base) and not torch.equal(second.base, first.base)
    assert not torch.equal(plan(new_key(12)).base, a.base)
    quiet = sito_plan(metric, 7, 9)  # no noise at all: deterministic from the metric alone
    assert torch.equal(quiet.order, sito_plan(metric, 7, 9).order)
    with pytest.raises(ValueError, match="not both"):
        sito_plan(metric, 7, 9, key=new_key(0), noise=torch.zeros(2, 63))


def test_gaussian_noise_is_standard_normal() -> None:
    z = gaussian_noise(new_key(0), 4, 65536)
    assert z.shape == (4, 65536) and z.dtype == torch.float32 and bool(z.isfinite().all())
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z.abs() < 1).float().mean()) - 0.6827) < 0.01
    with pytest.raises(ValueError, match="exceed"):
        gaussian_noise(new_key(0), 16, 1 << 16)


def test_sito_identity_cases_and_batch_of_one() -> None:
    x = tokens(2, 35, 3)
    for plan in (sito_plan(x, 5, 7, 0.0), sito_plan(x, 5, 7, 0.5, sx=8, sy=8)):  # nothing to prune / no cell
        assert plan.n_prune == 0 and plan.n_keep == 35 and plan.base.shape == (2, 0)
        assert torch.equal(plan.recover(plan.prune(x)), x)
    with pytest.raises(ValueError, match="do not form"):
        sito_plan(x, 5, 6)
    one = sito_plan(x[:1], 5, 7, 0.5, key=new_key(3))
    both = sito_plan(x, 5, 7, 0.5, noise=gaussian_noise(new_key(3), 1, 35))  # (1, N) noise broadcasts
    assert torch.equal(one.order[0], both.order[0]) and torch.equal(one.prune(x[:1])[0], both.prune(x)[0])


class _Largest(TorchDispatchMode):
    """Bytes of the largest storage any op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def test_sito_memory_at_4096_tokens() -> None:
    h = w = 64
    n, c = h * w, 8
    metric = tokens(1, n, c, dtype=torch.float32)
    for ratio in (0.5, 0.7):
        sito_plan(metric, h, w, ratio, key=new_key(0))
        mode = _Largest()
        with torch.no_grad(), mode:
            sito_plan(metric, h, w, ratio, key=new_key(0))
        mem = sito_memory(1, n, c, h, w, ratio, itemsize=4)
        assert mode.largest == mem["torch"] == n * n // 4 * 4  # the (1, 4096, 1024) similarity of step 4
        assert mem["nxn"] == 4 * mem["torch"]
    sd = sito_memory(1, 4096, 320, 64, 64, 0.5, itemsize=2)  # SD level 1, fp16
    assert (sd["nxn"], sd["torch"], sd["fused"]) == (32 << 20, 8 << 20, 5 << 20)


def test_sito_lean_no_syncs_and_compiles() -> None:
    metric = tokens(2, 63, 6, dtype=torch.float32)
    x = tokens(2, 63, 5, dtype=torch.float32)
    key = new_key(0)
    no_syncs(lambda: sito_plan(metric, 7, 9, key=key))
    assert kernels(lambda: sito_plan(metric, 7, 9)) <= 20  # 18 measured (3 bmm + 2 max on CPU)
    assert kernels(lambda: sito_plan(metric, 7, 9, key=key)) <= 46  # 46: the Gaussian draw adds 27
    assert kernels(lambda: gaussian_noise(key, 2, 63)) <= 28  # the counter hash is 16 of them
    plan = sito_plan(metric, 7, 9, key=key)
    y = plan.prune(x)
    assert kernels(lambda: plan.prune(x)) == 1 and kernels(lambda: plan.recover(y)) == 1

    def run(m, k):
        p = sito_plan(m, 7, 9, 0.5, key=k)
        return p.order, p.base, p.flat

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    k_eager, k_comp = new_key(5), new_key(5)
    for _ in range(2):  # the key advances identically inside the graph
        for a, b in zip(run(metric, k_eager), compiled(metric, k_comp), strict=True):
            assert torch.equal(a, b)
    assert torch.equal(k_eager, k_comp)


def test_sim_score_is_the_row_sum_of_the_cosine_matrix() -> None:
    u = torch.nn.functional.normalize(tokens(2, 40, 7), dim=-1)
    torch.testing.assert_close(sim_score(u), (u @ u.transpose(1, 2)).sum(-1))
    half = sim_score(u.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, sim_score(u).float(), rtol=1e-2, atol=2e-2)

"""Triton kernels against their torch references in the interpreter (TRITON_INTERPRET=1, CPU
tensors), and the dispatcher's rules: CUDA only, opt-out by env, lazy import, driver fallback.

The interpreter flag must be set before triton itself is imported (triton's own library
functions are decorated at import), and the rest of the test session imports triton through
diffusers. So the kernel cases here carry the ``triton_interpreter`` marker: the normal run drops
them at collection (tests/conftest.py) and ``test_kernels_under_the_interpreter`` runs them all in
a subprocess with the flag set. ``TRITON_INTERPRET=1 pytest tests/test_triton.py`` runs them directly."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from bigain.methods import IEKVD, LGTM, ToMe
from bigain.ops import fused
from bigain.ops.kv import blend_downsample
from bigain.ops.laplacian import laplacian_score
from bigain.ops.merge import bipartite_merge, destination_slots, slots_to_index

pytest.importorskip("triton")
KERNELS = "bigain.ops._kernels"
INTERP = os.environ.get("TRITON_INTERPRET") == "1"
interp = pytest.mark.triton_interpreter  # collected only under TRITON_INTERPRET=1 (tests/conftest.py)


@pytest.fixture(scope="module")
def k() -> ModuleType:
    return importlib.import_module(KERNELS)


@pytest.mark.skipif(INTERP, reason="already inside the interpreter run")
def test_kernels_under_the_interpreter(tmp_path: Path, deselected_kernel_cases: list[str]) -> None:
    """Every kernel case of this file, in a TRITON_INTERPRET=1 subprocess: all collected, all passed."""
    report = tmp_path / "kernels.xml"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "triton_interpreter",
           f"--junitxml={report}", __file__]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    outcomes = {
        case.get("name"): next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        for case in ET.parse(report).getroot().iter("testcase")
    }
    assert outcomes and set(outcomes.values()) == {"passed"}, outcomes
    # the cases this run dropped at collection are exactly ones the interpreter ran and passed
    assert set(deselected_kernel_cases) <= set(outcomes), set(deselected_kernel_cases) - set(outcomes)


def tokens(b: int, n: int, c: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(b, n, c, generator=torch.Generator().manual_seed(seed)).to(dtype)


GRIDS = [(8, 8, 2, 2, 16), (7, 9, 2, 2, 5), (9, 6, 3, 2, 20), (5, 7, 2, 3, 3), (6, 6, 3, 3, 7)]


@interp
@pytest.mark.parametrize(("h", "w", "sx", "sy", "c"), GRIDS)
@pytest.mark.parametrize("mode", ["laplacian", "laplacian-code"])
def test_laplacian_slots_kernel_matches_torch(k, h: int, w: int, sx: int, sy: int, c: int, mode: str) -> None:
    x = tokens(2, h * w, c, seed=h * w)
    slots, scores = k.laplacian_slots(x, h, w, sx, sy, code=mode == "laplacian-code")
    ref = laplacian_score(x, h, w)
    torch.testing.assert_close(scores, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(slots, destination_slots(h, w, sx, sy, mode, scores=ref))


@interp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_laplacian_kernel_l2_fp16_and_strided_input(k, dtype: torch.dtype) -> None:
    h, w, c = 6, 10, 12
    x = tokens(2, c, h * w, seed=3, dtype=dtype).transpose(1, 2)  # (B, N, C) view with channel stride N
    assert not x.is_contiguous()
    slots, scores = k.laplacian_slots(x, h, w, 2, 2, l2=True)
    ref = laplacian_score(x, h, w, "l2")
    torch.testing.assert_close(scores, ref, rtol=1e-5, atol=1e-4)
    assert torch.equal(slots, destination_slots(h, w, 2, 2, "laplacian", scores=ref))


@interp
def test_laplacian_kernel_ties_take_the_first_slot(k) -> None:
    x = torch.zeros(1, 16, 4)  # flat grid: every score is 0
    slots, scores = k.laplacian_slots(x, 4, 4, 2, 2)
    assert scores.abs().max() == 0 and slots.max() == 0


@interp
@pytest.mark.parametrize(
    ("h", "w", "s", "c"), [(8, 8, 2, 16), (7, 9, 2, 5), (9, 6, 3, 20), (10, 10, 3, 7), (5, 8, 4, 3), (118, 5, 4, 2)]
)
def test_kv_blend_kernel_matches_torch(k, h: int, w: int, s: int, c: int) -> None:
    x = tokens(2, h * w, c, seed=s)
    for alpha in (0.9, 1.2, -0.3, torch.tensor([0.8, 1.2])):
        out = k.kv_blend(x, h, w, s, alpha)
        assert out.is_contiguous() and out.shape == (2, (h // s) * (w // s), c)
        torch.testing.assert_close(out, blend_downsample(x, h, w, s, alpha), rtol=1e-5, atol=1e-5)


@interp
def test_kv_blend_kernel_fp16_and_strided(k) -> None:
    h, w, c = 9, 7, 10
    x = tokens(2, c, h * w, seed=4, dtype=torch.float16).transpose(1, 2)
    out = k.kv_blend(x, h, w, 2, torch.tensor([0.5, 1.1]))
    ref = blend_downsample(x.float(), h, w, 2, torch.tensor([0.5, 1.1]))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=2e-3)


@interp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("m", "n", "c"), [(37, 19, 20), (70, 65, 33), (5, 130, 8)])
def test_row_max_kernel_matches_bmm_max(k, dtype: torch.dtype, m: int, n: int, c: int) -> None:
    a, d = tokens(2, m, c, seed=m, dtype=dtype), tokens(2, n, c, seed=n, dtype=dtype)
    v, i = k.row_max(a, d)
    rv, ri = torch.bmm(a.float(), d.float().transpose(1, 2)).to(dtype).max(-1)
    assert v.dtype == dtype
    torch.testing.assert_close(v, rv, rtol=1e-5 if dtype == torch.float32 else 1e-3, atol=1e-4)
    assert torch.equal(i, ri)


@interp
def test_row_max_kernel_ties_take_the_first_index(k) -> None:
    a = torch.ones(1, 3, 16)
    d = torch.ones(1, 70, 16)  # every product equal, across two column tiles
    v, i = k.row_max(a, d)
    assert torch.equal(i, torch.zeros(1, 3, dtype=torch.long)) and torch.equal(v, torch.full((1, 3), 16.0))


@interp
def test_merge_through_the_kernel_equals_the_torch_merge(k, monkeypatch) -> None:
    """bipartite_merge with the fused row max gives the same Merge as the torch path."""
    h = w = 8
    x = tokens(2, h * w, 16, seed=9)
    dst = slots_to_index(destination_slots(h, w, 2, 2, "laplacian", scores=laplacian_score(x, h, w)), h, w, 2, 2)
    ref = bipartite_merge(x, dst, 0.6)
    monkeypatch.setattr(fused, "enabled", lambda t: True)
    monkeypatch.setitem(fused._state, "kernels", k)
    monkeypatch.setitem(fused._state, "tried", True)
    got = bipartite_merge(x, dst, 0.6)
    assert torch.equal(got.flat, ref.flat) and torch.equal(got.kept, ref.kept) and torch.equal(got.count, ref.count)


# ---- the dispatcher ---------------------------------------------------------------------------


def test_dispatcher_uses_torch_for_cpu_tensors() -> None:
    x = tokens(2, 36, 8)
    assert not fused.enabled(x)
    slots, scores = fused.laplacian_slots(x, 6, 6, 2, 2, "laplacian-code")
    assert torch.equal(scores, laplacian_score(x, 6, 6))
    assert torch.equal(slots, destination_slots(6, 6, 2, 2, "laplacian-code", scores=scores))
    assert torch.equal(fused.kv_downsample(x, 6, 6, 2, 0.9), blend_downsample(x, 6, 6, 2, 0.9))
    v, i = fused.row_max(x, x[:, :5])
    rv, ri = torch.bmm(x, x[:, :5].transpose(1, 2)).max(-1)
    assert torch.equal(v, rv) and torch.equal(i, ri)


def test_dispatcher_rejects_bad_modes() -> None:
    with pytest.raises(ValueError, match="mode"):
        fused.laplacian_slots(tokens(1, 16, 2), 4, 4, 2, 2, "random")
    with pytest.raises(ValueError, match="norm"):
        fused.laplacian_slots(tokens(1, 16, 2), 4, 4, 2, 2, norm="l3")


@pytest.mark.parametrize(("value", "off"), [("", False), ("0", False), ("false", False), ("1", True), ("yes", True)])
def test_disable_env(monkeypatch, value: str, off: bool) -> None:
    monkeypatch.setenv(fused.ENV_DISABLE, value)
    assert fused.env_disabled() is off  # read once at import for the default


def test_allow_switches_the_path_per_context() -> None:
    before = fused.disabled()
    with fused.allow(False):
        assert fused.disabled()
        with fused.allow(True):
            assert not fused.disabled()
        fused.set_allowed(True)  # inside a block: undone when the block ends
        assert not fused.disabled()
    assert fused.disabled() is before


def test_driver_failure_falls_back_to_torch_once(monkeypatch) -> None:
    def boom(*_a, **_k):
        raise RuntimeError("0 active drivers ([]). There should only be one.")

    monkeypatch.setattr(fused, "enabled", lambda t: True)
    monkeypatch.setitem(fused._state, "kernels", SimpleNamespace(laplacian_slots=boom, kv_blend=boom, row_max=boom))
    monkeypatch.setitem(fused._state, "tried", True)
    monkeypatch.setitem(fused._state, "broken", False)
    x = tokens(2, 36, 8)
    with pytest.warns(RuntimeWarning, match="Triton launch failed"):
        out = fused.kv_downsample(x, 6, 6, 2, 0.7)
    assert torch.equal(out, blend_downsample(x, 6, 6, 2, 0.7)) and fused._state["broken"]


def test_other_kernel_errors_are_not_swallowed(monkeypatch) -> None:
    def bug(*_a, **_k):
        raise RuntimeError("shape mismatch in kernel")

    monkeypatch.setattr(fused, "enabled", lambda t: True)
    monkeypatch.setitem(fused._state, "kernels", SimpleNamespace(kv_blend=bug))
    monkeypatch.setitem(fused._state, "tried", True)
    monkeypatch.setitem(fused._state, "broken", False)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fused.kv_downsample(tokens(1, 16, 2), 4, 4, 2, 0.5)


def test_importing_bigain_never_imports_the_kernels() -> None:
    code = (
        "import sys, torch, bigain, bigain.bench\n"
        "m = bigain.LGTM(); x = torch.randn(2, 64, 8)\n"
        "from bigain.ops import fused as f; f.laplacian_slots(x, 8, 8, 2, 2)\n"
        "print('bigain.ops._kernels' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False"


@interp
@pytest.mark.parametrize("method", [LGTM(ratio=0.6), LGTM(dst="laplacian-code"), ToMe(ratio=0.5), IEKVD(alpha=1.1)])
def test_patched_models_through_the_kernels_match_torch(k, monkeypatch, unet, unet_inputs, dit, dit_inputs, method):
    """The whole path (processor → plan → dispatcher → kernels) on tiny models, fused vs torch."""
    import bigain

    monkeypatch.setattr(fused, "enabled", lambda t: t.dtype in fused.DTYPES and not fused.disabled())
    monkeypatch.setitem(fused._state, "kernels", k)
    monkeypatch.setitem(fused._state, "tried", True)
    outs = {}
    for path in ("1", "0"):
        monkeypatch.setenv(fused.ENV_DISABLE, path)
        with torch.no_grad():
            bigain.apply(unet, method)
            bigain.seed(unet, 0)
            x, t, enc = unet_inputs
            u = unet(x, t, enc).sample
            bigain.apply(dit, method)
            bigain.seed(dit, 0)
            x, t, labels = dit_inputs
            outs[path] = (u, dit(x, timestep=t, class_labels=labels).sample)
    for a, b in zip(outs["1"], outs["0"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

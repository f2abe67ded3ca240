"""Shared fixtures and helpers: tiny diffusers denoisers built from configs (random weights, CPU),
the launched Gradio app, a thread runner, and the collection rule for the Triton interpreter cases."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

import pytest
import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

torch.set_num_threads(1)

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


def tiny_unet(first_level_attention: bool = True) -> UNet2DConditionModel:
    """A two-level SD-style U-Net whose full-resolution level has transformer blocks
    (diffusers' own tiny test config has attention only at the downsampled level)."""
    down = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    if not first_level_attention:  # SDXL-shaped: no attention at the highest resolution
        down, up = ("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D")
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def tiny_dit(num_layers: int = 6) -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=num_layers,
        sample_size=16,
        patch_size=2,
        norm_num_groups=32,
    ).eval()


@pytest.fixture
def unet() -> UNet2DConditionModel:
    return tiny_unet()


@pytest.fixture
def dit() -> DiTTransformer2DModel:
    return tiny_dit()


@pytest.fixture
def unet_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor(500), torch.randn(2, 7, 32, generator=g)


@pytest.fixture
def dit_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor([500, 500]), torch.tensor([1, 2])


# ---- concurrency ---------------------------------------------------------------------------------


def run_in_threads(work: Callable[[K], R], args: Sequence[K], repeats: int) -> dict[K, list[R]]:
    """Call ``work(a)`` ``repeats`` times in one thread per ``a``, all threads released together.

    Returns every result per argument, in call order; the first exception any thread raised is re-raised."""
    results: dict[K, list[R]] = {a: [] for a in args}
    errors: list[BaseException] = []
    start = threading.Barrier(len(args))

    def run(a: K) -> None:
        try:
            start.wait(timeout=60)
            for _ in range(repeats):
                results[a].append(work(a))
        except BaseException as e:  # surfaced in the calling thread below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(a,), name=f"worker-{i}") for i, a in enumerate(args)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# ---- the launched app ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """The Gradio app (``app.demo``) served on a free local port for the session; its URL."""
    import app

    _, url, _ = app.launch(app.demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                           quiet=True)  # fmt: skip
    try:
        yield url
    finally:
        app.demo.close()


# ---- Triton kernel cases: only under the interpreter ---------------------------------------------

TRITON_INTERPRETER = "triton_interpreter"
_DESELECTED_KERNEL_CASES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{TRITON_INTERPRETER}: a Triton kernel case; collected only when TRITON_INTERPRET=1 is set "
        "(tests/test_triton.py::test_kernels_under_the_interpreter runs them all in such a subprocess)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside the interpreter, drop the kernel cases at collection (one "deselected" count, not a skip
    line each): triton is imported by then, too late for the flag, so they run in a subprocess instead."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return
    kept = [item for item in items if item.get_closest_marker(TRITON_INTERPRETER) is None]
    dropped = [item for item in items if item.get_closest_marker(TRITON_INTERPRETER) is not None]
    config.stash[_DESELECTED_KERNEL_CASES] = [item.name for item in dropped]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def deselected_kernel_cases(request: pytest.FixtureRequest) -> list[str]:
    """Names of the Triton kernel cases this run dropped at collection (empty if none were selected)."""
    return request.config.stash.get(_DESELECTED_KERNEL_CASES, [])

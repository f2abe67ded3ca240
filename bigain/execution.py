"""How a (patched) denoiser call runs: eager, ``torch.compile``, or replayed from a CUDA graph.

At batch 1–2 a GPU waits for the host, so the way to make token compression pay there is to
stop paying the host per op: compile the call into fused kernels, or capture it once and replay
it (``../shared/docs/gpu-speed.md``). Patched models are built to allow both (no graph breaks,
no host syncs, random draws from a key tensor on the device). The host's decisions about a call
(the t = 0 step, rebuild cached assignments) select *which* graph runs:

* ``eager``: the model as is (default; the only mode that records pictures).
* ``compile``: ``torch.compile(fullgraph=True)`` of the denoiser; one compiled graph per method and
  kind of step, reused across calls (dynamo guards on the method object and the step).
* ``cudagraph``: one ``torch.cuda.CUDAGraph`` per method, kind of step and input shapes, captured
  on first use after two warm-up calls and replayed with the inputs copied into static buffers.
  This is the path for ZeroGPU Spaces, which do not support ``torch.compile``. CUDA only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map

from bigain import patch
from bigain.errors import BadInput

MODES = ("eager", "compile", "cudagraph")
#: one compiled graph per (method, kind of step): dynamo's default limit of 8 is too few for a
#: model serving every method side by side
RECOMPILE_LIMIT = 64

Call = Callable[..., torch.Tensor]  # call(denoiser, *inputs) -> tensor; inputs: tensors or dicts of tensors


def _signature(inputs: tuple[Any, ...]) -> tuple:
    """What a graph is specialised on: the structure, shapes and dtypes of the inputs."""
    leaves, spec = tree_flatten(inputs)
    return str(spec), tuple((t.shape, t.dtype) if isinstance(t, torch.Tensor) else t for t in leaves)


def check_mode(mode: str, device: torch.device | str | None = None) -> str:
    """Validate an execution mode for a device; a clear ValueError where it cannot run."""
    if mode not in MODES:
        raise BadInput(f"execution mode must be one of {MODES}, got {mode!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if mode == "cudagraph" and dev.type != "cuda":
        raise BadInput(
            f"the 'cudagraph' mode needs a CUDA device; this model runs on {dev.type} (use eager or compile)"
        )
    return mode


def default_device() -> str:
    """``cuda`` where a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def available_modes(device: torch.device | str | None = None, compile_ok: bool = True) -> list[str]:
    """The modes that can run on ``device`` (``compile_ok=False`` where torch.compile is not supported,
    e.g. ZeroGPU Spaces)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [m for m in MODES if (m != "compile" or compile_ok) and (m != "cudagraph" or dev.type == "cuda")]


class Executor:
    """Runs ``call(denoiser, *inputs)`` in one execution mode, with the host's step decisions.

    ``t_host`` is the timesteps as the host knows them (a number or list), ``fresh`` marks a new
    batch (the classifier) so cached assignments are rebuilt."""

    def __init__(self, denoiser: torch.nn.Module, mode: str = "eager") -> None:
        self.net = denoiser
        self.device = next(denoiser.parameters()).device
        self.mode = check_mode(mode, self.device)
        self._compiled: torch.nn.Module | None = None
        self._graphs: dict[tuple, _Graph] = {}
        self._pool: Any = None

    def __call__(self, call: Call, *tensors: torch.Tensor, t_host: Any = None, fresh: bool = False) -> torch.Tensor:
        step = patch.decide_step(self.net, t_host, fresh)
        if self.mode == "eager":
            with patch.host_step(self.net, step=step):
                return call(self.net, *tensors)
        if self.mode == "compile":
            with patch.host_step(self.net, step=step):
                self._warm(call, tensors, step)
                return call(self._compiled_net(), *tensors)
        return self._replay(call, tensors, step)

    def _warm(self, call: Call, tensors: tuple[torch.Tensor, ...], step: patch.Step) -> None:
        """One eager call before the first compiled one of a kind: the per-grid index constants it builds
        would otherwise change what the first compiled graph guards on and force a second compile. The
        random key is put back, so the compiled call draws what an eager one would."""
        kind = (patch.active_method(self.net), step, _signature(tensors))
        seen = self.__dict__.setdefault("_warmed", set())
        if kind in seen:
            return
        seen.add(kind)
        key = patch.own_key(self.net)
        saved = None if key is None else key.clone()
        with torch.no_grad():
            call(self.net, *tensors)
        if key is not None and saved is not None:
            key.copy_(saved)

    def _compiled_net(self) -> torch.nn.Module:
        if self._compiled is None:
            cfg = torch._dynamo.config
            cfg.recompile_limit = max(getattr(cfg, "recompile_limit", 8), RECOMPILE_LIMIT)
            self._compiled = torch.compile(self.net, fullgraph=True, dynamic=False)
        return self._compiled

    def _replay(self, call: Call, tensors: tuple[torch.Tensor, ...], step: patch.Step) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("bigain: the cudagraph mode is for inference; run it under torch.no_grad()")
        method = patch.active_method(self.net)
        key = (method, step, getattr(call, "__code__", call), _signature(tensors))
        graph = self._graphs.get(key)
        if graph is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = self._graphs[key] = _Graph(self.net, call, tensors, step, self._pool)
        return graph.replay(tensors)


class _Graph:
    """One captured denoiser call with static input and output buffers."""

    def __init__(self, net: torch.nn.Module, call: Call, tensors: tuple[torch.Tensor, ...], step: Any, pool: Any):
        patch.own_key(net)  # the graph reads this thread's key tensor; it must exist before capture
        if patch.recording(net):
            raise RuntimeError("bigain: recording pictures needs the eager mode")
        self.inputs = tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tensors)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), patch.host_step(net, step=step):
            for _ in range(2):  # warm up allocator, cuBLAS workspaces and lazy constants off the graph
                call(net, *self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), patch.host_step(net, step=step):
            self.output = call(net, *self.inputs)
        # the merges a later "reuse" graph reads live in this graph's pool: keep them allocated
        self.keep = patch.cached_assignments(net)

    def replay(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        for static, t in zip(tree_flatten(self.inputs)[0], tree_flatten(tensors)[0], strict=True):
            if isinstance(static, torch.Tensor):
                static.copy_(t)
        self.graph.replay()
        return self.output.clone()  # the next replay overwrites the static output

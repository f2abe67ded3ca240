"""What every benchmark command shares: devices, dtypes, threads, the provenance of a result, logging."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from bigain import threads
from bigain.ops import fused
from bigain.provenance import provenance, short_commit

#: packages whose versions a benchmark result records (besides bigain, torch and diffusers)
PACKAGES = ("tomesd", "triton")


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_dtype(name: str) -> torch.dtype:
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
    table |= {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"--dtype must be one of fp32, fp16, bf16, got {name!r}")
    return table[name]


def parse_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return dev


def setup(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """Device, dtype and threads of a speed or count run (fp16 only on CUDA)."""
    device, dtype = parse_device(args.device), parse_dtype(args.dtype)
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("fp16 is for CUDA; on the CPU use fp32 (or bf16)")
    threads.configure(args.threads or None)  # unset: the CPUs this process may use, not the host's cores
    return device, dtype


def command(args: argparse.Namespace) -> str:
    """The command line that produced a result (``main``'s argv, or the process's)."""
    argv = getattr(args, "argv", None)
    return "python -m bigain.bench " + " ".join(argv if argv is not None else sys.argv[1:])


def environment(device: torch.device, cmd: str) -> dict[str, Any]:
    """The provenance of a result (:func:`bigain.provenance.provenance`, under ``provenance``) and the
    flat fields the tables print: device, its label (with the thread count on a CPU), versions, commit."""
    prov = provenance(device, cmd, packages=PACKAGES)
    versions = prov["versions"]
    name = prov["device_name"]
    if device.type != "cuda":
        n = prov["threads"]
        name = f"{name} ({n} thread{'s' if n != 1 else ''})"
    env: dict[str, Any] = {"device": str(device), "device_name": name}
    env |= {p: versions.get(p) for p in ("torch", "diffusers", *PACKAGES)}
    env |= {"python": prov["python"], "git": short_commit(prov["git_commit"]), "threads": prov["threads"]}
    env["cpu_count"] = prov["cpu_count"]
    try:
        env["loadavg_start"] = list(os.getloadavg())
    except OSError:
        env["loadavg_start"] = None
    env["provenance"] = prov
    return env


def reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}".strip()


@contextmanager
def triton_path(on: bool) -> Iterator[None]:
    """Run the block with the fused kernels allowed (on) or forced off."""
    with fused.allow(on):
        yield


def count_call_flops(call: Any) -> int:
    from bigain.flops import count_flops  # adds the CPU attention formula FlopCounterMode lacks

    with triton_path(False):  # custom kernels are invisible to the counter: count the torch path
        return count_flops(call)

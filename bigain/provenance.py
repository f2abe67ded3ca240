"""Run provenance: the one record of *what produced a result file*, written by every evaluation,
training and benchmark result.

Use::

    from bigain.provenance import provenance, summary, markdown_lines

    prov = provenance(device="cuda:0", command="python -m bigain eval digits")  # at the start of a run
    record["provenance"] = prov                  # the full record, in the result's JSON
    row["run"] = summary(prov)                   # the compact form: command, device label, commit, time
    md_lines += markdown_lines(prov)             # "Command: `…`" / "Device: …" / "Commit: `…`, <time>"

:func:`provenance` returns a JSON-ready dict:

* ``command`` — the command line (given, or rebuilt from ``sys.argv``: ``python -m <module> <args>``);
* ``git_commit`` — see :func:`git_commit`: ``"<40-hex HEAD>"``, ``"<40-hex>-dirty"`` (uncommitted
  changes under ``bigain/``), ``"<40-hex>-dirty?"`` (not checked) or None (no checkout);
* ``timestamp`` — UTC, ISO 8601 to the second: ``"2026-01-31T12:34:56Z"``;
* ``device`` (as given: ``"cpu"``, ``"cuda:0"``), ``device_name`` (the CUDA card's name on a GPU,
  else the CPU model), ``threads`` (torch intra-op threads), ``cpu`` (CPU model), ``cpu_count``;
* ``python``, ``platform`` (``platform.platform()``);
* ``versions`` — ``{"bigain", "torch", "diffusers", …}`` (None for a package that is not installed).

:func:`device_label` is the one-line machine description the tables print, e.g.
``"cuda:0 (NVIDIA H200, torch 2.11.0+cu130, 8 threads)"``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Packages whose versions every record carries.
PACKAGES: tuple[str, ...] = ("torch", "diffusers")
#: Suffixes of :func:`git_commit`.
DIRTY, UNCHECKED = "-dirty", "-dirty?"


def git_commit(root: Path | None = None) -> str | None:
    """The checkout's HEAD commit, in one format: the full 40-hex hash, plus ``-dirty`` when
    ``git status`` lists changes (tracked or untracked) under ``bigain/``, or ``-dirty?`` when that
    was not checked; None outside a git checkout.

    HEAD is read from ``.git`` (no git process). The dirty check runs ``git --no-optional-locks
    status --porcelain -- bigain``, read only and without the index lock, so it never disturbs a
    concurrent git command; ``$BIGAIN_GIT=0`` (or bench's ``$BIGAIN_BENCH_GIT=0``) skips it.
    ``$BIGAIN_GIT_COMMIT`` names the commit outright, for runs on a copy of the tree without ``.git``."""
    if os.environ.get("BIGAIN_GIT_COMMIT"):
        return os.environ["BIGAIN_GIT_COMMIT"]
    root = ROOT if root is None else root
    head = _read_head(root / ".git")
    if head is None:
        return None
    if "0" in (os.environ.get("BIGAIN_GIT"), os.environ.get("BIGAIN_BENCH_GIT")):
        return head + UNCHECKED
    try:
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "bigain"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return head + UNCHECKED
    if status.returncode != 0:
        return head + UNCHECKED
    return head + (DIRTY if status.stdout.strip() else "")


def short_commit(commit: str | None) -> str | None:
    """``git_commit()`` shortened for display: the first 7 hex digits and the same suffix."""
    if not commit:
        return commit
    sha, sep, suffix = commit.partition("-")
    return sha[:7] + sep + suffix


def _read_head(git: Path) -> str | None:
    """HEAD's commit from a ``.git`` folder (or a worktree's ``.git`` file), None if unreadable."""
    try:
        if git.is_file():  # worktree / submodule: "gitdir: <path>"
            text = git.read_text().strip()
            if not text.startswith("gitdir: "):
                return None
            git = (git.parent / text[8:]).resolve()
            common = git / "commondir"
            refs = (git / common.read_text().strip()).resolve() if common.is_file() else git
        else:
            refs = git
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        for base in dict.fromkeys((git, refs)):
            if (base / ref).is_file():
                return (base / ref).read_text().strip() or None
        for line in (refs / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Any = "cpu") -> str:
    """The CUDA card's name for a CUDA device, else the CPU model."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return cpu_name()


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process: ``python -m <module> <args>`` for ``-m`` runs,
    ``python <script> <args>`` otherwise (arguments joined by spaces, as the tables print them)."""
    argv = list(sys.argv if argv is None else argv)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        prog = "python -m " + spec.name.removesuffix(".__main__")
    else:
        prog = "python " + (argv[0] if argv else "")
    return " ".join([prog, *argv[1:]]).strip()


def _version(package: str) -> str | None:
    if package == "bigain":
        return getattr(sys.modules.get("bigain"), "__version__", None) or _dist_version(package)
    if package == "torch":
        import torch

        return torch.__version__
    return _dist_version(package)


def _dist_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(device: Any = "cpu", command: str | None = None, packages: Sequence[str] = ()) -> dict[str, Any]:
    """The provenance record of a run on ``device`` started by ``command`` (default: this
    process's command line, :func:`command_line`); ``packages`` adds versions of more packages to
    ``versions`` (bigain, torch and diffusers are always there). Keys: see the module docstring.
    Call it once, when the run starts (the commit then is the code that ran)."""
    import torch

    return {
        "command": command_line() if command is None else command,
        "git_commit": git_commit(),
        "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in dict.fromkeys(("bigain", *PACKAGES, *packages))},
    }


def device_label(prov: dict[str, Any]) -> str:
    """``"<device> (<device name>, torch <version>, <n> threads)"`` of a :func:`provenance` record."""
    n = prov.get("threads")
    torch_v = (prov.get("versions") or {}).get("torch")
    parts = [prov.get("device_name"), torch_v and f"torch {torch_v}", n and f"{n} thread{'s' if n != 1 else ''}"]
    inner = ", ".join(p for p in parts if p)
    return f"{prov.get('device')} ({inner})" if inner else str(prov.get("device"))


def summary(prov: dict[str, Any]) -> dict[str, Any]:
    """The compact form stored next to every table row: ``command``, ``device`` (:func:`device_label`),
    ``git_commit``, ``timestamp``. A record that is already compact (no ``versions``) is returned as is."""
    if "versions" not in prov:
        return prov
    return {
        "command": prov["command"],
        "device": device_label(prov),
        "git_commit": prov.get("git_commit"),
        "timestamp": prov.get("timestamp"),
    }


def _commit_text(s: dict[str, Any]) -> str:
    bits = [f"`{s['git_commit']}`" if s.get("git_commit") else None, s.get("timestamp")]
    return ", ".join(b for b in bits if b)


def markdown_lines(prov: dict[str, Any]) -> list[str]:
    """Markdown block (one fact a line, hard line breaks): ``Command: `…```, ``Device: …`` and,
    where recorded, ``Commit: `<git_commit>`, <timestamp>``. Takes a full or compact record."""
    s = summary(prov)
    lines = [f"Command: `{s.get('command', '')}`", f"Device: {s.get('device', '')}"]
    if _commit_text(s):
        lines.append(f"Commit: {_commit_text(s)}")
    return [line + "  " for line in lines[:-1]] + lines[-1:]


def markdown_inline(prov: dict[str, Any]) -> str:
    """The same facts on one line: ``Command: `…`; device: …[; commit: `…`, <timestamp>]``."""
    s = summary(prov)
    text = f"Command: `{s.get('command', '')}`; device: {s.get('device', '')}"
    return text + (f"; commit: {_commit_text(s)}" if _commit_text(s) else "")

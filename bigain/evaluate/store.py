"""Crash-safe result files: one append-only JSON-lines shard per process, plus the run's settings;
atomic JSON / text writes for every result file of both evaluations (:func:`write_json`, :func:`write_text`).

A record is one line written with a single ``write`` and ``fsync``'d before the next image starts,
so a killed process loses at most the line it was writing; a torn last line is cut off when the
shard is reopened (and ignored by readers), and the rerun recomputes that one result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SHARD_DIR = "shards"
RUN_FILE = "run.json"
#: run.json entries a rerun may extend (more methods; the provenance of every run that added
#: records) rather than having to match.
ADDITIVE = ("methods", "slugs", "provenance")


class Shard:
    """Append-only JSON-lines file owned by one process (``shards/<task>-rank<r>.jsonl``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        _cut_torn_tail(path)
        self._f = path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, sort_keys=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Shard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    """Drop an incomplete last line (a process killed mid-write) so new lines start cleanly."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def shard_path(out: Path, task: str, rank: int) -> Path:
    return out / SHARD_DIR / f"{task}-rank{rank:03d}.jsonl"


def read_records(out: Path, task: str) -> list[dict[str, Any]]:
    """Every complete record of ``task`` in ``out/shards``, first occurrence of each (image, method)."""
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for path in sorted((out / SHARD_DIR).glob(f"{task}-rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a killed process: recomputed by the rerun
            seen.setdefault((rec["image"], rec["method"]), rec)
    return list(seen.values())


def done_keys(records: Iterable[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(r["image"], r["method"]) for r in records}


def write_json(path: Path, obj: Any, indent: int = 2) -> None:
    """Write JSON atomically (temporary file + rename), so readers never see half a file."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a text file (UTF-8) atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_run(out: Path, settings: dict[str, Any]) -> bool:
    """Compare ``settings`` with the ``run.json`` already in ``out``. Returns False if there is none
    (a new run), True if they agree (a resumed run); raises ValueError if they differ."""
    path = out / RUN_FILE
    if not path.exists():
        return False
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = [k for k in sorted(set(old) | set(settings)) if k not in ADDITIVE and old.get(k) != settings.get(k)]
    if diff:
        detail = "; ".join(f"{k}: {_short(old.get(k))} → {_short(settings.get(k))}" for k in diff[:5])
        raise ValueError(
            f"{out} holds a run with other settings ({detail}). Resume it with the same settings, "
            "or choose another --out."
        )
    return True


def _short(v: Any) -> str:
    s = json.dumps(v)
    return s if len(s) <= 80 else s[:77] + "..."

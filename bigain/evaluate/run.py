"""The evaluation loop: validate everything, shard images over processes, write a record per
(image, method) as it finishes, skip what a previous run finished, merge on the main process.

Sharding: the images still to do (sorted by dataset index) are dealt round-robin — the k-th goes to
rank ``k % world_size`` — so a fresh run sends image position k to rank k % N, and a resumed run
spreads only the remaining work. Results never depend on the rank: every method sees, for image i,
the noise/latents drawn from ``seed + i``.

Provenance (:mod:`bigain.provenance`): every run that computes records appends its record to
``run.json``'s ``provenance`` list; ``results.json`` carries the record of the process that wrote it,
and ``results.md`` the command, device and commit of the runs behind each table.

Test hook: ``$BIGAIN_EVAL_KILL_AFTER=K`` makes a process SIGKILL itself right after its K-th new
record is on disk — a kill at a chosen point, for the resume tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigain import provenance
from bigain.datasets import EvalDataset
from bigain.evaluate import fid as fidlib
from bigain.evaluate import report, store
from bigain.methods import Method, parse_method


@dataclass
class MethodSpec:
    key: str  # canonical: name + every parameter (what results are keyed by)
    label: str  # as the user typed it
    method: Method

    @property
    def slug(self) -> str:
        return f"{self.method.name}-{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"


@dataclass
class Job:
    """Everything decided before any compute (and recorded in ``run.json``)."""

    task: str  # "classify" or "generate"
    out: Path
    model: str
    dataset: EvalDataset
    indices: list[int]
    methods: list[MethodSpec]
    seed: int
    options: dict[str, Any]  # protocol (classify) or sampler settings (generate)
    device: str | None = None
    dtype: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    command: str | None = None  # recorded in the provenance (default: this process's command line)


def method_specs(specs: Sequence[str]) -> list[MethodSpec]:
    """Parse ``--methods`` (``bigain.parse_method`` syntax); duplicates are an error."""
    if not specs:
        raise ValueError("give at least one method, e.g. --methods baseline lgtm:ratio=0.7")
    out: list[MethodSpec] = []
    for spec in specs:
        m = parse_method(spec)
        key = m.name + ":" + ";".join(f"{k}={v}" for k, v in sorted(m.params().items()))
        if any(o.key == key for o in out):
            raise ValueError(f"method {spec!r} is listed twice (same settings as another entry)")
        out.append(MethodSpec(key, spec, m))
    return out


def select_indices(
    dataset: EvalDataset,
    subset: int | None = None,
    seed: int = 0,
    per_class: int | None = None,
    subset_file: str | None = None,
) -> list[int]:
    """Which images to evaluate (sorted dataset indices): all, a file's list, ``per_class`` random
    images of each class, or ``subset`` random images — random draws use ``numpy.random.default_rng(seed)``."""
    n = len(dataset)
    if sum(x is not None for x in (subset, per_class, subset_file)) > 1:
        raise ValueError("use only one of --subset, --subset-per-class and --subset-file")
    if subset_file is not None:
        text = Path(subset_file).read_text()
        try:
            idx = json.loads(text) if text.lstrip().startswith(("[", "{")) else [int(t) for t in text.split()]
        except ValueError as e:
            raise ValueError(f"{subset_file}: expected a JSON list or whitespace-separated image indices ({e})") from e
        idx = idx["indices"] if isinstance(idx, dict) else idx
        bad = [i for i in idx if not isinstance(i, int) or not 0 <= i < n]
        if bad or not idx:
            raise ValueError(f"{subset_file}: indices must be integers in [0, {n}); bad: {bad[:5]}")
        return sorted(set(idx))
    rng = np.random.default_rng(seed)
    if per_class is not None:
        labels = np.asarray(dataset.labels)
        picked = []
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            picked += rng.choice(members, min(per_class, len(members)), replace=False).tolist()
        return sorted(picked)
    if subset is not None:
        if not 1 <= subset <= n:
            raise ValueError(f"--subset must be in [1, {n}] for {dataset.name}, got {subset}")
        return sorted(rng.choice(n, subset, replace=False).tolist())
    return list(range(n))


# ---- processes ------------------------------------------------------------------------------


def make_accelerator(cpu: bool = False, timeout_min: float = 180.0) -> Any:
    """An Accelerator for however this process was launched (plain python, accelerate launch,
    torchrun). Without a GPU, multi-process launches need ``cpu=True`` (gloo); we turn it on when
    WORLD_SIZE > 1 and CUDA is absent, and fail loudly if the processes still do not see each other."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = cpu or (world > 1 and not torch.cuda.is_available())
    acc = Accelerator(cpu=cpu, kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(minutes=timeout_min))])
    if acc.num_processes != world:
        raise RuntimeError(
            f"launched as {world} processes but Accelerate sees {acc.num_processes}; on machines without GPUs "
            "launch with `accelerate launch --multi_gpu --num_processes N` (accelerate's --cpu flag starts one process)"
        )
    return acc


def _all_ok(acc: Any, n_bad: int) -> bool:
    """Collective: True if no process found a problem (also a synchronisation point)."""
    flags = acc.gather(torch.tensor([n_bad], device=acc.device))
    return int(flags.sum()) == 0


# ---- the run --------------------------------------------------------------------------------


def settings_of(job: Job, device_type: str) -> dict[str, Any]:
    """What must match for a rerun to resume the same run (methods may be added). The device type is
    part of it: CUDA and CPU differ in default dtype, float rounding and ToMe's random stream."""
    return {
        "task": job.task,
        "model": job.model,
        "device_type": device_type,
        "dtype": job.dtype,
        "dataset": job.dataset.record(),
        "indices": job.indices,
        "seed": job.seed,
        "options": job.options,
    }


def execute(job: Job, acc: Any, max_new: int | None = None, log: Any = print) -> dict[str, Any] | None:
    """Run ``job`` on this process's share; the main process merges. Returns the result on the
    main process once everything is done, else None. ``max_new`` stops this process after that many
    new records (a planned interruption: the rerun resumes)."""
    from bigain.models import load_model

    rank, world = acc.process_index, acc.num_processes
    settings = settings_of(job, torch.device(job.device).type if job.device else acc.device.type)
    resumed = store.check_run(job.out, settings)  # every rank checks, so every rank fails alike
    done = store.done_keys(store.read_records(job.out, job.task))
    pending = [i for i in job.indices if any((i, m.key) not in done for m in job.methods)]
    mine = pending[rank::world]
    bad = job.dataset.check(mine)
    for b in bad[:20]:
        log(f"[rank {rank}] unreadable image: {b}", file=sys.stderr)
    # collective: also guarantees every rank has read run.json and the shards before anyone writes
    if not _all_ok(acc, len(bad)):
        raise ValueError(
            f"unreadable images in {job.dataset.source}"
            + (f", e.g. {bad[:3]}" if bad else " (see the other ranks' logs)")
        )
    if acc.is_main_process:
        old = json.loads((job.out / store.RUN_FILE).read_text()) if resumed else {}
        methods = old.get("methods", {}) | {m.key: {"label": m.label, "params": m.method.params()} for m in job.methods}
        slugs = old.get("slugs", {}) | {m.key: m.slug for m in job.methods}
        prov = {**provenance.provenance(job.device or acc.device, job.command), "processes": world}
        runs = [*old.get("provenance", []), prov] if pending else old.get("provenance", [])
        store.write_json(job.out / store.RUN_FILE, {**settings, "methods": methods, "slugs": slugs, "provenance": runs})
        verb = "resuming" if resumed else "starting"
        log(
            f"{verb} {job.task}: {len(job.indices)} images × {len(job.methods)} methods, {len(pending)} images to do "
            f"on {world} process(es); results in {job.out}"
        )
    stopped = False
    if mine:
        model = load_model(job.model, device=job.device or acc.device, dtype=job.dtype)
        check_conditioning(model, job.dataset)
        stopped = _work(job, model, mine, done, rank, max_new, log)
    acc.wait_for_everyone()
    if stopped or not acc.is_main_process:
        return None
    return finalize(job.out, log=log, command=job.command)


def check_card(card: Any, dataset: EvalDataset) -> None:
    """Before loading: can a model of this card be conditioned on the dataset's classes?"""
    cl = dataset.classes
    if card is None or card.conditioning == "prompts":
        return
    if card.source == "embedded":
        from bigain.digits import NUM_CLASSES

        if cl.model_labels is not None or len(cl) != NUM_CLASSES:
            raise ValueError(
                f"{card.name} knows the {NUM_CLASSES} digits only; the {cl.key!r} list has {len(cl)} classes"
            )
    elif cl.model_labels is None:
        raise ValueError(
            f"{card.name} is conditioned on ImageNet class ids; the {cl.key!r} list has no imagenet_index column "
            "(use --dataset imagenet/imagenet100, or a class-list CSV with wnid/imagenet_index columns)"
        )


def check_conditioning(model: Any, dataset: EvalDataset) -> None:
    """The class list must be expressible in the model's conditioning (text, or its class ids)."""
    cl = dataset.classes
    if model.card.conditioning == "prompts":
        return
    n_model = len(model.classes or [])
    if cl.model_labels is not None:
        if max(cl.model_labels) >= n_model:
            raise ValueError(f"{model.card.name} has {n_model} classes; the {cl.key!r} list needs ImageNet labels")
        return
    if len(cl) != n_model:
        raise ValueError(
            f"{model.card.name} is conditioned on its own {n_model} class ids; the {cl.key!r} list has "
            f"{len(cl)} classes and no imagenet_index column to map them (use a text-conditioned model)"
        )


def conditions(model: Any, dataset: EvalDataset) -> list[Any]:
    """One condition per class of the dataset: its prompt (text models) or model class id."""
    cl = dataset.classes
    if model.card.conditioning == "prompts":
        return list(cl.prompts)
    return list(cl.model_labels) if cl.model_labels is not None else list(range(len(cl)))


def _work(
    job: Job, model: Any, mine: list[int], done: set[tuple[int, str]], rank: int, max_new: int | None, log: Any
) -> bool:
    """Evaluate this rank's images; returns True if stopped early by ``max_new``."""
    conds = conditions(model, job.dataset)
    where = {"device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")}
    kill_after = int(os.environ["BIGAIN_EVAL_KILL_AFTER"]) if os.environ.get("BIGAIN_EVAL_KILL_AFTER") else None
    n_new = 0
    t0 = time.perf_counter()
    with store.Shard(store.shard_path(job.out, job.task, rank)) as shard:
        for k, i in enumerate(mine):
            image = job.dataset.image(i)
            for m in job.methods:
                if (i, m.key) in done:
                    continue
                if max_new is not None and n_new >= max_new:
                    log(f"[rank {rank}] stopped after {n_new} new results (--max-new); rerun to continue")
                    return True
                rec = _one(job, model, image, i, conds, m)
                rec |= {"image": i, "method": m.key, "label": job.dataset.labels[i], "rank": rank, **where}
                shard.append(rec)
                n_new += 1
                if n_new == kill_after:  # the test hook: a hard kill at a known point (no cleanup)
                    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
            if rank == 0 and (k + 1) % max(1, len(mine) // 20) == 0:
                el = time.perf_counter() - t0
                log(
                    f"[rank 0] {k + 1}/{len(mine)} images, {el:.0f} s, ~{el / (k + 1) * (len(mine) - k - 1):.0f} s left"
                )
    return False


def _one(job: Job, model: Any, image: Any, i: int, conds: list[Any], m: MethodSpec) -> dict[str, Any]:
    from bigain import pipelines

    seed = job.seed + i
    if job.task == "classify":
        opts = job.options
        res = pipelines.classify(
            model,
            image,
            classes=conds,
            method=m.method,
            seed=seed,
            protocol=opts.get("protocol"),
            batch_size=opts.get("batch_size"),
            prompt_template="{}",  # conds are already the full prompts of the class list
        )
        pred = int(res.prediction_index)
        return {
            "pred": pred,
            "correct": pred == job.dataset.labels[i],
            "top5": [int(r.index) for r in res.ranking[:5]],
            "n_evals": int(res.n_evals),
            "n_calls": int(res.n_calls),
            "wall_s": float(res.wall_s),
            "denoiser_s": float(res.denoiser_s),
        }
    cond = conds[job.dataset.labels[i]]
    res = pipelines.generate(model, cond, method=m.method, seed=seed, **job.options)
    rel = Path("images") / m.slug / f"{i:06d}.png"
    _save_png(res.images[0], job.out / rel)
    fidlib.link_real(job.dataset, i, job.out / "real")
    return {
        "file": str(rel),
        "n_calls": int(res.n_calls),
        "wall_s": float(res.wall_s),
        "denoiser_s": float(res.denoiser_s),
    }


def _save_png(image: Any, path: Path) -> None:
    """Atomic PNG write: a killed process never leaves a truncated image behind a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


# ---- merging --------------------------------------------------------------------------------


def finalize(out: Path, log: Any = print, command: str | None = None) -> dict[str, Any]:
    """Merge the shards of the run in ``out`` into ``results.json`` and ``results.md``; the JSON
    records the provenance of this process (``command``: default, its command line)."""
    run = json.loads((out / store.RUN_FILE).read_text())
    task, images = run["task"], run["indices"]
    methods = [(k, v["label"]) for k, v in run["methods"].items()]
    records = store.read_records(out, task)
    if task == "classify":
        summary = report.summarize_classify(records, methods, images)
    else:
        summary = report.summarize_generate(records, methods, images)
        fids, summary["fid_note"] = fidlib.evaluate_fid(out, run, records, log=log)
        for row in summary["methods"]:
            row.update(fids.get(row["key"], {}))
    result = {"run": run, **summary, "rows": _rows(run, task, summary)}
    where = "cuda" if task == "generate" and torch.cuda.is_available() else "cpu"  # Inception FID's device
    result["provenance"] = provenance.provenance(where, command)
    store.write_json(out / "results.json", result)
    md = render_markdown([result])
    store.write_text(out / "results.md", md + "\n")
    log(md)
    return result


def _rows(run: dict[str, Any], task: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for m in summary["methods"]:
        row = {"dataset": run["dataset"]["name"], "method": m["method"], "model": run["model"]}
        if task == "classify":
            row.update(acc=m["acc"] if m["complete"] else None, ci95=m["ci95"], n_acc=m["n"])
        else:
            row.update(fid=m.get("fid"), n_fid=m["n"], fid_features=m.get("fid_features"))
        rows.append(row)
    return rows


def render_markdown(results: Sequence[dict[str, Any]]) -> str:
    """Tables for one or more results (a classify and a generate run of the same model and dataset
    share rows, like the paper's Tables 2/4)."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for res in results:
        for row in res["rows"]:
            key = (row["model"], row["dataset"], row["method"])
            merged.setdefault(key, {}).update({k: v for k, v in row.items() if v is not None})
    parts = ["## Results", "", report.paper_table(list(merged.values()))]
    for res in results:
        run = res["run"]
        title = f"### {run['task']}: {run['model']} on {run['dataset']['name']} ({len(run['indices'])} images)"
        parts += [
            "",
            title,
            *report.runs_block(run.get("provenance", []), "Computed in {n} runs (resumed or extended):"),
        ]
        parts += ["", report.cost_table(res["methods"])]
        if res.get("agreement"):
            parts += ["", report.agreement_table(res["agreement"])]
        if not res.get("complete", True):
            parts += ["", "**Incomplete:** some (image, method) results are missing; rerun the same command to finish."]
        if res.get("fid_note"):
            parts += ["", res["fid_note"]]
    return "\n".join(parts)

"""Evaluations (``python -m bigain.evaluate``): paper-scale diffusion-classifier accuracy and
generation (FID) for several methods on the same images and noise, sharded over processes with
Hugging Face Accelerate, resumable, merged into JSON and a Markdown table like the paper's
(:mod:`~bigain.evaluate.run`); and the small replication on the embedded digits models
(:mod:`~bigain.evaluate.digits`). Shared: statistics (:mod:`~bigain.evaluate.stats`), tables
(:mod:`~bigain.evaluate.report`), result files (:mod:`~bigain.evaluate.store`) and the run
provenance of :mod:`bigain.provenance`."""

from bigain.evaluate.run import Job, MethodSpec, execute, finalize, method_specs, render_markdown, select_indices
from bigain.evaluate.stats import mcnemar_exact, wilson

__all__ = [
    "Job",
    "MethodSpec",
    "execute",
    "finalize",
    "mcnemar_exact",
    "method_specs",
    "render_markdown",
    "select_indices",
    "wilson",
]

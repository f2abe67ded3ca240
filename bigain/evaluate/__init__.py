"""Paper-scale evaluation (``python -m bigain.evaluate``): diffusion-classifier accuracy and
generation (FID) for several methods on the same images and noise, sharded over processes with
Hugging Face Accelerate, resumable, merged into JSON and a Markdown table like the paper's."""

from bigain.evaluate.report import wilson
from bigain.evaluate.run import Job, MethodSpec, execute, finalize, method_specs, render_markdown, select_indices

__all__ = ["Job", "MethodSpec", "execute", "finalize", "method_specs", "render_markdown", "select_indices", "wilson"]

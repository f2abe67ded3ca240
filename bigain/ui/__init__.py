"""The Gradio app, one module per tab (the only part of bigain that imports gradio).

* :mod:`~bigain.ui.generate`, :mod:`~bigain.ui.classify`, :mod:`~bigain.ui.inside`,
  :mod:`~bigain.ui.learn`, :mod:`~bigain.ui.benchmarks`: a tab each (its handlers and its ``build()``);
* :mod:`~bigain.ui.knobs`: method choice and settings, built from the method registry;
* :mod:`~bigain.ui.checked`: components that turn a bad payload into "<Label> must be …";
* :mod:`~bigain.ui.common`: models, the fair queue (one job per visitor), stoppable jobs, ZeroGPU;
* :mod:`~bigain.ui.examples`: the precomputed example each model tab opens with
  (``python -m bigain.ui.examples`` writes them, the tabs' ``startup()`` reads them).

``app.py`` at the repository root (what Spaces runs) only parses the command line and calls :func:`launch`.
"""

from __future__ import annotations

import os
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from bigain import explain, threads
from bigain.ui import benchmarks as _benchmarks
from bigain.ui import classify as _classify
from bigain.ui import generate as _generate
from bigain.ui import inside as _inside
from bigain.ui import learn as _learn
from bigain.ui.benchmarks import benchmarks, headline
from bigain.ui.classify import classify
from bigain.ui.common import ADMISSION, DEFAULT_MODEL, QUEUE_SIZE, ZERO_GPU, model, model_choices
from bigain.ui.generate import generate
from bigain.ui.inside import inside_step, look_inside
from bigain.ui.knobs import method_choices
from bigain.ui.learn import figure6, learn
from bigain.ui.limits import BodyLimit
from bigain.ui.shared import on_model

TITLE = "BiGain: token compression that keeps generation and classification"
TABS = ["Compare generation", "Compare classification", "Look inside", "Learn the idea", "Benchmarks"]
CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
.upscale img { width: 100% !important; height: 100% !important; object-fit: contain !important; }
.fit img { object-fit: contain !important; }
.note { opacity: 0.85; font-size: 0.92em; }
"""
INTRO = """
# BiGain: faster diffusion models that still see
**Token compression** makes diffusion transformers and U-Nets faster by letting attention work on fewer
tokens. BiGain (CVPR 2026) does it with the image's **frequencies** in mind, so that both *generating*
and *classifying* with the model stay good. Compare it with its baselines below: **L-GTM** merges tokens
onto smooth anchors chosen by a Laplacian filter (vs **ToMe**'s random anchors), **IE-KVD** builds keys and
values from a blend of nearest and average pooling (vs **ToDo**'s nearest only). It opens on small models
trained on the 26 capitals A–Z (32×32, 1024 tokens per attention layer); every tab shows a finished
example computed ahead of time, with the CPU threads its times were measured on.
"""

__all__ = [
    "ADMISSION",
    "CSS",
    "DEFAULT_MODEL",
    "QUEUE_SIZE",
    "TABS",
    "TITLE",
    "ZERO_GPU",
    "benchmarks",
    "build_demo",
    "classify",
    "figure6",
    "generate",
    "headline",
    "inside_step",
    "launch",
    "learn",
    "look_inside",
    "method_choices",
    "model",
    "model_choices",
    "on_model",
]


def build_demo() -> gr.Blocks:
    """The whole page; the method lists and settings are read from the registry now."""
    threads.configure()  # the container's CPUs, not the host's cores (bigain.threads)
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(INTRO)
        for title, tab in zip(TABS, (_generate, _classify, _inside, _learn, _benchmarks), strict=True):
            with gr.Tab(title):
                tab.build()
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    return demo


def launch(app: gr.Blocks, **kwargs: Any) -> Any:
    """Launch with the app's look and limits (Gradio 6 takes theme/css at launch); kwargs override."""
    options: dict[str, Any] = {
        "css": CSS,
        "theme": gr.themes.Soft(),
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "max_file_size": "20mb",
        "allowed_paths": [str(explain.examples_dir())],
        "app_kwargs": {"middleware": [Middleware(BodyLimit)]},  # bodies bounded before they are read or logged
    }
    return app.launch(**(options | kwargs))

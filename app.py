"""BiGain demo: token compression for diffusion models, side by side with its baselines.

The app lives in :mod:`bigain.ui` (one module per tab); this file is what Hugging Face Spaces runs.
``python app.py`` serves it on http://127.0.0.1:7860 (``--host``, ``--port``, ``--share``; 0.0.0.0 in
Docker via GRADIO_SERVER_NAME); on a CPU machine it runs offline on the embedded glyph and digits models
(``python -m bigain.ui.examples`` writes the examples the tabs open with, once after training).
"""

from __future__ import annotations

import argparse
import sys

from bigain.ui import *  # noqa: F403 - the handlers, for tests and Python callers
from bigain.ui import build_demo, launch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="app.py", description="Serve the BiGain demo (Gradio).")
    p.add_argument("--host", default=None, help="interface to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    options = {"share": args.share}
    if args.host:
        options["server_name"] = args.host
    if args.port:
        options["server_port"] = args.port
    launch(demo, **options)


def __getattr__(name: str):  # the page is built on first use (``python app.py --help`` builds nothing)
    if name == "demo":
        globals()["demo"] = built = build_demo()
        return built
    raise AttributeError(name)


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        parse_args()
    demo = build_demo()
    main()

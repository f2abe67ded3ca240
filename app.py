"""BiGain demo: token compression for diffusion models, side by side with its baselines.

The app lives in :mod:`bigain.ui` (one module per tab); this file is what Hugging Face Spaces runs.
``python app.py`` serves it on http://127.0.0.1:7860 (``--host``, ``--port``, ``--share``; 0.0.0.0 in
Docker via GRADIO_SERVER_NAME); on a CPU machine it runs offline on the embedded glyph and digits models
(``python -m bigain.ui.examples`` writes the examples the tabs open with, once after training).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


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
    from bigain.ui import build_demo, launch

    launch(build_demo(), **options)


def __getattr__(name: str) -> Any:
    """``app.demo`` and the handlers of :mod:`bigain.ui` (``app.generate``, …), imported on first use:
    torch and gradio take seconds to load, and ``python app.py --help`` needs neither."""
    import bigain.ui as ui

    if name == "demo":
        globals()["demo"] = built = ui.build_demo()
        return built
    if name not in ui.__all__:  # the public handlers only, not bigain.ui's imports
        raise AttributeError(name)
    return getattr(ui, name)


if __name__ == "__main__":
    main(sys.argv[1:])

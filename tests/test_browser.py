"""The app in a real browser: headless Chromium (Debian's ``chromium``) driven over the Chrome
DevTools protocol with ``websocket-client`` (nothing to download). Screenshots go to artifacts/."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


class Browser:
    """A minimal DevTools client: navigate, evaluate JavaScript, wait, take screenshots."""

    def __init__(self, binary: str, profile: str) -> None:
        import websocket

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"javascript failed: {res['exceptionDetails'].get('text')}: {expression}")
        return res.get("result", {}).get("value")

    def wait(self, expression: str, timeout: float = 60, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"waited {timeout:.0f} s for {what or expression}")

    def screenshot(self, path: Path, width: int = 1400) -> Path:
        height = int(self.js("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        time.sleep(0.5)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        self.send("Emulation.clearDeviceMetricsOverride")
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page() -> Iterator[Browser]:
    binary = _chromium()
    import app

    _, url, _ = app.launch(app.demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(),
                           quiet=True)  # fmt: skip
    profile = tempfile.mkdtemp(prefix="bigain-chromium-")
    browser = Browser(binary, profile)
    try:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=url)
        browser.wait("!!document.querySelector('#gen-button')", 60, "the app to load")
        yield browser
    finally:
        browser.close()
        app.demo.close()
        shutil.rmtree(profile, ignore_errors=True)


def _tab(page: Browser, title: str) -> None:
    page.js(
        "[...document.querySelectorAll('button[role=tab]')]"
        f".find(b => b.textContent.includes({json.dumps(title)})).click()"
    )


def test_generation_comparison_renders(page: Browser) -> None:
    page.js("document.querySelector('#gen-button').click()")
    page.wait("document.querySelectorAll('#gen-gallery img').length >= 5", 120, "five images (baseline + 4 methods)")
    page.wait("document.querySelector('#gen-table').innerText.includes('IE-KVD')", 30, "the cost table")
    assert page.wait("document.querySelectorAll('#gen-diff img').length") >= 4
    text = page.js("document.querySelector('#gen-table').innerText")
    for label in ("Baseline", "ToMe", "L-GTM", "ToDo", "IE-KVD"):
        assert label in text
    assert "speed-up" in text.lower()
    page.wait("[...document.querySelectorAll('#gen-gallery img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.js("document.querySelector('#gen-gallery img').naturalWidth") >= 256
    time.sleep(1.0)  # let the plot finish drawing
    assert page.screenshot(ARTIFACTS / "browser_generate.png").stat().st_size > 10_000


def test_classification_renders(page: Browser) -> None:
    _tab(page, "Compare classification")
    page.wait("!!document.querySelector('#cls-examples button, #cls-examples tr')", 30, "the examples")
    page.js(
        "(document.querySelector('#cls-examples button') || document.querySelector('#cls-examples tbody tr')).click()"
    )
    page.wait("!!document.querySelector('#cls-image img')", 30, "the example image")
    page.js("document.querySelector('#cls-button').click()")
    page.wait("document.querySelector('#cls-table').innerText.includes('IE-KVD')", 120, "the top-5 table")
    page.wait("document.querySelector('#cls-summary').innerText.includes('predict')", 30, "the agreement summary")
    time.sleep(1.0)
    page.screenshot(ARTIFACTS / "browser_classify.png")


def test_learn_tab_renders(page: Browser) -> None:
    _tab(page, "Learn the idea")
    page.wait("document.querySelectorAll('#learn-plots img, #learn-plots canvas, #learn-plots svg').length >= 3",
              60, "the three learn figures")  # fmt: skip
    time.sleep(1.0)
    page.screenshot(ARTIFACTS / "browser_learn.png")


def test_look_inside_renders(page: Browser) -> None:
    _tab(page, "Look inside")
    page.js("document.querySelector('#inside-button').click()")
    plots = "document.querySelectorAll('#inside-plots img, #inside-plots svg').length >= 2"
    page.wait(plots, 120, "the gate and the merge groups")
    time.sleep(1.0)
    page.screenshot(ARTIFACTS / "browser_inside.png")

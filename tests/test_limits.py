"""Request bodies are bounded before the app reads them (bigain.ui.limits)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bigain.ui.limits import BodyLimit


def _client(body: int = 100, upload: int = 1000) -> tuple[TestClient, list[int]]:
    read: list[int] = []

    async def echo(request: Request) -> JSONResponse:
        data = await request.body()
        read.append(len(data))
        return JSONResponse({"n": len(data)})

    app = Starlette(routes=[Route("/run", echo, methods=["POST"]), Route("/gradio_api/upload", echo, methods=["POST"])])
    return TestClient(BodyLimit(app, body=body, upload=upload)), read


def test_a_body_over_its_declared_limit_is_refused_before_it_is_read() -> None:
    client, read = _client()
    assert client.post("/run", content=b"x" * 100).json() == {"n": 100}
    r = client.post("/run", content=b"x" * 101)
    assert r.status_code == 413 and "request body over" in r.json()["error"] and read == [100]
    assert client.post("/gradio_api/upload", content=b"x" * 900).json() == {"n": 900}  # uploads get more room
    assert client.post("/gradio_api/upload", content=b"x" * 1001).status_code == 413


def test_a_chunked_body_is_cut_when_it_passes_the_limit() -> None:
    client, read = _client()

    def chunks():
        for _ in range(50):
            yield b"y" * 10

    r = client.post("/run", content=chunks())  # no Content-Length: counted as it arrives
    assert r.status_code == 413 and not read


def test_the_served_app_refuses_a_huge_body_in_words(app_url: str) -> None:
    import httpx

    r = httpx.post(app_url.rstrip("/") + "/gradio_api/queue/join", content=b"{" + b" " * (2 << 20) + b"}",
                   headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert r.status_code == 413 and r.json()["error"].startswith("request body over 1 MB")
    assert httpx.get(app_url.rstrip("/") + "/config", timeout=30).status_code == 200  # and keeps serving

"""Request bodies bounded before the app reads them: an ASGI middleware in front of Gradio's server.

Gradio limits uploaded files (``max_file_size``) but reads any JSON body whole, and logs what it cannot
parse: a 200 MB string became a 200 MB log line. Here a body over its limit is refused with 413 and a
short JSON message, from its ``Content-Length`` before a byte is read or, for a body sent without one
(chunked), as soon as the bytes read pass the limit.
"""

from __future__ import annotations

import json
from typing import Any

#: bytes a JSON request may carry (a generate or classify call is a few kB; image payloads are uploads)
BODY_LIMIT = 1 << 20
#: bytes of one upload request (the app's ``max_file_size`` is 20 MB, plus the multipart framing)
UPLOAD_LIMIT = 21 << 20


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``body`` bytes (``upload`` on ``…/upload`` paths)."""

    def __init__(self, app: Any, body: int = BODY_LIMIT, upload: int = UPLOAD_LIMIT) -> None:
        self.app, self.body, self.upload = app, body, upload

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload if scope.get("path", "").rstrip("/").endswith("/upload") else self.body
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        seen, refused = 0, False

        async def bounded() -> dict:
            nonlocal seen, refused
            if refused:  # answered already: nothing more is read
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # no Content-Length (chunked): answer now, read no more
                    refused = True
                    await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: dict) -> None:
            if not refused:  # the 413 is the answer; what the app says after the disconnect is dropped
                await send(message)

        try:
            await self.app(scope, bounded, unless_refused)
        except Exception:
            if not refused:
                raise  # the app's own failure; after a refusal it only complains that the client left


async def _refuse(send: Any, limit: int) -> None:
    size = f"{limit / (1 << 20):g} MB" if limit >= 1 << 20 else f"{limit} bytes"
    body = json.dumps({"error": f"request body over {size}: send less"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})

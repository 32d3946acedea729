"""The ceiling of receiving a body in this server: a bare ASGI app that only reads request
bodies (no database, no disk), run with the uvicorn settings ``tsm-server run`` uses.

It speaks just enough tus for bench/bench_files.py's client: POST → 201 with a Location,
PATCH → the body read and dropped, 204 with the new Upload-Offset.

    TSM_PORT=8123 PYTHONPATH=. .venv/bin/python bench/drain_server.py
"""

from __future__ import annotations

from typing import Any

import uvicorn

from app.cli import uvicorn_options
from app.config import get_settings


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = dict(scope["headers"])
    received = 0
    while True:
        message = await receive()
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["method"] == "POST":
        status, extra = 201, [(b"location", b"/files/drained")]
    else:
        offset = int(headers.get(b"upload-offset", b"0")) + received
        status, extra = 204, [(b"upload-offset", str(offset).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [(b"tus-resumable", b"1.0.0"), *extra]})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    options = uvicorn_options(get_settings())
    uvicorn.run(app, **{**options, "factory": False, "workers": 1})

"""What request ids, access logs and HTTP metrics cost per request, against their usual peers.

    bare   FastAPI, one tiny JSON route, nothing else
    tsm    + app.middleware.RequestContextMiddleware (request id, log context, latency histogram),
           access line off (TSM_LOG_LEVEL=warning) and on (JSON, written to /dev/null)
    peers  + asgi-correlation-id (request id) + prometheus-fastapi-instrumentator (latency metrics)

Requests go straight into the ASGI app (no sockets, no HTTP client), so only the middleware
stacks differ. Best of --repeat runs of --requests requests each; the ratio is tsm / peers.

Peers (installed once, outside the repository):
    .venv/bin/pip install --no-deps --target /tmp/tsm-bench-peers prometheus-fastapi-instrumentator asgi-correlation-id

    .venv/bin/python bench/bench_observability.py [--requests 10000] [--repeat 3] [--peers /tmp/tsm-bench-peers]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any

from fastapi import FastAPI

from app.config import Settings
from app.logs import configure_logging
from app.middleware import RequestContextMiddleware


def base_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    return app


def tsm_app() -> FastAPI:
    settings = Settings(_env_file=None, log_json=True, log_level="info")  # type: ignore[call-arg]
    configure_logging(settings, stream=open(os.devnull, "w"))  # noqa: SIM115
    app = base_app()
    app.add_middleware(RequestContextMiddleware)
    return app


def peer_app() -> FastAPI:
    from asgi_correlation_id import CorrelationIdMiddleware
    from prometheus_fastapi_instrumentator import Instrumentator

    app = base_app()
    Instrumentator().instrument(app)
    app.add_middleware(CorrelationIdMiddleware)
    return app


async def drive(app: Any, requests: int) -> float:
    """Seconds for ``requests`` sequential GETs through the ASGI interface."""
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return body

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    started = time.perf_counter()
    for i in range(requests):
        path = f"/items/{i}"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"bench"), (b"x-request-id", b"5f0c2a8e-3c1b-4d7e-9a4f-2b6d8c1e0f3a")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peers", default="/tmp/tsm-bench-peers")
    args = parser.parse_args()
    sys.path.insert(0, args.peers)

    tsm = tsm_app()
    access = logging.getLogger("tsm.access")
    # (name, app, access-line level): the stacks take turns so that load changes hit all alike.
    stacks = [
        ("bare", base_app(), logging.INFO),
        ("peers", peer_app(), logging.INFO),
        ("tsm (no access line)", tsm, logging.WARNING),
        ("tsm (JSON access line)", tsm, logging.INFO),
    ]
    results: dict[str, float] = {name: float("inf") for name, _, _ in stacks}
    for _, app, _ in stacks:
        await drive(app, 500)  # warm up: build the middleware stack, fill caches
    for _ in range(args.repeat):
        for name, app, level in stacks:
            access.setLevel(level)
            results[name] = min(results[name], await drive(app, args.requests))

    bare = results["bare"]
    print(f"{args.requests} requests, best of {args.repeat}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for name, seconds in results.items():
        per = seconds / args.requests * 1e6
        print(f"  {name:<24} {per:7.1f} µs/request   (+{per - bare / args.requests * 1e6:5.1f} µs over bare)")
    for name in ("tsm (no access line)", "tsm (JSON access line)"):
        print(f"ratio {name} / peers: {results[name] / results['peers']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

"""A real ``tsm-server`` process on a loopback port, for tests of streaming, disconnects,
crashes and several processes. It is started the way the README and Dockerfile start it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]


def poll(predicate: Any, *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Call ``predicate`` until it returns something truthy (and return that), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """``with LiveServer(db_url, storage) as server: httpx.get(server.url + "/healthz")``"""

    def __init__(self, db_url: str, storage: Path, port: int | None = None, **env: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TSM_DATABASE_URL": db_url,
            "TSM_STORAGE_DIR": str(storage),
            "TSM_HOST": "127.0.0.1",
            "TSM_PORT": str(self.port),
            "TSM_POLL_INTERVAL": "0.05",
            "TSM_PROGRESS_INTERVAL": "0.05",
            "TSM_LEASE_SECONDS": "2",
            "TSM_SHUTDOWN_GRACE_SECONDS": "5",
            "TSM_KIND_MODULES": "tests.helpers.kinds",
            "TSM_LOG_LEVEL": "warning",
            **{key: str(value) for key, value in env.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = storage.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0) -> LiveServer:
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "run"], env=self.env, cwd=ROOT, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not become ready:\n{self.log.read_text()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """Graceful stop (SIGTERM), as a container runtime would."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """Crash: SIGKILL, no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


def poll_task(server: LiveServer, task_id: str, predicate: Any, timeout: float = 30.0) -> dict:
    def check() -> dict | None:
        task = httpx.get(f"{server.url}/tasks/{task_id}", timeout=5).json()
        return task if predicate(task) else None

    return poll(check, timeout=timeout, what=f"task {task_id}")


def logged_steps(server: LiveServer, task_id: str) -> list[int]:
    """Read the steps the task recorded, through a throwaway connection of our own."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> list[int]:
        engine = create_async_engine(server.env["TSM_DATABASE_URL"])
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT step FROM step_log WHERE task_id = :t ORDER BY step"), {"t": task_id}
                )
                return [r.step for r in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


@contextmanager
def server_stopped(server: LiveServer) -> Iterator[LiveServer]:
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill()


def wait_succeeded(http: httpx.Client, task_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = http.get(f"/tasks/{task_id}").json()
        if task["state"] == "succeeded":
            return task
        assert time.monotonic() < deadline, f"task did not succeed: {task}"
        time.sleep(0.02)

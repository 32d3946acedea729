"""A real ``tsm-server`` process on a loopback port, for tests of streaming, disconnects,
crashes and several processes. It is started the way the README and Dockerfile start it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


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
            "TSM_KIND_MODULES": "tests.kinds",
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

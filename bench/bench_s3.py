"""Uploads to and downloads from S3, against their peers, in paired rounds of the same run.

    one SeaweedFS (weed, loopback, free ports), one bucket
      ├─ tsm          TSM_STORAGE_URL=s3://<bucket>/tsm   (uvicorn, PostgreSQL or SQLite)
      └─ @tus/server  + @tus/s3-store (its defaults)       (node, bucket root)

    upload  --size, one PATCH      tsm / @tus   throughput ratio   target >= 1.2
    upload  --size, --chunk PATCHes tsm / @tus   throughput ratio   target >= 1.2
    download full GET              tsm / direct presigned GET from the gateway, target >= 0.8
    (and the gateway's own write ceiling: the same bytes in one presigned PUT, no tus server)
    --only concat: one stream vs 2 and 4 parallel partial uploads + the final (tus concatenation,
                   the final copied inside S3), tsm against itself (bench_files.concat_rounds)

Every round runs each case once for both sides, the order alternating round by round (the
machine is shared and its load drifts); each round's figures are printed, then the median and
min-max of each ratio. Both sides get the same minimal client (bench/files_http.py: one
keep-alive socket, bodies sent with sendfile, answers read into one reused buffer).

The peer is installed once, outside the repository (done here if missing):
    npm install --prefix ~/.cache/tsm-bench/node @tus/server @tus/s3-store

    .venv/bin/python bench/bench_s3.py [--size 256MiB|1GiB] [--chunk 8MiB] [--rounds 5] [--sqlite]
    .venv/bin/python bench/bench_s3.py --only concat --size 1GiB --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import botocore.session
from bench_files import admin, concat_rounds, make_data, stop, upload, wait_hashed, wait_port  # beside this script
from files_http import Connection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.s3 import S3Server, client_kwargs, seaweedfs  # noqa: E402
from tests.helpers.server import LiveServer, free_port  # noqa: E402

PEER_DIR = Path.home() / ".cache" / "tsm-bench" / "node"
PG_ADMIN = os.environ.get("TSM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
BENCH_DB = "tsm_bench_s3"
PREFIX = "tsm"
MIB = 1 << 20
# The service with its production defaults, not the tests' fast polling.
SERVER_ENV = {"TSM_POLL_INTERVAL": "1.0", "TSM_PROGRESS_INTERVAL": "0.5", "TSM_LEASE_SECONDS": "30"}

# The peer: @tus/server with @tus/s3-store as its README shows it, pointed at SeaweedFS.
TUS_S3_SERVER_JS = """
import { Server } from '@tus/server';
import { S3Store } from '@tus/s3-store';
const [port, endpoint, bucket, region, accessKeyId, secretAccessKey] = process.argv.slice(2);
const datastore = new S3Store({
  s3ClientConfig: { bucket, region, endpoint, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } },
});
const server = new Server({ path: '/files', datastore });
server.listen({ host: '127.0.0.1', port: Number(port) });
"""


def parse_size(text: str) -> int:
    """'256MiB', '1GiB', '1048576' -> bytes."""
    match = re.fullmatch(r"(\d+)\s*(|B|KiB|MiB|GiB)", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 1GiB)")
    scale = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}[match.group(2).lower()]
    return int(match.group(1)) * scale


def install_peer() -> None:
    if not (PEER_DIR / "node_modules/@tus/s3-store").exists():
        PEER_DIR.mkdir(parents=True, exist_ok=True)
        command = ["npm", "install", "--prefix", str(PEER_DIR), "--no-audit", "--no-fund"]
        subprocess.run([*command, "@tus/server", "@tus/s3-store"], check=True)
    # Beside node_modules, so that its imports resolve there.
    (PEER_DIR / "bench_s3_server.mjs").write_text(TUS_S3_SERVER_JS)


def terminate(port: int, path: str) -> None:
    """Remove a finished upload (tus termination), so the bucket does not fill round by round."""
    with Connection("127.0.0.1", port) as conn:
        conn.request("DELETE", path, {"Tus-Resumable": "1.0.0"})


def presigned(server: S3Server, operation: str, key: str) -> str:
    session = botocore.session.get_session()
    s3 = session.create_client("s3", **client_kwargs(server))
    url: str = s3.generate_presigned_url(operation, Params={"Bucket": server.bucket, "Key": key}, ExpiresIn=3600)
    return url


def get_all(port: int, target: str, host: str | None = None) -> tuple[float, int]:
    """A full GET, body read and dropped; returns (seconds, bytes)."""
    with Connection("127.0.0.1", port) as conn:
        if host:
            conn.host = host  # a presigned URL signs the Host header, port included
        started = time.perf_counter()
        status, _headers, received = conn.request_drain("GET", target, {})
        elapsed = time.perf_counter() - started
    assert status == 200, status
    return elapsed, received


def summary(label: str, ratios: list[float], target: str) -> str:
    return (
        f"{label:<28} ratio median {statistics.median(ratios):5.2f}   "
        f"min-max {min(ratios):.2f}-{max(ratios):.2f}   ({len(ratios)} rounds; target {target})"
    )


class Bench:
    """The servers of one run, and the cases measured against them."""

    def __init__(self, s3: S3Server, tsm_port: int, tus_port: int, data: Path) -> None:
        self.s3, self.tsm_port, self.tus_port, self.data = s3, tsm_port, tus_port, data
        self.size = data.stat().st_size
        self.kept = ""  # the service's last upload, for the downloads

    def ours_upload(self, chunk: int | None) -> float:
        seconds, path = upload(self.tsm_port, self.data, chunk)
        wait_hashed(self.tsm_port, path)  # its background SHA-256 must not overlap the peer's turn
        if self.kept:
            terminate(self.tsm_port, self.kept)
        self.kept = path
        return seconds

    def peer_upload(self, chunk: int | None) -> float:
        seconds, path = upload(self.tus_port, self.data, chunk)
        terminate(self.tus_port, path)
        return seconds

    def ours_download(self) -> float:
        seconds, received = get_all(self.tsm_port, self.kept)
        assert received == self.size, (received, self.size)
        return seconds

    def direct_download(self) -> float:
        key = f"{PREFIX}/files/{self.kept.rsplit('/', 1)[1]}"
        url = urlsplit(presigned(self.s3, "get_object", key))
        seconds, received = get_all(url.port or 80, f"{url.path}?{url.query}", host=url.netloc)
        assert received == self.size, (received, self.size)
        return seconds

    def gateway_put(self) -> float:
        """The store's own ceiling: the same bytes in one presigned PUT (unsigned payload), same client."""
        url = urlsplit(presigned(self.s3, "put_object", "ceiling/data.bin"))
        with Connection("127.0.0.1", url.port or 80) as conn, self.data.open("rb") as source:
            conn.host = url.netloc
            os.sync()
            started = time.perf_counter()
            status, _headers = conn.request("PUT", f"{url.path}?{url.query}", {}, body=(source, 0, self.size))
            elapsed = time.perf_counter() - started
        assert status == 200, status
        return elapsed


def paired(rounds: int, label: str, ours: Callable[[], float], peer: Callable[[], float], size: int) -> list[float]:
    """--rounds pairs, alternating who goes first; prints each; returns ours/peer throughput ratios."""
    ratios = []
    for round_ in range(rounds):
        times: dict[str, float] = {}
        for who in ("ours", "peer") if round_ % 2 == 0 else ("peer", "ours"):
            times[who] = (ours if who == "ours" else peer)()
        rate_ours, rate_peer = size / times["ours"] / MIB, size / times["peer"] / MIB
        ratios.append(rate_ours / rate_peer)
        print(
            f"  {label:<26} round {round_ + 1}: tsm {rate_ours:7.0f} MiB/s   peer {rate_peer:7.0f} MiB/s"
            f"   ratio {ratios[-1]:.2f}",
            flush=True,
        )
    return ratios


def run(args: argparse.Namespace, work: Path, s3: S3Server) -> list[str]:
    data = work / "data.bin"
    make_data(data, args.size)
    if args.sqlite:
        db_url = f"sqlite+aiosqlite:///{work / 'tsm' / 'tsm.sqlite3'}"
    else:
        db_url = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{_db(args)}"
    store_env = {
        "TSM_STORAGE_URL": f"s3://{s3.bucket}/{PREFIX}",
        "TSM_S3_ENDPOINT_URL": s3.endpoint_url,
        "TSM_S3_REGION": s3.region,
        "TSM_S3_ACCESS_KEY_ID": s3.access_key,
        "TSM_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "TSM_KIND_MODULES": "",
        "TSM_MAX_CHUNK_BYTES": str(max(args.size, 8 * MIB)),
    }
    (work / "tsm").mkdir()
    if args.only == "concat":
        with LiveServer(db_url, work / "tsm", **SERVER_ENV, **store_env) as tsm:
            concat_rounds(tsm.port, data, max(args.rounds, 5))
        return []
    tus_port = free_port()
    with (work / "tus.log").open("ab") as log:
        command = ["node", str(PEER_DIR / "bench_s3_server.mjs"), str(tus_port), s3.endpoint_url]
        command += [s3.bucket, s3.region, s3.access_key, s3.secret_key]
        tus = subprocess.Popen(command, cwd=PEER_DIR, stdout=log, stderr=log)
    try:
        with LiveServer(db_url, work / "tsm", **SERVER_ENV, **store_env) as tsm:
            wait_port(tus_port, tus)
            bench = Bench(s3, tsm.port, tus_port, data)
            lines = []
            for label, chunk in (("upload, one PATCH", None), (f"upload, {args.chunk // MIB} MiB PATCHes", args.chunk)):
                ratios = paired(
                    args.rounds,
                    label,
                    lambda c=chunk: bench.ours_upload(c),
                    lambda c=chunk: bench.peer_upload(c),
                    args.size,
                )
                lines.append(summary(label, ratios, ">= 1.2"))
            puts = [bench.gateway_put() for _ in range(args.rounds)]
            lines.append(
                f"{'(the gateway alone)':<28} one presigned PUT of the same bytes: median "
                f"{args.size / statistics.median(puts) / MIB:.0f} MiB/s, best {args.size / min(puts) / MIB:.0f} MiB/s"
            )
            ratios = paired(args.rounds, "download, full GET", bench.ours_download, bench.direct_download, args.size)
            lines.append(summary("download, full GET", ratios, ">= 0.8 of a direct GET"))
            return lines
    finally:
        stop(tus)


def _db(args: argparse.Namespace) -> str:
    """The concatenation case has a database of its own: it may run beside the others."""
    return BENCH_DB + ("_concat" if args.only == "concat" else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("256MiB"), help="bytes per upload (256MiB, 1GiB)")
    parser.add_argument("--chunk", type=parse_size, default=parse_size("8MiB"), help="PATCH size of the chunked case")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sqlite", action="store_true", help="the service on SQLite instead of PostgreSQL")
    parser.add_argument("--only", choices=("concat",), help="concat: parallel partial uploads vs one stream")
    args = parser.parse_args()
    if args.only != "concat":
        install_peer()
    work = Path(tempfile.mkdtemp(prefix="tsm-bench-s3-"))
    if not args.sqlite:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{_db(args)}" WITH (FORCE)'))
        asyncio.run(admin(f'CREATE DATABASE "{_db(args)}"'))
    try:
        with seaweedfs(work / "s3") as s3:
            database = "SQLite" if args.sqlite else "PostgreSQL"
            print(
                f"S3 benchmark: {args.size / MIB:.0f} MiB, SeaweedFS at {s3.endpoint_url}, tsm on {database}, "
                f"{args.rounds} paired rounds, {os.cpu_count()} CPUs (shared: figures are noisy)",
                flush=True,
            )
            lines = run(args, work, s3)
        if not lines:
            return 0
        print()
        for line in lines:
            print(line)
        print("(upload ratio = tsm / @tus/server+@tus/s3-store throughput; download = tsm / direct S3 GET)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.sqlite:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{_db(args)}" WITH (FORCE)'))


if __name__ == "__main__":
    raise SystemExit(main())

"""Uploads and downloads against their peers, in the same run, on loopback.

    upload 1 GiB: one PATCH, and 8 MiB PATCHes  — tsm (PostgreSQL)  vs  @tus/server + @tus/file-store
    download 1 GiB: full GET, and one 512 MiB Range — tsm             vs  nginx (sendfile on)
    --only concat: 1 GiB as one stream  vs  2 and 4 parallel partial uploads + the final (tus
                   concatenation), tsm against itself, paired rounds: median and spread

Every server gets the same minimal HTTP/1.1 client (one keep-alive socket; request bodies go
out with sendfile, response bodies are read into one reused buffer and dropped), so the client
costs the same for each and the figures are the servers'. Each case runs --rounds paired rounds,
every contender once per round, the order reversed every other round; the table gives the
median and the spread (min-max) of the per-round ratios. The page cache is warm for downloads.

Uploads also run, in the same rounds, two references:
    disk alone   the same bytes written (O_DIRECT) and fdatasync'ed per PATCH, no HTTP
    ceiling      bench/drain_server.py: a bare ASGI app under this server's uvicorn settings
                 that only reads the body (no database, no disk): the most receiving can give

Peers (installed once, outside the repository):
    npm install --prefix /tmp/tuspeer @tus/server @tus/file-store      (done here if missing)
    apt-get install -y nginx-light

    .venv/bin/python bench/bench_files.py [--size-mib 1024] [--rounds 5] [--only downloads]
    .venv/bin/python bench/bench_files.py --only concat --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import mmap
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from files_http import Connection  # bench/files_http.py, beside this script

ROOT = Path(__file__).resolve().parent.parent

PEER_DIR = Path("/tmp/tuspeer")
PG_ADMIN = os.environ.get("TSM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
BENCH_DB = "tsm_bench_files"
MIB = 1 << 20

TUS_SERVER_JS = """
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';
const [port, directory] = process.argv.slice(2);
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) });
server.listen({ host: '127.0.0.1', port: Number(port) });
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def make_data(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    with path.open("wb") as handle:
        left = size
        block = os.urandom(8 * MIB)
        while left:
            handle.write(block[: min(left, len(block))])
            left -= min(left, len(block))
            block = block[1:] + block[:1]  # not one repeated block, but cheap


def upload(port: int, data: Path, chunk: int | None) -> tuple[float, str]:
    """Create a tus upload and PATCH the whole file; returns (seconds, upload path)."""
    size = data.stat().st_size
    with Connection("127.0.0.1", port) as conn, data.open("rb") as source:
        status, headers = conn.request("POST", "/files", {"Upload-Length": str(size), "Tus-Resumable": "1.0.0"})
        assert status == 201, (status, headers)
        path = urlsplit(headers["location"]).path
        os.sync()
        started = time.perf_counter()
        offset = 0
        while offset < size:
            count = min(chunk or size, size - offset)
            status, headers = conn.request(
                "PATCH",
                path,
                {
                    "Tus-Resumable": "1.0.0",
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
                body=(source, offset, count),
            )
            assert status == 204, (status, headers)
            offset = int(headers["upload-offset"])
        return time.perf_counter() - started, path


def stream(port: int, data: Path, start: int, end: int, concat: dict[str, str]) -> str:
    """POST an upload of bytes ``start..end`` of ``data`` and send them in one PATCH; its path."""
    with Connection("127.0.0.1", port) as conn, data.open("rb") as source:
        headers = {"Upload-Length": str(end - start), "Tus-Resumable": "1.0.0", **concat}
        status, answer = conn.request("POST", "/files", headers)
        assert status == 201, (status, answer)
        path = urlsplit(answer["location"]).path
        patch = {"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        status, answer = conn.request("PATCH", path, patch, body=(source, start, end - start))
        assert status == 204 and int(answer["upload-offset"]) == end - start, (status, answer)
        return path


def parallel_upload(port: int, data: Path, streams: int) -> tuple[float, float, str]:
    """The whole file as ``streams`` parallel partial uploads and their final (one stream: a
    plain upload); seconds from the first POST to the final's 201, of them the final's POST,
    and the file's path."""
    size = data.stat().st_size
    cuts = [size * i // streams for i in range(streams + 1)]
    os.sync()
    started = time.perf_counter()
    if streams == 1:
        path = stream(port, data, 0, size, {})
        return time.perf_counter() - started, 0.0, path
    with ThreadPoolExecutor(streams) as pool:
        partial = {"Upload-Concat": "partial"}
        paths = list(pool.map(lambda i: stream(port, data, cuts[i], cuts[i + 1], partial), range(streams)))
    with Connection("127.0.0.1", port) as conn:
        final_started = time.perf_counter()
        status, answer = conn.request(
            "POST", "/files", {"Tus-Resumable": "1.0.0", "Upload-Concat": "final;" + " ".join(paths)}
        )
    ended = time.perf_counter()
    assert status == 201, (status, answer)
    return ended - started, ended - final_started, urlsplit(answer["location"]).path


def concat_rounds(port: int, data: Path, rounds: int) -> None:
    """Paired rounds (each runs 1, 2 and 4 streams, the order rotating); per-round ratios."""
    size = data.stat().st_size
    counts = (1, 2, 4)
    rates: dict[int, list[float]] = {n: [] for n in counts}
    finals: dict[int, list[float]] = {n: [] for n in counts}
    for number in range(rounds):
        order = counts[number % 3 :] + counts[: number % 3]
        for streams in order:
            seconds, final, path = parallel_upload(port, data, streams)
            rates[streams].append(size / seconds / MIB)
            finals[streams].append(final)
            wait_hashed(port, path)  # the background SHA-256 must not overlap the next run
            with Connection("127.0.0.1", port) as conn:
                conn.request("DELETE", path, {"Tus-Resumable": "1.0.0"})
    print(f"\nconcatenation benchmark: {size // MIB} MiB, {rounds} paired rounds, loopback, {os.cpu_count()} CPUs")
    print(f"{'case':<34}{'median MB/s':>12}{'min':>8}{'max':>8}{'ratio (median, min-max)':>28}{'final POST s':>14}")
    for streams in counts:
        ratios = [rate / single for rate, single in zip(rates[streams], rates[1], strict=True)]
        label = "1 stream (plain upload)" if streams == 1 else f"{streams} partial streams + final"
        spread = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        row = rates[streams]
        final = statistics.median(finals[streams])
        print(f"{label:<34}{statistics.median(row):>12.0f}{min(row):>8.0f}{max(row):>8.0f}{spread:>28}{final:>14.2f}")


def durable_disk(data: Path, target: Path, chunk: int | None) -> float:
    """The disk alone, no HTTP: each PATCH's bytes written (O_DIRECT) and fdatasync'ed, as the
    tus rule "never report an offset ahead of the disk" needs. Returns the seconds spent writing."""
    size = data.stat().st_size
    step = chunk or size
    block = mmap.mmap(-1, min(step, 8 * MIB))
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT)
    spent = 0.0
    try:
        with data.open("rb", buffering=0) as source:
            os.sync()
            offset = 0
            while offset < size:
                end = min(offset + step, size)
                while offset < end:
                    count = source.readinto(memoryview(block)[: min(len(block), end - offset)])  # type: ignore[attr-defined]
                    started = time.perf_counter()
                    os.pwrite(fd, memoryview(block)[:count], offset)
                    spent += time.perf_counter() - started
                    offset += count
                started = time.perf_counter()
                os.fdatasync(fd)
                spent += time.perf_counter() - started
    finally:
        os.close(fd)
        target.unlink()
    return spent


def wait_hashed(port: int, path: str, timeout: float = 120) -> None:
    """Our server hashes a finished upload in the background: let it finish before the next run."""
    deadline = time.monotonic() + timeout
    with Connection("127.0.0.1", port) as conn:
        while conn.get_json(f"{path}/info").get("sha256") is None:  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise RuntimeError("the upload's SHA-256 never appeared")
            time.sleep(0.05)


def download(port: int, path: str, byte_range: tuple[int, int] | None) -> tuple[float, int]:
    headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else {}
    with Connection("127.0.0.1", port) as conn:
        started = time.perf_counter()
        status, _headers, received = conn.request_drain("GET", path, headers)
        elapsed = time.perf_counter() - started
    assert status == (206 if byte_range else 200), status
    return elapsed, received


def download_rate(port: int, path: str, byte_range: tuple[int, int] | None, size: int) -> float:
    expected = size if byte_range is None else byte_range[1] - byte_range[0] + 1
    seconds, received = download(port, path, byte_range)
    assert received == expected, (received, expected)
    return expected / seconds / MIB


def span_of(size: int) -> tuple[int, int]:
    """A 512 MiB (half the file) range that starts off any block boundary."""
    return size // 7, size // 7 + size // 2 - 1


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def paired(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each round runs every contender once (the order alternates: forwards, then backwards),
    so that drift in the machine's load falls on all of them alike. Returns the MB/s per round."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for number in range(rounds):
        order = list(runs) if number % 2 == 0 else list(reversed(runs))
        for name in order:
            rates[name].append(runs[name]())
    return rates


def ratios(ours: list[float], theirs: list[float]) -> list[float]:
    return [a / b for a, b in zip(ours, theirs, strict=True)]


def start_drain(port: int, log: Any) -> subprocess.Popen[bytes]:
    """The ceiling: a bare ASGI app under this server's uvicorn settings that only reads bodies."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench'}", "TSM_PORT": str(port)}
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "drain_server.py")], env=env, stdout=log, stderr=log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds per case (median and spread)")
    parser.add_argument(
        "--only",
        choices=("upload-1", "upload-8mib", "uploads", "downloads", "concat"),
        help="run only some cases; concat: parallel partial uploads vs one stream",
    )
    args = parser.parse_args()
    size = args.size_mib * MIB

    if args.only != "concat" and not (PEER_DIR / "node_modules/@tus/file-store").exists():
        subprocess.run(
            ["npm", "install", "--prefix", str(PEER_DIR), "--no-audit", "--no-fund", "@tus/server", "@tus/file-store"],
            check=True,
        )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if args.only != "concat" and not Path(nginx).exists():
        print("nginx is missing: apt-get install -y nginx-light", file=sys.stderr)
        return 2

    # The concatenation case has its own database and directory: it may run beside the others.
    bench_db = BENCH_DB + ("_concat" if args.only == "concat" else "")
    work = Path(tempfile.mkdtemp(prefix="tsm-bench-concat-" if args.only == "concat" else "tsm-bench-files-"))
    work.chmod(0o755)  # nginx workers run as www-data
    data = work / "data.bin"
    processes: list[subprocess.Popen[bytes]] = []
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)'))
    asyncio.run(admin(f'CREATE DATABASE "{bench_db}"'))
    try:
        make_data(data, size)
        db_url = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{bench_db}"
        tsm_port, tus_port, nginx_port, drain_port = free_port(), free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TSM_DATABASE_URL": db_url,
            "TSM_STORAGE_DIR": str(work / "tsm"),
            "TSM_PORT": str(tsm_port),
            "TSM_LOG_LEVEL": "warning",
        }
        log = (work / "servers.log").open("ab")
        tsm = subprocess.Popen([sys.executable, "-m", "app", "run"], env=env, cwd=ROOT, stdout=log, stderr=log)
        processes.append(tsm)
        if args.only == "concat":
            wait_port(tsm_port, tsm)
            try:
                concat_rounds(tsm_port, data, max(args.rounds, 5))
            except Exception:
                print((work / "servers.log").read_text()[-4000:], file=sys.stderr)
                raise
            return 0
        (PEER_DIR / "bench_server.mjs").write_text(TUS_SERVER_JS)
        (work / "tus").mkdir()
        tus = subprocess.Popen(
            ["node", str(PEER_DIR / "bench_server.mjs"), str(tus_port), str(work / "tus")],
            cwd=PEER_DIR,
            stdout=log,
            stderr=log,
        )
        processes.append(tus)
        (work / "www").mkdir()
        (work / "nginx.conf").write_text(NGINX_CONF.format(tmp=work, port=nginx_port, root=work / "www"))
        nginx_process = subprocess.Popen([nginx, "-c", str(work / "nginx.conf")], stdout=log, stderr=log)
        processes.append(nginx_process)
        drain = start_drain(drain_port, log)
        processes.append(drain)
        for port, process in ((tsm_port, tsm), (tus_port, tus), (nginx_port, nginx_process), (drain_port, drain)):
            wait_port(port, process)

        rows: list[tuple[str, dict[str, list[float]], str]] = []
        last_upload: list[str] = []  # our newest upload: what the downloads read

        def ours(chunk: int | None) -> float:
            seconds, path = upload(tsm_port, data, chunk)
            wait_hashed(tsm_port, path)
            with Connection("127.0.0.1", tsm_port) as conn:
                for old in last_upload:
                    conn.request("DELETE", old, {"Tus-Resumable": "1.0.0"})
            last_upload[:] = [path]
            return size / seconds / MIB

        def peer(chunk: int | None) -> float:
            seconds, _ = upload(tus_port, data, chunk)
            for leftover in (work / "tus").iterdir():
                leftover.unlink()
            return size / seconds / MIB

        def disk(chunk: int | None) -> float:
            return size / durable_disk(data, work / "disk.bin", chunk) / MIB

        def ceiling(chunk: int | None) -> float:
            return size / upload(drain_port, data, chunk)[0] / MIB

        cases = [("upload, one PATCH", None), ("upload, 8 MiB PATCHes", 8 * MIB)]
        if args.only == "upload-1":
            cases = cases[:1]
        elif args.only == "upload-8mib":
            cases = cases[1:]
        elif args.only == "downloads":
            cases = cases[1:]  # one upload case gives the downloads their file
        for label, chunk in cases:
            runs = {
                "tsm": functools.partial(ours, chunk),
                "peer": functools.partial(peer, chunk),
                "disk": functools.partial(disk, chunk),
                "ceiling": functools.partial(ceiling, chunk),
            }
            rounds = 1 if args.only == "downloads" else args.rounds
            rows.append((label, paired(rounds, runs), "@tus/server"))

        # Downloads: the last upload, served by us and (hard-linked, same page cache) by nginx.
        download_cases = []
        if args.only in (None, "downloads"):
            download_cases = [("download, full", None), ("download, 512 MiB range", span_of(size))]
            file_id = last_upload[0].rsplit("/", 1)[1]
            os.link(work / "tsm" / "files" / file_id, work / "www" / "data.bin")
            download(tsm_port, last_upload[0], None)  # warm the page cache for both
        for label, byte_range in download_cases:
            runs = {
                "tsm": functools.partial(download_rate, tsm_port, last_upload[0], byte_range, size),
                "peer": functools.partial(download_rate, nginx_port, "/data.bin", byte_range, size),
            }
            rows.append((label, paired(args.rounds, runs), "nginx"))

        report(rows, args, size)
        return 0
    finally:
        for process in processes:
            stop(process)
        if os.environ.get("TSM_BENCH_KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)'))


def report(rows: list[tuple[str, dict[str, list[float]], str]], args: argparse.Namespace, size: int) -> None:
    print(
        f"\nfiles benchmark: {args.size_mib} MiB, median of {args.rounds} paired rounds [min-max], "
        f"loopback, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'case':<26}{'tsm MB/s':>10}{'peer MB/s':>11}{'ratio':>7}{'spread':>12}   peer")
    for label, rates, peer_name in rows:
        ratio = ratios(rates["tsm"], rates["peer"])
        print(
            f"{label:<26}{median(rates['tsm']):>10.0f}{median(rates['peer']):>11.0f}"
            f"{median(ratio):>7.2f}{spread(ratio):>12}   {peer_name}"
        )
    print("(MB/s = MiB/s)")
    for label, rates, _peer in rows:
        if "disk" not in rates:
            continue
        to_disk, to_ceiling = ratios(rates["tsm"], rates["disk"]), ratios(rates["tsm"], rates["ceiling"])
        print(
            f"{label}: disk alone (write + fdatasync per PATCH, no HTTP) {median(rates['disk']):.0f} MB/s, "
            f"tsm/disk {median(to_disk):.2f} [{spread(to_disk)}]; ceiling (bare ASGI app draining the body, "
            f"same uvicorn) {median(rates['ceiling']):.0f} MB/s, tsm/ceiling {median(to_ceiling):.2f} "
            f"[{spread(to_ceiling)}]. @tus/file-store never fsyncs: its rate is the page cache's."
        )


if __name__ == "__main__":
    raise SystemExit(main())

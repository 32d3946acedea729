"""Benchmark: table → CSV export, the service (``export_csv`` via the HTTP API on a real server)
against ``psql \\copy (SELECT ...) TO file`` on the same table, in the same run.

    .venv/bin/python bench/bench_export.py [--rows 2000000] [--rounds 5] [--parallel N] [--page-rows 50000]

Makes a scratch database on the local PostgreSQL (``TSM_BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``), fills a 7-column table in the ``local``
owner's namespace, and in each round (the order rotating) times the service (with
``TSM_EXPORT_PARALLEL`` = N), one ``psql \\copy``, and two parallel peers: N ``psql \\copy``
processes at once, each ``SELECT *`` of its share of the heap (the ceiling: the best the
machine does with N streams), and N of the service's own SELECT, each a share of the key
range (what the database's formatting of that SELECT allows). Prints the median and spread of
the per-round ratios to one psql (target: service ≥ 1.2×) and the service process's CPU time,
checks the service's file is byte-identical to ``psql \\copy`` of
the same SELECT, and drops the database. Files go to bench/data/ (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "export"
ADMIN_URL = os.environ.get("TSM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA, TABLE = "data_local", "bench"

FILL = f"""
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.{TABLE} (
    id bigint PRIMARY KEY, name text NOT NULL, qty integer, price numeric(12, 2),
    ratio double precision, active boolean, created timestamptz NOT NULL);
INSERT INTO {SCHEMA}.{TABLE}
SELECT g,
       CASE WHEN g % 10 = 0 THEN 'customer "' || g || '", special' ELSE 'customer ' || md5(g::text) END,
       CASE WHEN g % 17 = 0 THEN NULL ELSE (g * 7919) % 100000 END,
       ((g * 104729) % 10000000) / 100.0,
       (g % 1000) / 7.0,
       g % 3 = 0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '17 seconds'
FROM generate_series(1::bigint, $ROWS) AS g;
"""


def dsn(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def create_database(name: str, rows: int) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn(name))
    try:
        await conn.execute(FILL.replace("$ROWS", str(rows)))
        await conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.{TABLE}")
        await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.{TABLE}")  # warm the cache for both peers
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def psql_copy(database: str, query: str, out: Path, header: bool = True) -> subprocess.Popen[bytes]:
    options = "FORMAT csv, HEADER" if header else "FORMAT csv"
    command = f"\\copy ({query}) TO '{out}' ({options})"
    return subprocess.Popen(["psql", dsn(database), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command])


def wait_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError(f"psql exited with {process.returncode}")


def time_psql(database: str, out: Path, order: str = "") -> float:
    started = time.perf_counter()
    wait_all([psql_copy(database, f"SELECT * FROM {SCHEMA}.{TABLE}{order}", out)])
    return time.perf_counter() - started


async def heap_blocks(database: str) -> int:
    conn = await asyncpg.connect(dsn(database))
    try:
        return int(await conn.fetchval(f"SELECT pg_relation_size('{SCHEMA}.{TABLE}') / 8192"))
    finally:
        await conn.close()


def time_parallel(database: str, queries: list[str], parts: Path) -> float:
    """``len(queries)`` psql processes at once, each ``\\copy`` of its query to a file of its own."""
    started = time.perf_counter()
    wait_all([psql_copy(database, q, parts / f"part-{i}.csv", header=i == 0) for i, q in enumerate(queries)])
    return time.perf_counter() - started


def heap_shares(blocks: int, parallel: int) -> list[str]:
    """The best parallel peer: each process ``SELECT *`` of its share of the heap (a TID range
    scan: no order, no formatting of ours)."""
    cuts = [blocks * i // parallel for i in range(parallel)] + [blocks + 1]
    table = f"{SCHEMA}.{TABLE}"
    return [
        f"SELECT * FROM {table} WHERE ctid >= '({lo},0)' AND ctid < '({hi},0)'" for lo, hi in itertools.pairwise(cuts)
    ]


def key_shares(rows: int, parallel: int) -> list[str]:
    """The service's own SELECT, each process a share of the key range: what N streams of the
    service's query cost the database and a client that only writes them out."""
    cuts = [1 + rows * i // parallel for i in range(parallel)] + [rows + 1]
    select, _, order = service_query().partition(" ORDER BY ")
    return [f"{select} WHERE id >= {lo} AND id < {hi} ORDER BY {order}" for lo, hi in itertools.pairwise(cuts)]


def service_query() -> str:
    """The service's own SELECT for the bench table (its text formats; DateStyle ISO), to check its bytes."""
    from app.services.csv_export.source_pg import canonical

    types = {"price": "numeric(12,2)", "active": "boolean", "created": "timestamp with time zone"}
    columns = ["id", "name", "qty", "price", "ratio", "active", "created"]
    select = ", ".join(f"{canonical(c, types.get(c, 'text'), iso_dates=True)} AS {c}" for c in columns)
    return f"SELECT {select} FROM {SCHEMA}.{TABLE} ORDER BY id"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The service as it is deployed: ``python -m app run`` on a loopback port."""

    def __init__(self, database: str, storage: Path, page_rows: int, parallel: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TSM_DATABASE_URL": dsn(database).replace("postgresql://", "postgresql+asyncpg://", 1),
            "TSM_STORAGE_DIR": str(storage),
            "TSM_PORT": str(self.port),
            "TSM_POLL_INTERVAL": "0.05",
            "TSM_LOG_LEVEL": "warning",
            "TSM_EXPORT_PAGE_ROWS": str(page_rows),
            "TSM_EXPORT_PARALLEL": str(parallel),
        }
        self.log = (storage.parent / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "run"], env=env, cwd=ROOT, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not start; see bench/data/export/server.log")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def time_service(server: Server, storage: Path) -> tuple[float, Path, dict]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = time.perf_counter()
        response = client.post("/tasks", json={"kind": "export_csv", "params": {"table": TABLE}})
        response.raise_for_status()
        task_id = response.json()["id"]
        while True:
            task = client.get(f"/tasks/{task_id}").json()
            if task["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    if task["state"] != "succeeded":
        raise RuntimeError(f"export ended {task['state']}: {task['error']}")
    return elapsed, storage / "files" / task["result"]["file_id"], task


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}× (spread {min(values):.2f}–{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds, the peers' order alternating")
    parser.add_argument("--keep", action="store_true", help="keep the CSV files in bench/data/export")
    parser.add_argument("--page-rows", type=int, default=50_000, help="TSM_EXPORT_PAGE_ROWS for the service")
    parser.add_argument(
        "--parallel", type=int, default=None, help="TSM_EXPORT_PARALLEL for the service (default: the setting's)"
    )
    args = parser.parse_args()

    import asyncio

    from app.config import Settings

    parallel = args.parallel or Settings(_env_file=None).export_streams  # type: ignore[call-arg]
    database = f"tsm_bench_export_{os.getpid()}"
    shutil.rmtree(DATA, ignore_errors=True)
    storage = DATA / "storage"
    storage.mkdir(parents=True)
    print(f"filling {args.rows:,} rows (7 columns) in scratch database {database} …", flush=True)
    server = None
    try:
        asyncio.run(create_database(database, args.rows))
        blocks = asyncio.run(heap_blocks(database))
        server = Server(database, storage, args.page_rows, parallel)
        peers = ["psql", "service", "ceiling", "ours"]
        times: dict[str, list[float]] = {peer: [] for peer in peers}
        cpu: list[float] = []
        for round_ in range(args.rounds):
            psql_out = DATA / f"psql-{round_}.csv"
            for peer in peers[round_ % 4 :] + peers[: round_ % 4]:  # each peer goes first in turn
                if peer == "psql":
                    times[peer].append(time_psql(database, psql_out))
                elif peer == "service":
                    before = cpu_seconds(server.process.pid)
                    elapsed, service_out, task = time_service(server, storage)
                    times[peer].append(elapsed)
                    cpu.append(cpu_seconds(server.process.pid) - before)
                elif peer == "ceiling":
                    times[peer].append(time_parallel(database, heap_shares(blocks, parallel), DATA))
                else:
                    times[peer].append(time_parallel(database, key_shares(args.rows, parallel), DATA))
            if round_ == 0:  # the same SELECT through psql must give the service's bytes
                ordered = DATA / "psql-service-query.csv"
                wait_all([psql_copy(database, service_query(), ordered)])
                same = sha256(ordered) == sha256(service_out)
                ordered.unlink()
            p = times["psql"][-1]
            print(
                f"round {round_ + 1}: psql {p:.2f}s, service {times['service'][-1]:.2f}s "
                f"({p / times['service'][-1]:.2f}×, its process {cpu[-1]:.2f} CPU-s), "
                f"{parallel}× psql SELECT * {times['ceiling'][-1]:.2f}s ({p / times['ceiling'][-1]:.2f}×), "
                f"{parallel}× psql of the service's SELECT {times['ours'][-1]:.2f}s ({p / times['ours'][-1]:.2f}×), "
                f"{service_out.stat().st_size / 1e6:.0f} MB, rows {task['result']['rows']:,}",
                flush=True,
            )
            if not args.keep:
                psql_out.unlink()
                service_out.unlink()
        rate = {peer: args.rows / statistics.median(elapsed) for peer, elapsed in times.items()}
        ratio = {peer: [p / t for p, t in zip(times["psql"], elapsed, strict=True)] for peer, elapsed in times.items()}
        print(f"service file byte-identical to psql \\copy of the same SELECT: {same}")
        n = parallel
        print(f"rows/s, median round: psql {rate['psql']:,.0f}; service (N={n}) {rate['service']:,.0f};")
        print(f"  {n}× psql SELECT * {rate['ceiling']:,.0f}; {n}× psql of the service's SELECT {rate['ours']:,.0f}")
        print(f"service / psql, per round                : {spread(ratio['service'])} over {args.rounds} rounds")
        print(f"{n}× psql SELECT * / psql (the ceiling)   : {spread(ratio['ceiling'])}")
        print(f"{n}× psql of the service's SELECT / psql : {spread(ratio['ours'])}")
        print(f"service N={n}, page {args.page_rows:,} rows; its process {statistics.median(cpu):.2f} CPU-s (median)")
    finally:
        if server is not None:
            server.stop()
        asyncio.run(drop_database(database))
        if not args.keep:
            shutil.rmtree(storage, ignore_errors=True)
            for part in DATA.glob("part-*.csv"):
                part.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

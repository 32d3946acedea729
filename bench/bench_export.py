"""Benchmark: table → CSV export, the service (``export_csv`` via the HTTP API on a real server)
against ``psql \\copy (SELECT ...) TO file`` on the same table, in the same run.

    .venv/bin/python bench/bench_export.py [--rows 2000000] [--runs 1] [--page-rows 50000]

Makes a scratch database on the local PostgreSQL (``TSM_BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``), fills a 7-column table in the ``local``
owner's namespace, times both, prints rows/s and the ratio (target ≥ 0.7× psql), checks the
two files are byte-identical, and drops the database. Files go to bench/data/ (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
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


def time_psql(database: str, out: Path, order: str = "") -> float:
    url = dsn(database)
    command = f"\\copy (SELECT * FROM {SCHEMA}.{TABLE}{order}) TO '{out}' (FORMAT csv, HEADER)"
    started = time.perf_counter()
    subprocess.run(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command], check=True)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The service as it is deployed: ``python -m app run`` on a loopback port."""

    def __init__(self, database: str, storage: Path, page_rows: int) -> None:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=1, help="alternate the two peers this many times; best counts")
    parser.add_argument("--keep", action="store_true", help="keep the CSV files in bench/data/export")
    parser.add_argument("--page-rows", type=int, default=50_000, help="TSM_EXPORT_PAGE_ROWS for the service")
    args = parser.parse_args()

    import asyncio

    database = f"tsm_bench_export_{os.getpid()}"
    shutil.rmtree(DATA, ignore_errors=True)
    storage = DATA / "storage"
    storage.mkdir(parents=True)
    print(f"filling {args.rows:,} rows (7 columns) in scratch database {database} …", flush=True)
    server = None
    try:
        asyncio.run(create_database(database, args.rows))
        server = Server(database, storage, args.page_rows)
        psql_times, service_times = [], []
        for run in range(args.runs):
            psql_out = DATA / f"psql-{run}.csv"
            psql_times.append(time_psql(database, psql_out))
            elapsed, service_out, task = time_service(server, storage)
            service_times.append(elapsed)
            # psql's heap order is not id order; the same query ORDER BY id must give our bytes.
            ordered = DATA / f"psql-ordered-{run}.csv"
            time_psql(database, ordered, " ORDER BY id")
            same = sha256(ordered) == sha256(service_out)
            ordered.unlink()
            size = service_out.stat().st_size
            print(
                f"run {run + 1}: psql {psql_times[-1]:.2f}s, service {elapsed:.2f}s "
                f"({psql_times[-1] / elapsed:.2f}×), "
                f"{size / 1e6:.0f} MB, rows {task['result']['rows']:,}, byte-identical: {same}",
                flush=True,
            )
            if not args.keep:
                psql_out.unlink()
                service_out.unlink()
        psql_rate = args.rows / min(psql_times)
        service_rate = args.rows / min(service_times)
        print(f"psql \\copy     : {psql_rate:12,.0f} rows/s")
        print(f"service export : {service_rate:12,.0f} rows/s  (page {args.page_rows:,} rows, fsync + checkpoint each)")
        paired = sorted(p / s for p, s in zip(psql_times, service_times, strict=True))
        print(f"ratio          : {service_rate / psql_rate:.2f}× psql, best vs best (target ≥ 0.70)")
        print(f"paired ratio   : {paired[len(paired) // 2]:.2f}× psql, median over {len(paired)} run(s)")
    finally:
        if server is not None:
            server.stop()
        asyncio.run(drop_database(database))
        if not args.keep:
            shutil.rmtree(storage, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

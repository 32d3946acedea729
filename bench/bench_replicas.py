"""Three replicas on one PostgreSQL and one SeaweedFS bucket: control latency, failover, claim rate.

    replica 0 ─┐                        each: its own scratch storage dir, the same
    replica 1 ─┼─ PostgreSQL (scratch db) + S3 bucket (SeaweedFS, loopback, started here)
    replica 2 ─┘

(a) pause, sent to a replica that is NOT running the task: from the request to the `paused`
    state event on that replica's GET /tasks/{id}/events (the path: NOTIFY to the runner, its
    next checkpoint, NOTIFY back). Kind `process`, --step-seconds per step (it pauses at the
    next checkpoint, so a step's length is part of the figure). p50 / p95 over --pauses tasks;
    target p95 <= 150 ms.
(b) failover: kill -9 the replica running a task; the time until another replica runs it
    (GET /tasks/{id}: `running` under a new runner). Target <= TSM_LEASE_SECONDS + 2 s.
(c) claims per second: --claims one-step tasks submitted across the three replicas; claim times
    from the task events (`claimed by <runner>`), the rate over the claim window, per replica.

Everything started here is stopped at the end (on an error and on Ctrl-C too).

    .venv/bin/python bench/bench_replicas.py [--pauses 20] [--failovers 3] [--claims 500] [--lease 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.s3 import S3Server, seaweedfs  # noqa: E402
from tests.helpers.server import LiveServer  # noqa: E402

PG = os.environ.get("TSM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test").rsplit("/", 1)[0]
BENCH_DB = "tsm_bench_replicas"
REPLICAS = 3
LONG = 10_000_000  # steps: a task that runs until it is paused, cancelled or killed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Cluster:
    """The replicas, and which of them runs a task (a runner is host:pid:id)."""

    def __init__(self, servers: list[LiveServer]) -> None:
        self.servers = servers

    def index_of(self, runner: str) -> int:
        pid = int(runner.split(":")[1])
        for index, server in enumerate(self.servers):
            if server.process is not None and server.process.pid == pid:
                return index
        raise LookupError(f"no replica has the runner {runner}")

    def other_than(self, index: int) -> LiveServer:
        return self.servers[(index + 1) % len(self.servers)]


async def start_task(http: httpx.AsyncClient, server: LiveServer, steps: int, step_seconds: float) -> str:
    body = {"kind": "process", "params": {"steps": steps, "step_seconds": step_seconds}}
    response = await http.post(f"{server.url}/tasks", json=body)
    response.raise_for_status()
    task_id: str = response.json()["id"]
    return task_id


async def wait_running(
    http: httpx.AsyncClient, server: LiveServer, task_id: str, *, not_runner: str | None = None, timeout: float = 60
) -> tuple[dict[str, Any], float]:
    """Poll (every 10 ms) until the task is running, under a runner other than ``not_runner``;
    returns the task and the moment it was seen so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            task = (await http.get(f"{server.url}/tasks/{task_id}")).json()
            if task["state"] == "running" and task["runner"] and task["runner"] != not_runner:
                return task, time.perf_counter()
        await asyncio.sleep(0.01)
    raise TimeoutError(f"task {task_id} was not running within {timeout}s")


async def state_events(http: httpx.AsyncClient, url: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a server-sent event stream."""
    async with http.stream("GET", url, timeout=httpx.Timeout(60, read=None)) as response:
        response.raise_for_status()
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                yield name, json.loads(line[6:])


def epoch(iso: str) -> float:
    """A server timestamp (UTC, naive or not) as seconds since the epoch."""
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def pause_latency(
    http: httpx.AsyncClient, cluster: Cluster, step_seconds: float, turn: int
) -> tuple[float, float]:
    """Seconds from the pause request to the `paused` event on the stream, and to the moment the
    runner recorded `paused` (the event's own timestamp: the rest is the way back to the stream)."""
    task_id = await start_task(http, cluster.servers[turn % REPLICAS], LONG, step_seconds)
    task, _ = await wait_running(http, cluster.servers[0], task_id)
    other = cluster.other_than(cluster.index_of(task["runner"]))
    events = state_events(http, f"{other.url}/tasks/{task_id}/events")
    sent = wall = 0.0
    try:
        async for name, data in events:
            # The first progress event follows the replayed history: the stream is live now.
            if name == "progress" and not sent:
                sent, wall = time.perf_counter(), time.time()
                answer = await http.post(f"{other.url}/tasks/{task_id}/pause")
                assert answer.status_code == 202, answer.text
            elif name == "state" and data["state"] == "paused" and sent:
                return time.perf_counter() - sent, epoch(data["at"]) - wall
            elif name == "end":
                break
    finally:
        await events.aclose()
        await http.post(f"{other.url}/tasks/{task_id}/cancel")
    raise RuntimeError(f"task {task_id} ended without pausing")


async def failover(http: httpx.AsyncClient, cluster: Cluster, turn: int, db: str) -> tuple[float, float]:
    """Seconds from the kill -9 to the task running elsewhere, and how much of that the lease had left."""
    task_id = await start_task(http, cluster.servers[turn % REPLICAS], LONG, 0.1)
    task, _ = await wait_running(http, cluster.servers[0], task_id)
    victim = cluster.index_of(task["runner"])
    await asyncio.sleep(0.5)  # a few checkpoints and heartbeats in
    conn = await asyncpg.connect(db)
    try:
        expires = await conn.fetchval("SELECT lease_expires_at FROM tasks WHERE id = $1", task_id)
    finally:
        await conn.close()
    killed, wall = time.perf_counter(), time.time()
    cluster.servers[victim].kill()  # SIGKILL
    left = (expires if expires.tzinfo else expires.replace(tzinfo=UTC)).timestamp() - wall
    watcher = cluster.other_than(victim)
    _, seen = await wait_running(http, watcher, task_id, not_runner=task["runner"], timeout=120)
    await http.post(f"{watcher.url}/tasks/{task_id}/cancel")
    # Three replicas again. In this thread, not another: a Ctrl-C here still reaches the cleanup.
    cluster.servers[victim].start()
    return seen - killed, left


async def count_in(conn: asyncpg.Connection, ids: list[str], state: str) -> int:
    query = "SELECT count(*) FROM tasks WHERE id = ANY($1::text[]) AND state = $2"
    count: int = await conn.fetchval(query, ids, state)
    return count


async def until(conn: asyncpg.Connection, ids: list[str], state: str, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while await count_in(conn, ids, state) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} tasks became {state} within {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def submit_all(
    http: httpx.AsyncClient, cluster: Cluster, count: int, steps: int, step_seconds: float
) -> list[str]:
    limit = asyncio.Semaphore(16)

    async def submit(turn: int) -> str:
        async with limit:
            return await start_task(http, cluster.servers[turn % REPLICAS], steps, step_seconds)

    return list(await asyncio.gather(*(submit(turn) for turn in range(count))))


async def claim_rate(http: httpx.AsyncClient, cluster: Cluster, args: argparse.Namespace, db: str) -> list[str]:
    """Every slot of every replica is first taken by a long task, so the trivial ones queue up whole
    (the HTTP submission's own pace stays out of the figure); cancelling the blockers frees them all."""
    conn = await asyncpg.connect(db)
    try:
        blockers = await submit_all(http, cluster, REPLICAS * args.slots, LONG, 0.1)
        await until(conn, blockers, "running", len(blockers))
        started = time.perf_counter()
        ids = await submit_all(http, cluster, args.claims, 1, 0)
        submitted = time.perf_counter() - started
        queued = await count_in(conn, ids, "queued")
        released = time.perf_counter()
        await asyncio.gather(*(http.post(f"{cluster.servers[0].url}/tasks/{task_id}/cancel") for task_id in blockers))
        await until(conn, ids, "succeeded", len(ids))
        drained = time.perf_counter() - released
        claims = await conn.fetch(
            "SELECT message, at FROM task_events WHERE task_id = ANY($1::text[]) AND message LIKE 'claimed by %'", ids
        )
    finally:
        await conn.close()
    times = sorted(row["at"] for row in claims)
    window = (times[-1] - times[0]).total_seconds() or 1e-9
    per_runner = Counter(row["message"].removeprefix("claimed by ") for row in claims)
    split = ", ".join(str(n) for _, n in sorted(per_runner.items()))
    return [
        f"(c) {args.claims} one-step tasks submitted in {submitted:.2f} s ({args.claims / submitted:.0f}/s over HTTP, "
        f"16 at a time; {queued} still queued behind {len(blockers)} blockers, TSM_MAX_CONCURRENT_TASKS={args.slots})",
        f"    blockers cancelled: {len(claims)} claims in {window:.2f} s = {len(claims) / window:.0f} claims/s across "
        f"{len(per_runner)} runners (per runner: {split}); all succeeded {drained:.2f} s after the release "
        f"({args.claims / drained:.0f} tasks/s)",
    ]


async def measure(cluster: Cluster, args: argparse.Namespace, db: str) -> list[str]:
    lines = []
    async with httpx.AsyncClient(timeout=30) as http:
        latencies, recorded = [], []
        for turn in range(args.pauses):
            seen, stored = await pause_latency(http, cluster, args.step_seconds, turn)
            latencies.append(1000 * seen)
            recorded.append(1000 * stored)
            print(
                f"  pause {turn + 1:>3}: {latencies[-1]:6.0f} ms (recorded paused after {recorded[-1]:.0f} ms)",
                flush=True,
            )
        lines.append(
            f"(a) pause on a replica not running the task, to `paused` (SSE), {len(latencies)} tasks, "
            f"steps of {args.step_seconds * 1000:.0f} ms: p50 {statistics.median(latencies):.0f} ms, "
            f"p95 {percentile(latencies, 0.95):.0f} ms, max {max(latencies):.0f} ms (target p95 <= 150 ms)"
        )
        lines.append(
            f"    of which to the runner's `paused` record: p50 {statistics.median(recorded):.0f} ms, "
            f"p95 {percentile(recorded, 0.95):.0f} ms"
        )
        gaps = []
        for turn in range(args.failovers):
            gap, left = await failover(http, cluster, turn, db)
            gaps.append(gap)
            print(f"  failover {turn + 1}: {gap:.2f} s (the lease had {left:.2f} s left at the kill)", flush=True)
        lines.append(
            f"(b) failover after kill -9, {len(gaps)} times: median {statistics.median(gaps):.2f} s, "
            f"max {max(gaps):.2f} s; TSM_LEASE_SECONDS={args.lease:g}, TSM_POLL_INTERVAL={args.poll:g} "
            f"(target <= lease + 2 s = {args.lease + 2:g} s)"
        )
        lines += await claim_rate(http, cluster, args, db)
    return lines


def replica_env(s3: S3Server, args: argparse.Namespace) -> dict[str, str]:
    return {
        "TSM_STORAGE_URL": f"s3://{s3.bucket}/replicas",
        "TSM_S3_ENDPOINT_URL": s3.endpoint_url,
        "TSM_S3_REGION": s3.region,
        "TSM_S3_ACCESS_KEY_ID": s3.access_key,
        "TSM_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "TSM_LEASE_SECONDS": str(args.lease),
        "TSM_POLL_INTERVAL": str(args.poll),
        "TSM_PROGRESS_INTERVAL": "0.5",
        "TSM_KIND_MODULES": "",
        "TSM_MAX_CONCURRENT_TASKS": str(args.slots),
        "TSM_MAX_ACTIVE_TASKS_PER_OWNER": str(max(1000, 2 * args.claims + 100)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pauses", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=0.05, help="step length of the paused tasks")
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--claims", type=int, default=500)
    parser.add_argument("--slots", type=int, default=4, help="TSM_MAX_CONCURRENT_TASKS of every replica")
    parser.add_argument("--lease", type=float, default=5.0, help="TSM_LEASE_SECONDS of every replica")
    parser.add_argument("--poll", type=float, default=1.0, help="TSM_POLL_INTERVAL (the production default)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tsm-bench-replicas-"))
    db = f"{PG}/{BENCH_DB}"
    servers: list[LiveServer] = []
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
    asyncio.run(admin(f'CREATE DATABASE "{BENCH_DB}"'))
    try:
        with seaweedfs(work / "s3") as s3:
            env = replica_env(s3, args)
            for index in range(REPLICAS):
                storage = work / f"replica{index}" / "storage"
                storage.mkdir(parents=True)
                servers.append(LiveServer(db.replace("postgresql://", "postgresql+asyncpg://"), storage, **env))
                servers[-1].start()
            print(
                f"replicas benchmark: {REPLICAS} replicas, {os.cpu_count()} CPUs (shared: figures are noisy)",
                flush=True,
            )
            try:
                lines = asyncio.run(measure(Cluster(servers), args, db))
            finally:
                for server in servers:
                    with contextlib.suppress(Exception):
                        server.stop()
                    server.kill()
        print()
        for line in lines:
            print(line)
        return 0
    finally:
        for server in servers:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))


if __name__ == "__main__":
    raise SystemExit(main())

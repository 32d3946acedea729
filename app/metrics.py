"""Prometheus metrics. Counters live here so that every module increments the same ones.

    in-process (counters, histograms) ── default registry, or PROMETHEUS_MULTIPROC_DIR files
    tasks by kind and state           ── counted in the database at scrape time
                                         (the same answer from every replica and worker)
    ──▶ GET /metrics  (app/routers/metrics.py)

With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the
server starts: every worker then writes its samples there and a scrape of any worker sums them.
"""

from __future__ import annotations

import os
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.models import Task, TaskEvent
from app.services.runtime import states as S

BYTES_UPLOADED = Counter("tsm_bytes_uploaded", "Bytes received by upload PATCH requests.")
BYTES_DOWNLOADED = Counter("tsm_bytes_downloaded", "Bytes sent by file downloads.")
OBJECT_STORE_REQUESTS = Counter(
    "tsm_object_store_requests", "Requests sent to the S3 object store, by operation.", ["operation"]
)
OBJECT_STORE_ERRORS = Counter(
    "tsm_object_store_errors",
    "Object-store requests that failed (an error answer, 404 included, or a connection lost), by operation.",
    ["operation"],
)
OBJECT_STORE_BYTES = Counter(
    "tsm_object_store_bytes", "Body bytes sent to (put, part) or read from (get) the object store.", ["operation"]
)
ROWS_IMPORTED = Counter("tsm_rows_imported", "Rows committed by import tasks.")
ROWS_EXPORTED = Counter("tsm_rows_exported", "Rows written by export tasks.")
CHECKPOINT_SECONDS = Histogram("tsm_checkpoint_seconds", "Time to commit one checkpoint (with its batch).", ["kind"])
CONTROL_LATENCY_SECONDS = Histogram(
    "tsm_control_latency_seconds",
    "From a pause or cancel request to the runner having acted on it (paused, or cleaned up and cancelled).",
    ["action", "kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
HTTP_REQUEST_SECONDS = Histogram(
    "tsm_http_request_duration_seconds",
    "HTTP requests by method, route template and status, until the response is fully sent.",
    ["method", "route", "status"],
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
_ACTION_OF: dict[str, str] = {S.PAUSING: S.PAUSE, S.CANCELLING: S.CANCEL}


async def observe_control_latency(session: AsyncSession, task_id: str, kind: str, source: str, now: datetime) -> None:
    """A runner settled a pausing/cancelling task: observe how long ago the request came.

    The request time is the newest "… requested" event that moved the task into ``source``.
    """
    action = _ACTION_OF.get(source)
    if action is None:
        return
    requested_at = await session.scalar(
        select(func.max(TaskEvent.at)).where(
            TaskEvent.task_id == task_id, TaskEvent.state == source, TaskEvent.message.like("% requested")
        )
    )
    if requested_at is not None:
        if requested_at.tzinfo is None:  # SQLite's func.max() bypasses the column type
            requested_at = requested_at.replace(tzinfo=now.tzinfo)
        CONTROL_LATENCY_SECONDS.labels(action, kind).observe(max(0.0, (now - requested_at).total_seconds()))


async def count_tasks(database: Database) -> dict[tuple[str, str], int]:
    async with database.sessionmaker() as session:
        rows = await session.execute(select(Task.kind, Task.state, func.count()).group_by(Task.kind, Task.state))
    return {(kind, state): count for kind, state, count in rows.all()}


class TaskCountCollector(Collector):
    """``tsm_tasks{kind,state}``: every known kind gets every state, 0 where there are none."""

    def __init__(self, counts: dict[tuple[str, str], int], kinds: list[str]) -> None:
        self.counts = counts
        self.kinds = kinds

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily("tsm_tasks", "Tasks in the database by kind and state.", labels=["kind", "state"])
        kinds = sorted(set(self.kinds) | {kind for kind, _ in self.counts})
        for kind in kinds:
            for state in S.ALL_STATES:
                family.add_metric([kind, state], self.counts.get((kind, state), 0))
        return [family]


def render(counts: dict[tuple[str, str], int], kinds: list[str]) -> bytes:
    """The exposition text: this process's (or all workers') samples, then the task gauge."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
    else:
        registry = REGISTRY
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(TaskCountCollector(counts, kinds))
    return generate_latest(registry) + generate_latest(scrape)

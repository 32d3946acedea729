"""The lease fence: a write made under a token that no longer holds the task changes nothing."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from app.db import Database
from app.models import Task, utcnow
from app.services.runtime import leases

PROGRESS = {"progress_done": 5.0, "progress_total": 10.0, "progress_unit": "steps", "progress_rate": None}


async def _held_task(database: Database, token: str) -> str:
    """A running task leased far into the future: no runner here holds it, no reaper takes it."""
    now = utcnow()
    task = Task(
        owner="local",
        kind="process",
        state="running",
        checkpoint={"step": 1},
        attempts=1,
        max_attempts=3,
        lease_owner="elsewhere",
        lease_token=token,
        lease_expires_at=now + timedelta(hours=1),
        created_at=now,
        updated_at=now,
    )
    async with database.sessionmaker.begin() as session:
        session.add(task)
    return task.id


async def _row(database: Database, task_id: str) -> Task:
    async with database.sessionmaker() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task


async def test_a_stale_token_writes_nothing(app: FastAPI):
    database: Database = app.state.database
    task_id = await _held_task(database, "current")
    stale, current = leases.Lease(task_id, "stale"), leases.Lease(task_id, "current")
    async with database.sessionmaker.begin() as session:
        assert await leases.renew(session, stale, 2.0) is None
        assert await leases.read_state(session, stale) is None
        await leases.write_progress(session, stale, PROGRESS)
        assert not await leases.settle(session, stale, "running", {"state": "queued"})
    async with database.engine.begin() as conn:
        assert await leases.write_checkpoint(conn, stale, {"step": 2}, PROGRESS, 2.0) is None
    row = await _row(database, task_id)
    assert (row.state, row.checkpoint, row.progress_done, row.lease_token) == ("running", {"step": 1}, 0, "current")

    async with database.engine.begin() as conn:
        assert await leases.write_checkpoint(conn, current, {"step": 2}, PROGRESS, 2.0) == leases.Held(None)
    assert (await _row(database, task_id)).checkpoint == {"step": 2}


async def test_settle_moves_only_from_the_state_it_read_and_releases_the_lease(app: FastAPI):
    database: Database = app.state.database
    task_id = await _held_task(database, "current")
    lease = leases.Lease(task_id, "current")
    async with database.sessionmaker.begin() as session:
        assert await leases.read_state(session, lease) == "running"
        assert not await leases.settle(session, lease, "pausing", {"state": "paused"})  # a request moved it
        assert await leases.settle(session, lease, "running", {"state": "paused"})  # paused: nobody claims it
    row = await _row(database, task_id)
    assert (row.state, row.lease_owner, row.lease_token, row.lease_expires_at) == ("paused", None, None, None)

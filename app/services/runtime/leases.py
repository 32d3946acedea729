"""Leases: every write on ``tasks`` made for a runner, fenced by the lease it holds.

A task belongs to the runner holding an unexpired lease on its row: ``lease_owner`` (which
process), ``lease_token`` (this claim; every claim makes a new one) and ``lease_expires_at``.
Each write a runner makes is one statement

    UPDATE tasks SET … WHERE id = :id AND lease_token = :token [AND …] RETURNING …

and a write that matches no row means the lease is gone (it expired, was reaped, and another
runner may hold the task now): the runner stops and writes nothing more. Replicas share
nothing but the database, so this fence is what keeps two runners from both moving one task.

    who        write                                           when
    engine     claim: take a queued or cleanup task, new token  a slot is free (SKIP LOCKED)
    heartbeat  renew: push the expiry ahead, read ``control``   every lease_seconds / 3
    context    checkpoint: state, progress and renew, with the  a kind's ``ctx.checkpoint()``
               kind's batch in the same transaction
    upkeep     progress                                         every progress_interval
    engine     read the state, then settle: move and release    the kind returned, raised or stopped
    reaper     hand back expired leases, any runner's           every heartbeat, and at start
    API        release on control (nobody runs the task)        pause of a queued task, cancel of a
                                                                queued or paused one

The reaper and the API do not hold the lease: the reaper takes only expired ones, and the API
releases only tasks in states no runner holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Update, and_, case, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import Task, utcnow
from app.services.runtime import states as S
from app.services.runtime.bus import notify
from app.services.runtime.events import record_event

RUNNER_LOST = "runner lost (crashed or cut off) on its last attempt"

# The lease columns of a task nobody holds.
RELEASED: Mapping[str, None] = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}


@dataclass(frozen=True)
class Lease:
    """One claim of one task: what fences every write its runner makes."""

    task_id: str
    token: str


@dataclass(frozen=True)
class Held:
    """The lease was still ours when the write committed; ``control`` is the pending request."""

    control: str | None


def _holds(lease: Lease) -> ColumnElement[bool]:
    return and_(Task.id == lease.task_id, Task.lease_token == lease.token)


def _fenced(lease: Lease, *conditions: ColumnElement[bool]) -> Update:
    """``UPDATE tasks … WHERE id = :id AND lease_token = :token``: the one fenced write."""
    return update(Task).where(_holds(lease), *conditions)


def _expiry(lease_seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=lease_seconds)


# -- taking and keeping a lease ----------------------------------------------------------
def _claimable(now: datetime, *, cleanup: bool) -> ColumnElement[bool]:
    if cleanup:  # a cancelling or failing task nobody (any more) holds
        return and_(
            Task.state.in_(S.AFTER_CLEANUP),
            or_(Task.lease_expires_at.is_(None), Task.lease_expires_at < now),
        )
    return and_(Task.state == S.QUEUED, or_(Task.run_after.is_(None), Task.run_after <= now))


async def claim(session: AsyncSession, worker_id: str, lease_seconds: float, *, cleanup: bool) -> Task | None:
    """Take the oldest claimable task under a new lease (a queued one starts its next attempt)."""
    now = utcnow()
    candidate = (
        select(Task.id)
        .where(_claimable(now, cleanup=cleanup))
        .order_by(Task.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    task_id = (await session.execute(candidate)).scalar_one_or_none()
    if task_id is None:
        return None
    was_queued = Task.state == S.QUEUED
    task = (
        await session.execute(
            update(Task)
            .where(Task.id == task_id, _claimable(now, cleanup=cleanup))  # SQLite has no SKIP LOCKED
            .values(
                state=case((was_queued, S.RUNNING), else_=Task.state),
                attempts=case((was_queued, Task.attempts + 1), else_=Task.attempts),
                started_at=case((was_queued, func.coalesce(Task.started_at, now)), else_=Task.started_at),
                lease_owner=worker_id,
                lease_token=str(uuid.uuid4()),
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                run_after=None,
                updated_at=now,
            )
            .returning(Task)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if task is not None and task.state == S.RUNNING:
        await record_event(session, task.id, S.RUNNING, f"claimed by {worker_id}")
    return task


async def renew(session: AsyncSession, lease: Lease, lease_seconds: float) -> Held | None:
    row = (
        await session.execute(_fenced(lease).values(lease_expires_at=_expiry(lease_seconds)).returning(Task.control))
    ).first()
    return None if row is None else Held(row.control)


async def write_checkpoint(
    conn: AsyncConnection,
    lease: Lease,
    state: Mapping[str, Any],
    progress: Mapping[str, Any],
    lease_seconds: float,
) -> Held | None:
    """The checkpoint row write, in the transaction that holds the kind's batch (which a lost
    lease rolls back with it)."""
    now = utcnow()
    row = (
        await conn.execute(
            _fenced(lease)
            .values(checkpoint=state, updated_at=now, lease_expires_at=_expiry(lease_seconds), **progress)
            .returning(Task.control)
        )
    ).first()
    if row is None:
        return None
    await notify(conn, f"task:{lease.task_id}")
    return Held(row.control)


async def write_progress(session: AsyncSession, lease: Lease, progress: Mapping[str, Any]) -> None:
    """Throttled progress between checkpoints; a lost lease simply writes nothing."""
    await session.execute(_fenced(lease).values(**progress))
    await notify(session, f"task:{lease.task_id}")


# -- ending a lease ------------------------------------------------------------------------
async def read_state(session: AsyncSession, lease: Lease) -> str | None:
    """The task's state while the lease is ours; None once it is not."""
    return (await session.execute(select(Task.state).where(_holds(lease)))).scalar_one_or_none()


async def settle(session: AsyncSession, lease: Lease, source: str, values: Mapping[str, Any]) -> bool:
    """Move the task on from ``source`` (as read under the lease) and release the lease.

    False when the lease is gone, or a control request changed the state since it was read."""
    moved = await session.execute(
        _fenced(lease, Task.state == source).values(**RELEASED, updated_at=utcnow(), **values).returning(Task.id)
    )
    return moved.first() is not None


async def expire_all(session: AsyncSession) -> None:
    """Let the reaper take every held lease now (SQLite: a new process is the only runner)."""
    await session.execute(
        update(Task)
        .where(Task.state.in_(S.HELD_BY_RUNNER), Task.lease_token.is_not(None))
        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
    )


async def reap_expired(session: AsyncSession, alive: Collection[str] = ()) -> list[str]:
    """Hand back tasks whose runner vanished (any replica's), and say which.

    ``alive``: tasks the calling process is running; their lease may have lapsed while the
    process was stalled, but their runner did not vanish (its heartbeat renews them).

    running → queued (resumed from its checkpoint), or failing once out of attempts (its
    cleanup is then claimed like a cancel's); pausing → paused. Cancelling and failing tasks
    need nothing here: an expired lease makes them claimable for cleanup directly.
    """
    now = utcnow()
    expired = and_(Task.lease_expires_at.is_not(None), Task.lease_expires_at < now)
    if alive:
        expired = and_(expired, Task.id.not_in(list(alive)))
    plans: tuple[tuple[str, ColumnElement[bool], str, dict[str, Any], str], ...] = (
        # A task that keeps taking its runner down must not do so forever.
        (S.RUNNING, Task.attempts >= Task.max_attempts, S.FAILING, {"error": RUNNER_LOST}, RUNNER_LOST),
        (S.RUNNING, true(), S.QUEUED, {}, "runner lost; resuming from checkpoint"),
        (S.PAUSING, true(), S.PAUSED, {"paused_at": now, "control": None}, "runner lost while pausing"),
    )
    reaped: list[str] = []
    for source, condition, target, values, message in plans:
        rows = await session.execute(
            update(Task)
            .where(Task.state == source, expired, condition)
            .values(state=target, **RELEASED, updated_at=now, **values)
            .returning(Task.id)
        )
        for (task_id,) in rows.all():
            reaped.append(task_id)
            await record_event(session, task_id, target, message)
    if reaped:
        await notify(session, "wake")
    return reaped

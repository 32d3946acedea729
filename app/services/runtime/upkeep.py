"""Upkeep of one engine's running tasks, on timers:

heartbeat ── renew the lease of every task running here; read `control` (the fallback
             for a missed signal); a task whose lease is gone is stopped at once
reaper    ── hand back tasks whose runner vanished (any replica's): running → queued
             (resumed from its checkpoint), pausing → paused; out of attempts → failing
             (whose cleanup any replica then claims, as a cancel's)
progress  ── write the throttled progress of running tasks
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, true, update

from app.models import Task, utcnow
from app.services.runtime import states as S
from app.services.runtime.bus import notify
from app.services.runtime.events import record_event

if TYPE_CHECKING:
    from app.services.runtime.engine import TaskEngine

logger = logging.getLogger("tsm.engine")

RUNNER_LOST = "runner lost (crashed or cut off) on its last attempt"


class Upkeep:
    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine

    async def _every(self, seconds: float, action: Callable[[], Awaitable[None]], what: str) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s failed; retrying", what)

    async def heartbeat_loop(self) -> None:
        async def beat() -> None:
            await self.heartbeat()
            await self.reap_expired()

        await self._every(self.engine.settings.lease_seconds / 3, beat, "heartbeat")

    async def progress_loop(self) -> None:
        await self._every(self.engine.settings.progress_interval, self.flush_progress, "progress flush")

    async def heartbeat(self) -> None:
        engine = self.engine
        now = utcnow()
        for task_id, running in list(engine.running.items()):
            async with engine.database.sessionmaker.begin() as session:
                row = (
                    await session.execute(
                        update(Task)
                        .where(Task.id == task_id, Task.lease_token == running.ctx.lease_token)
                        .values(lease_expires_at=now + engine.lease)
                        .returning(Task.control)
                    )
                ).first()
            if row is None:  # someone else owns it now: stop at once, write nothing
                running.task.cancel()
            elif row.control is not None:
                running.ctx.stop_event.set()

    async def reap_expired(self) -> None:
        """Hand back tasks whose runner vanished; cancelling and failing ones are claimed for
        cleanup directly."""
        engine = self.engine
        now = utcnow()
        expired = and_(Task.lease_expires_at.is_not(None), Task.lease_expires_at < now)
        cleared = {"lease_owner": None, "lease_token": None, "lease_expires_at": None, "updated_at": now}
        plans: tuple[tuple[str, Any, str, dict[str, Any], str], ...] = (
            # A task that keeps taking its runner down must not do so forever.
            (S.RUNNING, Task.attempts >= Task.max_attempts, S.FAILING, {"error": RUNNER_LOST}, RUNNER_LOST),
            (S.RUNNING, true(), S.QUEUED, {}, "runner lost; resuming from checkpoint"),
            (S.PAUSING, true(), S.PAUSED, {"paused_at": now, "control": None}, "runner lost while pausing"),
        )
        reaped: list[str] = []
        async with engine.database.sessionmaker.begin() as session:
            for source, condition, target, values, message in plans:
                rows = await session.execute(
                    update(Task)
                    .where(Task.state == source, expired, condition)
                    .values(state=target, **cleared, **values)
                    .returning(Task.id)
                )
                for (task_id,) in rows.all():
                    reaped.append(task_id)
                    await record_event(session, task_id, target, message)
            if reaped:
                await notify(session, "wake")
        for task_id in reaped:
            engine.bus.publish(task_id)
        if reaped:
            engine.wake()

    async def flush_progress(self) -> None:
        engine = self.engine
        for task_id, running in list(engine.running.items()):
            ctx = running.ctx
            if not ctx.progress_dirty:
                continue
            ctx.progress_dirty = False
            async with engine.database.sessionmaker.begin() as session:
                await session.execute(
                    update(Task)
                    .where(Task.id == task_id, Task.lease_token == ctx.lease_token)
                    .values(**ctx.progress_values())
                )
                await notify(session, f"task:{task_id}")
            engine.bus.publish(task_id)

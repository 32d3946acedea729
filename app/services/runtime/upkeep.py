"""Upkeep of one engine's running tasks, on timers:

heartbeat ── renew the lease of every task running here; read `control` (the fallback
             for a missed signal); a task whose lease is gone is stopped at once
reaper    ── hand back tasks whose runner vanished (any replica's); see leases.reap_expired
progress  ── write the throttled progress of running tasks

It is given the runtime's shared parts, the map of tasks running here and a way to wake the
claim loop, not the engine; the writes themselves are in :mod:`app.services.runtime.leases`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from app.services.runtime import leases
from app.services.runtime.context import Running, RuntimeDeps

logger = logging.getLogger("tsm.engine")


class Upkeep:
    def __init__(self, deps: RuntimeDeps, running: Mapping[str, Running], wake: Callable[[], None]) -> None:
        self.deps = deps
        self.running = running  # the engine's own map: tasks come and go while upkeep runs
        self.wake = wake

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

        await self._every(self.deps.settings.lease_seconds / 3, beat, "heartbeat")

    async def progress_loop(self) -> None:
        await self._every(self.deps.settings.progress_interval, self.flush_progress, "progress flush")

    async def heartbeat(self) -> None:
        for running in list(self.running.values()):
            async with self.deps.database.sessionmaker.begin() as session:
                held = await leases.renew(session, running.ctx.lease, self.deps.settings.lease_seconds)
            if held is None:  # someone else owns it now: stop at once, write nothing
                running.task.cancel()
            elif held.control is not None:
                running.ctx.stop_event.set()

    async def reap_expired(self) -> None:
        async with self.deps.database.sessionmaker.begin() as session:
            reaped = await leases.reap_expired(session, alive=list(self.running))
        for task_id in reaped:
            self.deps.bus.publish(task_id)
        if reaped:
            self.wake()

    async def flush_progress(self) -> None:
        for task_id, running in list(self.running.items()):
            ctx = running.ctx
            if not ctx.progress_dirty:
                continue
            ctx.progress_dirty = False
            async with self.deps.database.sessionmaker.begin() as session:
                await leases.write_progress(session, ctx.lease, ctx.progress_values())
            self.deps.bus.publish(task_id)

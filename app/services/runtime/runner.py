"""What a running task sees: its :class:`TaskContext`.

``checkpoint()`` commits the kind's state (and, through ``work``, its batch) in one transaction
fenced by the lease token, then is the one place where a task pauses or stops: it raises a
:class:`TaskInterrupt`, which the engine turns into the right state by reading the row.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics import CHECKPOINT_SECONDS
from app.models import Task, utcnow
from app.services.runtime.bus import notify

if TYPE_CHECKING:
    from app.services.runtime.engine import TaskEngine

Work = Callable[[AsyncConnection], Awaitable[None]]

RATE_WINDOW_SECONDS = 10.0


class TaskInterrupt(BaseException):
    """The runner must stop at this checkpoint (pause, cancel, shutdown or lost lease).

    A BaseException so that a kind's ``except Exception`` cannot swallow it.
    """


class LeaseLost(TaskInterrupt):
    """Another runner owns this task now; this one must not write anything more."""


class TaskContext:
    def __init__(
        self,
        engine: TaskEngine,
        task: Task,
        lease_token: str,
    ) -> None:
        self.engine = engine
        self.task_id = task.id
        self.kind = task.kind
        self.owner = task.owner
        self.lease_token = lease_token
        self.checkpoint_state: dict[str, Any] | None = task.checkpoint
        self.stop_event = asyncio.Event()
        self.control: str | None = task.control
        self.attempts = task.attempts
        self.max_attempts = task.max_attempts
        self.done = float(task.progress_done or 0)
        self.total: float | None = task.progress_total
        self.unit = task.progress_unit or "steps"
        self.rate: float | None = None
        self._samples: deque[tuple[float, float]] = deque()
        self.progress_dirty = False

    # -- progress -------------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        """True once a pause, cancel or shutdown is pending: a kind may cut its work short."""
        return self.stop_event.is_set() or self.engine.shutting_down

    def progress(self, done: float, total: float | None = None, unit: str | None = None) -> None:
        """Record progress in memory; the engine writes it out at most every progress_interval."""
        self.done = float(done)
        if total is not None:
            self.total = float(total)
        if unit is not None:
            self.unit = unit
        now = time.monotonic()
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_t, first_done = self._samples[0]
        if now - first_t > 0.05:
            self.rate = max(0.0, (self.done - first_done) / (now - first_t))
        self.progress_dirty = True

    def progress_values(self) -> dict[str, Any]:
        return {
            "progress_done": self.done,
            "progress_total": self.total,
            "progress_unit": self.unit,
            "progress_rate": self.rate,
            "progress_at": utcnow(),
        }

    # -- checkpoints ----------------------------------------------------------------------
    async def checkpoint(
        self,
        state: dict[str, Any],
        *,
        done: float | None = None,
        total: float | None = None,
        unit: str | None = None,
        work: Work | None = None,
        final: bool = False,
    ) -> None:
        """Commit ``state`` (with ``work``'s writes) atomically, then pause or stop if asked.

        ``final=True`` marks the commit that completes the task's work: it never stops there,
        since a task that finished before it saw a pause or cancel stays finished.
        """
        if done is not None:
            self.progress(done, total, unit)
        now = utcnow()
        started = time.perf_counter()
        async with self.engine.database.engine.begin() as conn:
            row = await self._commit(conn, state, now, work)
        CHECKPOINT_SECONDS.labels(self.kind).observe(time.perf_counter() - started)
        self.progress_dirty = False
        self.checkpoint_state = state
        self.control = row.control
        self.engine.bus.publish(self.task_id)
        if not final:
            self.raise_if_stopping()

    async def _commit(self, conn: AsyncConnection, state: dict[str, Any], now: Any, work: Work | None) -> Any:
        if work is not None:
            await work(conn)
        result = await conn.execute(
            update(Task)
            .where(Task.id == self.task_id, Task.lease_token == self.lease_token)
            .values(
                checkpoint=state,
                updated_at=now,
                lease_expires_at=now + timedelta(seconds=self.engine.settings.lease_seconds),
                **self.progress_values(),
            )
            .returning(Task.control)
        )
        row = result.first()
        if row is None:
            raise LeaseLost  # leaving the transaction rolls the batch back with the checkpoint
        await notify(conn, f"task:{self.task_id}")
        return row

    def raise_if_stopping(self) -> None:
        if self.control is not None or self.engine.shutting_down:
            raise TaskInterrupt

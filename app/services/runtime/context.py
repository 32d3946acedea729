"""What a running task sees: its :class:`TaskContext`, the whole API a kind is given.

    a kind may use           settings, store, session() / begin(), is_postgres / dialect / database_url,
                             progress(), checkpoint(), stop_requested / stop_event, task_id,
                             kind, owner, attempts / max_attempts, checkpoint_state
    the runtime uses         lease, progress_dirty, progress_values()

``checkpoint()`` commits the kind's state (and, through ``work``, its batch) in one transaction
fenced by the lease token, then is the one place where a task pauses or stops: it raises a
:class:`TaskInterrupt`, which the engine turns into the right state by reading the row.

The context holds no engine: it is given a :class:`RuntimeDeps`, what the runtime's parts share.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.config import Settings
from app.db import Database
from app.metrics import CHECKPOINT_SECONDS
from app.models import Task, utcnow
from app.services.runtime import leases
from app.services.runtime.bus import EventBus

if TYPE_CHECKING:
    from app.services.files.store import ByteStore

Work = Callable[[AsyncConnection], Awaitable[None]]

RATE_WINDOW_SECONDS = 10.0


class TaskInterrupt(BaseException):
    """The runner must stop at this checkpoint (pause, cancel, shutdown or lost lease).

    A BaseException so that a kind's ``except Exception`` cannot swallow it.
    """


class LeaseLost(TaskInterrupt):
    """Another runner owns this task now; this one must not write anything more."""


@dataclass(frozen=True)
class RuntimeDeps:
    """What the engine shares with the contexts and upkeep it makes, in place of itself."""

    database: Database
    bus: EventBus
    settings: Settings
    is_shutting_down: Callable[[], bool]
    store: ByteStore | None = None  # where files' bytes live (None: the local directory)


class TaskContext:
    def __init__(self, deps: RuntimeDeps, task: Task, lease_token: str) -> None:
        self._deps = deps
        self.task_id = task.id
        self.kind = task.kind
        self.owner = task.owner
        self.lease = leases.Lease(task.id, lease_token)
        self.checkpoint_state: Mapping[str, Any] | None = task.checkpoint
        self.stop_event = asyncio.Event()
        self.attempts = task.attempts
        self.max_attempts = task.max_attempts
        self.done = float(task.progress_done or 0)
        self.total: float | None = task.progress_total
        self.unit = task.progress_unit or "steps"
        self.rate: float | None = None
        self._samples: deque[tuple[float, float]] = deque()
        self.progress_dirty = False

    # -- what a kind works with -------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The service's settings (``storage_dir`` among them: where files live)."""
        return self._deps.settings

    @property
    def store(self) -> ByteStore:
        """The ByteStore files live in (``TSM_STORAGE_URL``): where a kind writes its results."""
        if self._deps.store is None:
            from app.services.files.store import LocalStore  # an engine made without the app's store

            return LocalStore(self._deps.settings)
        return self._deps.store

    @property
    def dialect(self) -> str:
        return self._deps.database.dialect

    @property
    def is_postgres(self) -> bool:
        return self._deps.database.is_postgres

    @property
    def database_url(self) -> str:
        """For a kind that opens its own connection (an export's snapshot session)."""
        return self._deps.database.url

    def session(self) -> AsyncSession:
        """An ORM session on the service database (``async with ctx.session() as session``)."""
        return self._deps.database.sessionmaker()

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection in a transaction, committed when the block ends (rolled back if it raises)."""
        return self._deps.database.engine.begin()

    @property
    def stop_requested(self) -> bool:
        """True once a pause, cancel or shutdown is pending: a kind may cut its work short."""
        return self.stop_event.is_set() or self._deps.is_shutting_down()

    # -- progress -------------------------------------------------------------------------
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
        state: Mapping[str, Any],
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
        started = time.perf_counter()
        async with self.begin() as conn:
            if work is not None:
                await work(conn)
            held = await leases.write_checkpoint(
                conn, self.lease, state, self.progress_values(), self._deps.settings.lease_seconds
            )
            if held is None:
                raise LeaseLost  # leaving the transaction rolls the batch back with the checkpoint
        CHECKPOINT_SECONDS.labels(self.kind).observe(time.perf_counter() - started)
        self.progress_dirty = False
        self.checkpoint_state = state
        self._deps.bus.publish(self.task_id)
        if not final and (held.control is not None or self._deps.is_shutting_down()):
            raise TaskInterrupt


@dataclass
class Running:
    """A task running in this process: its asyncio task and its context."""

    task: asyncio.Task[None]
    ctx: TaskContext

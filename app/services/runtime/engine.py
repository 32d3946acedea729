"""The task engine: claims queued tasks, runs them under a lease, and settles how they end.

    claim loop ── FOR UPDATE SKIP LOCKED ──▶ run kind (asyncio task) ──▶ settle from the row
    upkeep     ── heartbeat, reaper and progress writer (app/services/runtime/upkeep.py)

Replicas share nothing but the database: a task belongs to whoever holds an unexpired
lease, and every write a runner makes is fenced by its lease token (app/services/runtime/leases.py).
The engine hands its contexts and upkeep a :class:`RuntimeDeps`, never itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.db import Database
from app.logs import bind
from app.metrics import observe_control_latency
from app.models import Task, utcnow
from app.services.runtime import leases
from app.services.runtime import states as S
from app.services.runtime.bus import EventBus, notify
from app.services.runtime.context import LeaseLost, Running, RuntimeDeps, TaskContext, TaskInterrupt
from app.services.runtime.events import record_event
from app.services.runtime.kinds import TaskKind, registry
from app.services.runtime.upkeep import Upkeep

if TYPE_CHECKING:
    from app.services.files.store import ByteStore

logger = logging.getLogger("tsm.engine")

MAX_SETTLE_ROUNDS = 5
STOP_TIMEOUT = 5.0


class TaskEngine:
    def __init__(self, database: Database, settings: Settings, bus: EventBus, store: ByteStore | None = None) -> None:
        self.database = database
        self.settings = settings
        self.bus = bus
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[str, Running] = {}
        self.shutting_down = False
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(settings.max_concurrent_tasks)
        self._cleanups: set[asyncio.Task[None]] = set()
        self.deps = RuntimeDeps(database, bus, settings, is_shutting_down=lambda: self.shutting_down, store=store)
        self.upkeep = Upkeep(self.deps, self.running, self.wake)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if not self.database.is_postgres:
            # SQLite is single-process: whatever a previous process held, it holds no more.
            async with self.database.sessionmaker.begin() as session:
                await leases.expire_all(session)
        await self.upkeep.reap_expired()
        self._loops = [
            asyncio.create_task(self.upkeep.heartbeat_loop(), name="tsm-heartbeat"),
            asyncio.create_task(self.upkeep.progress_loop(), name="tsm-progress"),
        ]
        if self.settings.max_concurrent_tasks > 0:  # an API-only replica still reaps for the others
            self._loops.append(asyncio.create_task(self._claim_loop(), name="tsm-claim"))
        elif not self.database.is_postgres:
            logger.warning("TSM_MAX_CONCURRENT_TASKS=0 on SQLite: no process will run the tasks")

    async def stop(self) -> None:
        """Graceful stop: running tasks stop at their next checkpoint and go back to the queue."""
        self.shutting_down = True
        for loop in self._loops:
            loop.cancel()
        if self._loops:  # bounded: a stuck database call must not keep the process from exiting
            await asyncio.wait(self._loops, timeout=STOP_TIMEOUT)
        tasks = [r.task for r in self.running.values()]
        for running in self.running.values():
            running.ctx.stop_event.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
            for task in pending:  # past the grace period: drop work since the last checkpoint
                task.cancel()
            if pending:
                _done, stuck = await asyncio.wait(pending, timeout=STOP_TIMEOUT)
                for task in stuck:
                    logger.warning("%s did not stop; its lease will expire and another runner resumes it", task)

    def wake(self) -> None:
        self._wake.set()

    def signal(self, task_id: str) -> None:
        """A control request for ``task_id`` was committed: wake its runner if it is here."""
        running = self.running.get(task_id)
        if running is not None:
            running.ctx.stop_event.set()
        self.bus.publish(task_id)
        self.wake()

    def on_notification(self, payload: str) -> None:
        kind, _, key = payload.partition(":")
        if kind == "control":
            self.signal(key)
        elif kind == "task":
            self.bus.publish(key)
        elif kind == "wake":
            self.wake()

    # -- claiming -----------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while True:
            try:
                # Cleanups (cancelling, failing) do not wait for a slot: they are short and free space.
                while (task := await self._claim_one(cleanup=True)) is not None:
                    cleanup = self._start(task, f"tsm-cleanup-{task.id}")
                    self._cleanups.add(cleanup)
                    cleanup.add_done_callback(self._cleanups.discard)
                claimed = None
                if not self._slots.locked():
                    await self._slots.acquire()
                    claimed = await self._claim_one(cleanup=False)
                    if claimed is None:
                        self._slots.release()
                    else:
                        handle = self._start(claimed, f"tsm-task-{claimed.id}")
                        handle.add_done_callback(lambda _t: self._slots.release())
                        continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("claim loop error; retrying")
                await asyncio.sleep(self.settings.poll_interval)

    async def _claim_one(self, *, cleanup: bool) -> Task | None:
        async with self.database.sessionmaker.begin() as session:
            task = await leases.claim(session, self.worker_id, self.settings.lease_seconds, cleanup=cleanup)
        if task is not None:
            self.bus.publish(task.id)
        return task

    # -- running ------------------------------------------------------------------------
    def _start(self, task: Task, name: str) -> asyncio.Task[None]:
        # Registered before the runner's first step: the heartbeat renews the lease from the
        # moment of the claim, so a slow start on a loaded machine cannot let it lapse.
        assert task.lease_token is not None
        ctx = TaskContext(self.deps, task, task.lease_token)
        handle = asyncio.create_task(self._run(task, ctx), name=name)
        self.running[task.id] = Running(handle, ctx)
        # Also when cancelled before its first step, so its `finally` never ran.
        handle.add_done_callback(lambda _t: self._forget(task.id, handle))
        return handle

    def _forget(self, task_id: str, handle: asyncio.Task[None]) -> None:
        running = self.running.get(task_id)
        if running is not None and running.task is handle:  # not a later claim of the same task
            del self.running[task_id]

    async def _run(self, task: Task, ctx: TaskContext) -> None:
        bind(owner=task.owner, task_id=task.id)  # every line this runner (and its kind) logs names the task
        logger.info("%s task %s (attempt %d)", task.kind, task.state, task.attempts)
        kind = registry.get(task.kind)
        try:
            if kind is None:
                ctx.attempts = ctx.max_attempts  # retrying cannot make an unknown kind known
                await self._settle(ctx, None, None, error=f"unknown task kind {task.kind!r}")
                return
            params = kind.params_model.model_validate(task.params)
            if task.state in S.AFTER_CLEANUP:
                await self._settle(ctx, kind, params)
                return
            try:
                result = await kind.run(params, task.checkpoint, ctx)
            except LeaseLost:
                logger.warning("task %s: lease lost; another runner owns it now", task.id)
            except TaskInterrupt:
                await self._settle(ctx, kind, params)
            except Exception as exc:  # the kind failed: keep its message, maybe retry
                logger.info("task %s failed: %r", task.id, exc)
                await self._settle(ctx, kind, params, error=str(exc) or type(exc).__name__)
            else:
                await self._settle(ctx, kind, params, result=result, finished=True)
        except LeaseLost:
            logger.warning("task %s: lease lost while settling", task.id)
        except asyncio.CancelledError:
            # Hard stop (shutdown grace exceeded, or the lease is gone): the row still holds the
            # last checkpoint; hand the task back unless someone else already owns it.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._settle(ctx, None, None, stopping=True))
            raise
        except Exception:
            logger.exception("task %s: engine error", task.id)
        finally:
            this = asyncio.current_task()
            assert this is not None  # _run always runs as the asyncio task _start made
            self._forget(task.id, this)
            self.wake()

    async def _settle(
        self,
        ctx: TaskContext,
        kind: TaskKind[Any] | None,
        params: Any,
        *,
        result: Any = None,
        finished: bool = False,
        error: str | None = None,
        stopping: bool = False,
    ) -> None:
        """Decide the task's next state from its row, and move it there with a fenced UPDATE.

        ``stopping``: the runner is being torn down; it hands the task back without a cleanup.
        """
        for _ in range(MAX_SETTLE_ROUNDS):
            async with self.database.sessionmaker() as session:
                state = await leases.read_state(session, ctx.lease)
            if state is None:
                raise LeaseLost
            cleaned = state in S.AFTER_CLEANUP and not finished and not (stopping or self.shutting_down)
            if cleaned and kind is not None:
                checkpoint = ctx.checkpoint_state
                await kind.cleanup(params, dict(checkpoint) if checkpoint is not None else None, ctx)
            elif cleaned:
                logger.warning("task %s: unknown kind %r, so no cleanup to run", ctx.task_id, ctx.kind)
            target, values, message = self._next(ctx, state, result, finished, error, cleaned, stopping)
            if await self._move(ctx, state, target, values, message):
                return
        raise LeaseLost

    def _next(
        self,
        ctx: TaskContext,
        state: str,
        result: Any,
        finished: bool,
        error: str | None,
        cleaned: bool,
        stopping: bool,
    ) -> tuple[str, dict[str, Any], str | None]:
        now = utcnow()
        if finished:  # a task that finished before it saw a pause or cancel stays finished
            value = result if isinstance(result, dict) or result is None else {"value": result}
            return S.SUCCEEDED, {"result": value, "finished_at": now, "control": None}, None
        if state in S.AFTER_CLEANUP:  # a failing task keeps its error
            if cleaned:
                return S.AFTER_CLEANUP[state], {"finished_at": now, "control": None}, None
            return state, {}, "runner stopped before cleanup"  # the next runner to claim it cleans up
        if error is not None:
            attempts_left = ctx.attempts < ctx.max_attempts
            if attempts_left and state == S.RUNNING:
                delay = self.settings.retry_backoff_seconds * 2 ** max(0, ctx.attempts - 1)
                values = {"error": error, "run_after": now + timedelta(seconds=delay)}
                return S.QUEUED, values, f"attempt {ctx.attempts} failed: {error}; retrying in {delay:g}s"
            if attempts_left:  # failed while pausing: keep the retry for the resume
                return S.PAUSED, {"error": error, "paused_at": now, "control": None}, error
            return S.FAILING, {"error": error, "control": None}, error
        # Stopping on request is not a failed attempt: the next run continues this one.
        if state == S.PAUSING:
            return S.PAUSED, {"paused_at": now, "control": None, "attempts": Task.attempts - 1}, None
        if stopping or self.shutting_down:
            return S.QUEUED, {"attempts": Task.attempts - 1}, "requeued by shutdown"
        # Pause withdrawn by a resume before the runner acted: run again from the checkpoint.
        return S.QUEUED, {"attempts": Task.attempts - 1}, "resumed before pausing"

    async def _move(
        self, ctx: TaskContext, source: str, target: str, values: dict[str, Any], message: str | None
    ) -> bool:
        now = utcnow()
        progress = ctx.progress_values() if target != S.CANCELLING else {}
        async with self.database.sessionmaker.begin() as session:
            if not await leases.settle(session, ctx.lease, source, {"state": target, **progress, **values}):
                return False
            if target != source or message:
                await record_event(session, ctx.task_id, target, message)
            if target in (S.PAUSED, S.CANCELLED):  # the runner acted on a pause / cancel request
                await observe_control_latency(session, ctx.task_id, ctx.kind, source, now)
            claimable = target == S.QUEUED or target in S.AFTER_CLEANUP
            if claimable:
                await notify(session, "wake")
        logger.info("%s → %s%s", source, target, f" ({message})" if message else "")
        self.bus.publish(ctx.task_id)
        if claimable:
            self.wake()
        return True

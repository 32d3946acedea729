"""Tasks as the API sees them: create, find, control (pause / resume / cancel) and watch.

Two ways to watch, both woken by the event bus (a change publishes the task's id) and both
polling as a fallback, since the bus only ever says "look again":

    watch_task(id)   one task's state history, throttled progress, then "end"
    watch_tasks()    every task the caller sees: one "task" event (the task as GET /tasks/{id}
                     shows it) whenever its state or progress moved — the console's task list
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, NotFound, Unprocessable
from app.models import Task, TaskEvent, is_uuid, utcnow
from app.schemas import TaskCheck, TaskCreate, TaskRead
from app.services.owners.keys import Principal
from app.services.owners.limits import check_active_tasks
from app.services.paging import newest_first
from app.services.runtime import leases
from app.services.runtime import states as S
from app.services.runtime.bus import notify
from app.services.runtime.engine import TaskEngine
from app.services.runtime.events import record_event
from app.services.runtime.kinds import DRY_RUN, registry

if TYPE_CHECKING:
    from app.services.files.store import ByteStore

KEEPALIVE_SECONDS = 15.0
# The list watch's fallback sweep looks this far behind its last one: clocks of replicas differ,
# and a row committed just after a sweep began may carry a time from before it.
SWEEP_OVERLAP = timedelta(seconds=5)


def format_validation_error(exc: ValidationError, prefix: str) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join([prefix, *(str(p) for p in error["loc"])])
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


async def _accept(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    body: TaskCreate,
    *,
    dry_run: bool = False,
    store: ByteStore | None = None,
) -> TaskCheck:
    """Every check a new task passes — kind, params, the kind's own checks, the owner's limits."""
    kind = registry.get(body.kind)
    if kind is None:
        raise Unprocessable(
            f"unknown task kind {body.kind!r}; known kinds: {', '.join(registry.names())}",
            known_kinds=registry.names(),
        )
    try:
        params = kind.params_model.model_validate(body.params, context={DRY_RUN: dry_run})
    except ValidationError as exc:
        raise Unprocessable(format_validation_error(exc, "params")) from None
    await kind.prepare_with_store(params, principal, session, settings, store)
    # After prepare (which may read files for a while): from here the owner's limits are locked.
    await check_active_tasks(session, principal.owner, settings.max_active_tasks_per_owner)
    attempts = body.max_attempts or settings.max_attempts
    return TaskCheck(kind=body.kind, params=params.model_dump(mode="json"), max_attempts=attempts)


async def check_task(
    session: AsyncSession, settings: Settings, principal: Principal, body: TaskCreate, store: ByteStore | None = None
) -> TaskCheck:
    """A dry run: the answer ``create_task`` would give (or its error), with nothing started or kept."""
    try:
        return await _accept(session, settings, principal, body, dry_run=True, store=store)
    finally:
        await session.rollback()  # the limit check's owner lock, and anything a prepare wrote


async def create_task(session: AsyncSession, engine: TaskEngine, principal: Principal, body: TaskCreate) -> Task:
    accepted = await _accept(session, engine.settings, principal, body, store=engine.deps.store)
    now = utcnow()
    task = Task(
        owner=principal.owner,
        kind=body.kind,
        params=accepted.params,
        state=S.QUEUED,
        max_attempts=accepted.max_attempts,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    await session.flush()
    await record_event(session, task.id, S.QUEUED)
    await notify(session, "wake")
    await session.commit()
    engine.wake()
    engine.bus.publish(task.id)  # list watchers here see it at once (other replicas: by the event's notify)
    return task


async def get_task(session: AsyncSession, principal: Principal, task_id: str) -> Task:
    if not is_uuid(task_id):  # never let arbitrary bytes (NUL, path tricks) reach SQL
        raise NotFound(f"no task with id {task_id!r}")
    task = (
        await session.execute(select(Task).where(Task.id == task_id, principal.sees(Task.owner)))
    ).scalar_one_or_none()
    if task is None:
        raise NotFound(f"no task with id {task_id!r}")
    return task


async def list_tasks(
    session: AsyncSession,
    principal: Principal,
    *,
    state: str | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Task], str | None]:
    query = select(Task).where(principal.sees(Task.owner))
    if state is not None:
        query = query.where(Task.state == state)
    if kind is not None:
        query = query.where(Task.kind == kind)
    return await newest_first(session, query, Task, limit=limit, cursor=cursor)


async def control_task(
    session: AsyncSession, engine: TaskEngine, principal: Principal, task_id: str, action: str
) -> Task:
    """Apply pause / resume / cancel with one conditional UPDATE per rule; 409 if none applies."""
    spec = S.ACTIONS[action]
    task = await get_task(session, principal, task_id)
    if action == "resume" and task.state == S.PAUSED:
        # Not counting the task itself: a resume racing this one may have queued it already.
        await check_active_tasks(session, task.owner, engine.settings.max_active_tasks_per_owner, exclude=task.id)
    now = utcnow()
    for rule in spec.rules:
        values: dict[str, Any] = {"state": rule.target, "control": rule.control, "updated_at": now}
        if rule.release_lease:
            values.update(leases.RELEASED)
        if rule.target == S.PAUSED:
            values["paused_at"] = now
        moved = (
            await session.execute(
                update(Task)
                .where(Task.id == task.id, Task.state.in_(rule.sources))
                .values(**values)
                .returning(Task)
                .execution_options(synchronize_session=False, populate_existing=True)
            )
        ).scalar_one_or_none()
        if moved is not None:
            await record_event(session, task.id, rule.target, f"{action} requested")
            await notify(session, f"control:{task.id}")
            await session.commit()
            engine.signal(task.id)
            return moved
    await session.refresh(task)
    if task.state in spec.already:
        return task
    raise Conflict(f"cannot {action} a task that is {task.state}", current_state=task.state)


@dataclass
class StreamEvent:
    event: str  # "state", "progress", "end" or "ping"
    data: dict[str, Any]
    id: int | None = None


async def watch_task(
    engine: TaskEngine, principal: Principal, task_id: str, last_event_id: int = 0, *, follow: bool = True
) -> AsyncIterator[StreamEvent]:
    """Every state change (replayed after ``last_event_id``), throttled progress, then "end".

    ``follow=False``: only what is known now (history, current progress, "end" if it ended)."""
    last_progress: tuple[Any, ...] | None = None
    idle = 0.0
    with engine.bus.subscribe(task_id) as changed:
        while True:
            changed.clear()
            async with engine.database.sessionmaker() as session:
                task = await get_task(session, principal, task_id)
                events = (
                    await session.execute(
                        select(TaskEvent)
                        .where(TaskEvent.task_id == task_id, TaskEvent.id > last_event_id)
                        .order_by(TaskEvent.id)
                    )
                ).scalars()
                for item in events:
                    last_event_id = item.id
                    yield StreamEvent(
                        "state",
                        {"state": item.state, "message": item.message, "at": item.at.isoformat()},
                        item.id,
                    )
            snapshot = TaskRead.from_task(task)
            progress_key = (task.progress_done, task.progress_total, task.state)
            if progress_key != last_progress:
                last_progress = progress_key
                rows = (task.checkpoint or {}).get("rows")  # an import's bytes progress, with its rows so far
                extra = {"rows": rows} if isinstance(rows, int) and not isinstance(rows, bool) else {}
                progress = snapshot.progress.model_dump(mode="json")
                yield StreamEvent("progress", {"state": task.state, **progress, **extra})
            if task.state in S.TERMINAL:
                yield StreamEvent("end", snapshot.model_dump(mode="json"))
                return
            if not follow:
                return
            try:
                await asyncio.wait_for(changed.wait(), engine.settings.poll_interval)
                idle = 0.0
            except TimeoutError:
                idle += engine.settings.poll_interval
                if idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    yield StreamEvent("ping", {})


def _moved(task: Task) -> tuple[Any, ...]:
    """What the list shows changing: a task is sent again only when this differs."""
    return (task.state, task.progress_done, task.progress_total, task.updated_at)


async def _tasks_to_look_at(
    engine: TaskEngine, principal: Principal, ids: Collection[str] | None, since: datetime
) -> list[Task]:
    """The caller's tasks among ``ids`` (published on the bus); ``None``: the fallback sweep —
    every task updated since ``since``, and every one a runner holds (progress moves without
    touching ``updated_at``)."""
    query = select(Task).where(principal.sees(Task.owner))
    if ids is None:
        query = query.where(or_(Task.updated_at >= since, Task.state.in_(S.HELD_BY_RUNNER)))
    else:
        query = query.where(Task.id.in_([i for i in ids if is_uuid(i)]))
    async with engine.database.sessionmaker() as session:
        return list((await session.execute(query.order_by(Task.created_at))).scalars())


async def watch_tasks(engine: TaskEngine, principal: Principal) -> AsyncIterator[StreamEvent]:
    """A "watching" event naming the caller, then a "task" event per change to a task they see.

    Nothing is replayed: a client subscribes first, reads the list once when "watching"
    arrives, and applies the events after it (a change in between is simply sent again)."""
    sent: dict[str, tuple[Any, ...]] = {}
    clock = asyncio.get_running_loop().time
    poll = engine.settings.poll_interval
    with engine.bus.watch_all() as changes:
        since = utcnow() - SWEEP_OVERLAP
        yield StreamEvent("watching", {"owner": principal.owner, "admin": principal.is_admin})
        next_sweep = last_write = clock()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changes.pending.wait(), max(0.0, next_sweep - clock()))
            ids = changes.take()
            if not ids and clock() < next_sweep:
                continue
            # The sweep runs on its clock however busy the bus is: it also covers what was published.
            sweep = clock() >= next_sweep
            sweep_started = utcnow()
            for task in await _tasks_to_look_at(engine, principal, None if sweep else ids, since):
                if sent.get(task.id) != (key := _moved(task)):
                    sent[task.id] = key
                    last_write = clock()
                    yield StreamEvent("task", TaskRead.from_task(task).model_dump(mode="json"))
            if sweep:
                since = sweep_started - SWEEP_OVERLAP
                next_sweep = clock() + poll
                _forget_settled(sent, since)
            if clock() - last_write >= KEEPALIVE_SECONDS:
                last_write = clock()
                yield StreamEvent("ping", {})


def _forget_settled(sent: dict[str, tuple[Any, ...]], since: datetime) -> None:
    """Ended tasks the sweep no longer finds need no memory: a long-open stream stays small."""
    for task_id, (state, *_rest, updated_at) in list(sent.items()):
        if state in S.TERMINAL and updated_at < since:
            del sent[task_id]

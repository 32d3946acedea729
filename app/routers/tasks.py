"""Tasks: start long work, control it, and watch its progress."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import StreamingResponse

from app.auth import PrincipalDep
from app.db import SessionDep
from app.errors import PROBLEM_JSON
from app.schemas import KindRead, TaskCreate, TaskPage, TaskRead, TaskState
from app.services import tasks as service
from app.services.engine import TaskEngine
from app.services.kinds import registry

router = APIRouter(prefix="/tasks", tags=["tasks"])


def get_engine(request: Request) -> TaskEngine:
    return request.app.state.engine


EngineDep = Annotated[TaskEngine, Depends(get_engine)]

_problem = {"content": {PROBLEM_JSON: {}}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such task (or not yours).", **_problem}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "Not allowed in the task's current state (named in `current_state`).", **_problem}
}


@router.get("/kinds", response_model=list[KindRead])
async def list_kinds() -> list[KindRead]:
    """List the task kinds this server can run, with each kind's parameter schema."""
    return [
        KindRead(name=name, description=kind.description, params_schema=kind.params_model.model_json_schema())
        for name, kind in sorted(registry.all().items())
    ]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TaskRead)
async def create_task(body: TaskCreate, session: SessionDep, principal: PrincipalDep, engine: EngineDep) -> TaskRead:
    """Start a task of a registered kind; it is queued and picked up by a runner."""
    task = await service.create_task(session, engine, principal, body)
    return TaskRead.from_task(task)


@router.get("", response_model=TaskPage)
async def list_tasks(
    session: SessionDep,
    principal: PrincipalDep,
    state: TaskState | None = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> TaskPage:
    """List your tasks, newest first, optionally filtered by state and kind."""
    tasks, next_cursor = await service.list_tasks(
        session, principal, state=state, kind=kind, limit=limit, cursor=cursor
    )
    return TaskPage(items=[TaskRead.from_task(t) for t in tasks], next_cursor=next_cursor)


@router.get("/{task_id}", response_model=TaskRead, responses=NOT_FOUND)
async def get_task(task_id: str, session: SessionDep, principal: PrincipalDep) -> TaskRead:
    """Show one task: state, progress, checkpoint, timestamps and error."""
    return TaskRead.from_task(await service.get_task(session, principal, task_id))


@router.post("/{task_id}/pause", status_code=202, response_model=TaskRead, responses={**NOT_FOUND, **CONFLICT})
async def pause_task(task_id: str, session: SessionDep, principal: PrincipalDep, engine: EngineDep) -> TaskRead:
    """Pause a task at its next checkpoint (state `pausing`, then `paused`)."""
    return TaskRead.from_task(await service.control_task(session, engine, principal, task_id, "pause"))


@router.post("/{task_id}/resume", status_code=202, response_model=TaskRead, responses={**NOT_FOUND, **CONFLICT})
async def resume_task(task_id: str, session: SessionDep, principal: PrincipalDep, engine: EngineDep) -> TaskRead:
    """Resume a paused task from its last checkpoint."""
    return TaskRead.from_task(await service.control_task(session, engine, principal, task_id, "resume"))


@router.post("/{task_id}/cancel", status_code=202, response_model=TaskRead, responses={**NOT_FOUND, **CONFLICT})
async def cancel_task(task_id: str, session: SessionDep, principal: PrincipalDep, engine: EngineDep) -> TaskRead:
    """Cancel a task: it stops, its cleanup removes what it made, then it is `cancelled`."""
    return TaskRead.from_task(await service.control_task(session, engine, principal, task_id, "cancel"))


def _sse(event: service.StreamEvent) -> str:
    if event.event == "ping":
        return ": keep-alive\n\n"
    head = f"id: {event.id}\n" if event.id is not None else ""
    return f"{head}event: {event.event}\ndata: {json.dumps(event.data, separators=(',', ':'))}\n\n"


@router.get(
    "/{task_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}, **NOT_FOUND},
    response_class=StreamingResponse,
)
async def task_events(
    task_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    engine: EngineDep,
    last_event_id: Annotated[int, Header(ge=0)] = 0,
) -> StreamingResponse:
    """Stream state changes (`state`), throttled progress (`progress`) and a final `end` event."""
    await service.get_task(session, principal, task_id)  # 404 before the stream starts

    async def body() -> AsyncIterator[str]:
        async for event in service.watch_task(engine, principal, task_id, last_event_id):
            yield _sse(event)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

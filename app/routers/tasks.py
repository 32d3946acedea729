"""Tasks: start long work, control it, and watch its progress.

``POST /tasks`` reads its body itself: the JSON is parsed and validated (the kind's params
too) in a worker thread, so one hostile body cannot hold up every other request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from app.auth import PrincipalDep
from app.errors import MAX_REPORTED_ERRORS, UnsupportedMediaType, validation_problem
from app.http.deps import SessionDep
from app.http.draining import until_draining
from app.http.params import KindFilter, TaskId
from app.http.problems import problems
from app.schemas import BIGINT_MAX, KindRead, TaskCheck, TaskCreate, TaskPage, TaskRead, TaskState
from app.services.runtime import tasks as service
from app.services.runtime.engine import TaskEngine
from app.services.runtime.kinds import DRY_RUN, registry

router = APIRouter(prefix="/tasks", tags=["tasks"])
M = TypeVar("M", bound=BaseModel)


def get_engine(request: Request) -> TaskEngine:
    engine: TaskEngine = request.app.state.engine
    return engine


EngineDep = Annotated[TaskEngine, Depends(get_engine)]

NOT_FOUND = (404, "No such task (or not yours).")
CONTROL = problems(401, NOT_FOUND, (409, "Not allowed in the task's current state (named in `current_state`)."))
CONTROL_RESUME = {**CONTROL, **problems(429)}  # resuming counts toward the active-task limit again
TASK_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskCreate"}}},
    }
}


def _parse_task_create(raw: bytes, dry_run: bool) -> TaskCreate:
    """JSON → TaskCreate, the kind's params checked too; 422 naming the first few errors."""
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        where = ["body", exc.pos] if isinstance(exc, json.JSONDecodeError) else ["body"]
        raise validation_problem([{"loc": where, "msg": f"JSON decode error: {exc}", "type": "json_invalid"}]) from None
    body = _validate(TaskCreate, data, "body")
    kind = registry.get(body.kind)
    if kind is not None:  # an unknown kind is the service's 422, with the kinds there are
        _validate(kind.params_model, body.params, "body", "params", context={DRY_RUN: dry_run})
    return body


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: no database's JSON takes them


def _validate(model: type[M], data: Any, *where: str, context: dict[str, Any] | None = None) -> M:
    """``model.model_validate(data)``; unknown fields of a strict model are counted first, so a
    body of a hundred thousand of them costs a set difference, not a hundred thousand errors."""
    if isinstance(data, dict) and model.model_config.get("extra") == "forbid":
        known = {key for name, field in model.model_fields.items() for key in (name, field.alias) if key}
        if unknown := [key for key in data if key not in known]:
            errors: list[dict[str, Any]] = [
                {"loc": (*where, key), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
                for key in unknown[:MAX_REPORTED_ERRORS]
            ]
            raise validation_problem(errors, len(unknown))
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        shown = exc.errors(include_url=False, include_context=False, include_input=False)[:MAX_REPORTED_ERRORS]
        raise validation_problem([{**e, "loc": (*where, *e["loc"])} for e in shown], exc.error_count()) from None


DryRun = Annotated[
    bool,
    Query(description="Check everything the real call would (params, the kind's checks, limits) and start nothing."),
]


@dataclass(frozen=True)
class _Creation:
    body: TaskCreate
    dry_run: bool


async def _task_create(request: Request, dry_run: DryRun = False) -> _Creation:
    content_type = request.headers.get("content-type")
    if content_type is not None:
        message = Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        if message.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
            raise UnsupportedMediaType("send the task as Content-Type: application/json")
    body = await run_in_threadpool(_parse_task_create, await request.body(), dry_run)
    return _Creation(body, dry_run)


CreationDep = Annotated[_Creation, Depends(_task_create)]


@router.get("/kinds", response_model=list[KindRead])
async def list_kinds() -> list[KindRead]:
    """List the task kinds this server can run, with each kind's parameter schema."""
    return [
        KindRead(name=name, description=kind.description, params_schema=kind.params_model.model_json_schema())
        for name, kind in sorted(registry.all().items())
    ]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskRead,
    responses={
        200: {"model": TaskCheck, "description": "`dry_run=true`: the task would be accepted; nothing was started."},
        **problems(401, 404, 409, 413, 415, 422, 429),
    },
    openapi_extra=TASK_CREATE_BODY,
)
async def create_task(
    session: SessionDep,
    principal: PrincipalDep,
    engine: EngineDep,
    creation: Annotated[_Creation, Depends(_task_create)],
) -> Any:
    """Start a task of a registered kind; it is queued and picked up by a runner (or, with `dry_run`, only checked)."""
    if creation.dry_run:
        check = await service.check_task(session, engine.settings, principal, creation.body, engine.deps.store)
        return JSONResponse(check.model_dump(mode="json"), status_code=200)
    task = await service.create_task(session, engine, principal, creation.body)
    return TaskRead.from_task(task)


@router.get("", response_model=TaskPage, responses=problems(400, 401, 422))
async def list_tasks(
    session: SessionDep,
    principal: PrincipalDep,
    state: TaskState | None = None,
    kind: KindFilter = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> TaskPage:
    """List your tasks, newest first, optionally filtered by state and kind."""
    tasks, next_cursor = await service.list_tasks(
        session, principal, state=state, kind=kind, limit=limit, cursor=cursor
    )
    return TaskPage(items=[TaskRead.from_task(t) for t in tasks], next_cursor=next_cursor)


def _event_stream(description: str, **events: str) -> dict[int | str, dict[str, Any]]:
    """A 200 of server-sent events; the schema describes one event (OpenAPI 3.1 reads it so)."""
    names = ", ".join(f"`{name}`: {what}" for name, what in events.items())
    one_event = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": list(events)},
            "data": {"type": "string", "contentMediaType": "application/json", "description": names},
            "id": {"type": "string", "description": "A `state` event's id, for `Last-Event-ID`."},
        },
    }
    return {200: {"content": {"text/event-stream": {"schema": one_event}}, "description": description}}


EVENT_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
# Said when the server stops; an EventSource reconnects (to another replica, or this one restarted).
FAREWELL = ": the server is shutting down; reconnect\n\n"


def _stream(request: Request, events: AsyncIterator[service.StreamEvent]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield _sse(event)

    draining = request.app.state.draining.event
    body = until_draining(lines(), draining, FAREWELL)
    return StreamingResponse(body, media_type="text/event-stream", headers=EVENT_STREAM_HEADERS)


@router.get(
    "/events",
    responses={
        **_event_stream(
            "Server-sent events, until the client disconnects or the server stops.",
            watching="who watches, `{owner, admin}`",
            task="a task, as `GET /tasks/{task_id}` shows it",
        ),
        **problems(401),
    },
    response_class=StreamingResponse,
)
async def all_task_events(request: Request, principal: PrincipalDep, engine: EngineDep) -> StreamingResponse:
    """Watch all your tasks (an admin: everyone's) over one stream of server-sent events.

    First `watching` (`{"owner": …, "admin": …}`: who is watching), then a `task` event — the
    task as `GET /tasks/{task_id}` shows it — whenever a task is created or its state or
    progress changes. Nothing is replayed: read `GET /tasks` after `watching` arrives. A
    `: keep-alive` comment comes every 15 s of quiet. The stream does not end by itself (so
    Swagger UI cannot show it: use curl or an `EventSource`); a stopping server closes it.
    """
    return _stream(request, service.watch_tasks(engine, principal))


@router.get("/{task_id}", response_model=TaskRead, responses=problems(401, NOT_FOUND))
async def get_task(task_id: TaskId, session: SessionDep, principal: PrincipalDep) -> TaskRead:
    """Show one task: state, progress, checkpoint, timestamps and error."""
    return TaskRead.from_task(await service.get_task(session, principal, task_id))


@router.post("/{task_id}/pause", status_code=202, response_model=TaskRead, responses=CONTROL)
async def pause_task(task_id: TaskId, session: SessionDep, principal: PrincipalDep, engine: EngineDep) -> TaskRead:
    """Pause a task at its next checkpoint (state `pausing`, then `paused`)."""
    return TaskRead.from_task(await service.control_task(session, engine, principal, task_id, "pause"))


@router.post("/{task_id}/resume", status_code=202, response_model=TaskRead, responses=CONTROL_RESUME)
async def resume_task(task_id: TaskId, session: SessionDep, principal: PrincipalDep, engine: EngineDep) -> TaskRead:
    """Resume a paused task from its last checkpoint."""
    return TaskRead.from_task(await service.control_task(session, engine, principal, task_id, "resume"))


@router.post("/{task_id}/cancel", status_code=202, response_model=TaskRead, responses=CONTROL)
async def cancel_task(task_id: TaskId, session: SessionDep, principal: PrincipalDep, engine: EngineDep) -> TaskRead:
    """Cancel a task: it stops, its cleanup removes what it made, then it is `cancelled`."""
    return TaskRead.from_task(await service.control_task(session, engine, principal, task_id, "cancel"))


def _sse(event: service.StreamEvent) -> str:
    if event.event == "ping":
        return ": keep-alive\n\n"
    head = f"id: {event.id}\n" if event.id is not None else ""
    return f"{head}event: {event.event}\ndata: {json.dumps(event.data, separators=(',', ':'))}\n\n"


@router.get(
    "/{task_id}/events",
    responses={
        **_event_stream(
            "Server-sent events: until the task ends, or (`follow=false`) what is known now.",
            state="`{state, message, at}`",
            progress="`{state, done, total, unit, percent, rate, eta_seconds, updated_at}` (an import: `rows` too)",
            end="the task, as `GET /tasks/{task_id}` shows it",
        ),
        **problems(401, NOT_FOUND, 422),
    },
    response_class=StreamingResponse,
)
async def task_events(
    request: Request,
    task_id: TaskId,
    session: SessionDep,
    principal: PrincipalDep,
    engine: EngineDep,
    last_event_id: Annotated[int, Header(ge=0, le=BIGINT_MAX, description="Replay state events after this id.")] = 0,
    follow: Annotated[
        bool,
        Query(description="`false`: send the history and progress so far, then close (usable in Swagger UI)."),
    ] = True,
) -> StreamingResponse:
    """Stream state changes (`state`), throttled progress (`progress`) and a final `end` event.

    The stream stays open **until the task ends** (succeeded, failed or cancelled), with a
    `: keep-alive` comment every 15 s of quiet — so Swagger UI, which shows a response only
    once it is complete, spins until then. Try it there with `follow=false`: the events so far,
    and the response closes at once.
    """
    await service.get_task(session, principal, task_id)  # 404 before the stream starts
    return _stream(request, service.watch_task(engine, principal, task_id, last_event_id, follow=follow))

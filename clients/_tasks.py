"""Task operations: create, list, get, pause / resume / cancel, the event stream, and wait."""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

import httpx

from clients._base import Core, TaskProgress, describe
from clients._core import Chunk, Close, Emit, Op, Send, Sleep, consume
from clients.errors import ConnectionFailed, ProtocolError, TaskEnded, WaitTimeout, raise_for_status
from clients.models import TERMINAL_STATES, Event, Kind, Page, Progress, Task, TaskCheck

SSE_READ_TIMEOUT = 45.0  # the server sends a keep-alive comment every 15 s


def _task_path(task_id: str, action: str = "") -> str:
    return f"/tasks/{quote(task_id, safe='')}{action}"


def parse_sse(buffer: bytearray) -> tuple[list[tuple[str, str, str | None]], bytearray]:
    """Complete events in ``buffer`` as ``(event, data, id)``; returns the unparsed rest too."""
    text = bytes(buffer).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    *blocks, rest = text.split(b"\n\n")
    events = []
    for block in blocks:
        name, data, event_id = "message", [], None
        for line in block.decode("utf-8", "replace").split("\n"):
            if not line or line.startswith(":"):
                continue  # comment (keep-alive)
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                event_id = value
        if data:
            events.append((name, "\n".join(data), event_id))
    return events, bytearray(rest)


def _same_progress(seen: Progress | None, now: Progress) -> bool:
    return seen is not None and (seen.done, seen.total, seen.unit) == (now.done, now.total, now.unit)


class TaskOps(Core):
    """The task operations, as generators (``Client``/``AsyncClient`` run them)."""

    def kinds(self) -> Op[list[Kind]]:
        """The task kinds the server runs, with their parameter schemas."""
        return (yield from self.request_json("GET", "/tasks/kinds", lambda d: [Kind.model_validate(k) for k in d]))

    def create_task(
        self, kind: str, params: dict[str, Any] | None = None, *, max_attempts: int | None = None
    ) -> Op[Task]:
        """Start a task of ``kind``; it is queued and picked up by a runner."""
        body: dict[str, Any] = {"kind": kind, "params": params or {}}
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        return (yield from self.request_json("POST", "/tasks", Task.model_validate, json=body))

    def check_task(
        self, kind: str, params: dict[str, Any] | None = None, *, max_attempts: int | None = None
    ) -> Op[TaskCheck]:
        """Ask whether the server would start this task (a dry run): the error the real call
        would raise, or the task as it would start; nothing is started or kept."""
        body: dict[str, Any] = {"kind": kind, "params": params or {}}
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        url = "/tasks?dry_run=true"
        return (yield from self.request_json("POST", url, TaskCheck.model_validate, json=body))

    def list_tasks(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Op[Page[Task]]:
        """One page of your tasks, newest first; pass ``page.next_cursor`` as ``cursor`` for the next."""
        params = {k: v for k, v in {"state": state, "kind": kind, "limit": limit, "cursor": cursor}.items() if v}
        return (yield from self.request_json("GET", "/tasks", Page[Task].model_validate, params=params))

    def iter_tasks(self, *, state: str | None = None, kind: str | None = None, page_size: int = 100) -> Op[None]:
        """Every task (following the cursor), newest first."""
        cursor: str | None = None
        while True:
            page = yield from self.list_tasks(state=state, kind=kind, limit=page_size, cursor=cursor)
            for task in page.items:
                yield Emit(task)
            if not (cursor := page.next_cursor):
                return

    def get_task(self, task_id: str) -> Op[Task]:
        """One task: state, progress, checkpoint, result, error."""
        return (yield from self.request_json("GET", _task_path(task_id), Task.model_validate))

    def _control(self, task_id: str, action: str) -> Op[Task]:
        # Control requests are idempotent on the server ("already in effect" answers 202), so retry.
        path = _task_path(task_id, f"/{action}")
        return (yield from self.request_json("POST", path, Task.model_validate, idempotent=True))

    def pause(self, task_id: str) -> Op[Task]:
        """Ask the task to pause at its next checkpoint (``pausing``, then ``paused``)."""
        return (yield from self._control(task_id, "pause"))

    def resume(self, task_id: str) -> Op[Task]:
        """Resume a paused task from its last checkpoint."""
        return (yield from self._control(task_id, "resume"))

    def cancel(self, task_id: str) -> Op[Task]:
        """Cancel the task; its cleanup removes what it made (``cancelling``, then ``cancelled``)."""
        return (yield from self._control(task_id, "cancel"))

    def _event_source(self, task_id: str, last_event_id: int = 0, deadline: float | None = None) -> Op[None]:
        """Emits :class:`Event` until ``end``, reconnecting with ``Last-Event-ID`` after a drop."""
        failures = 0
        while True:
            remaining = SSE_READ_TIMEOUT if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"task {task_id}: timed out")
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last_event_id)}
            timeout = httpx.Timeout(self.timeout.connect, read=min(remaining, SSE_READ_TIMEOUT))
            response = None
            try:
                response = yield Send(
                    "GET", _task_path(task_id, "/events"), headers=headers, stream=True, timeout=timeout
                )
                raise_for_status(response)
                failures, buffer = 0, bytearray()
                while chunk := (yield Chunk(response)):
                    if deadline is not None and time.monotonic() >= deadline:
                        yield Close(response)
                        raise WaitTimeout(f"task {task_id}: timed out")
                    buffer += chunk
                    events, buffer = parse_sse(buffer)
                    for name, data, event_id in events:
                        if event_id is not None and event_id.isdigit():
                            last_event_id = int(event_id)
                        event = Event(
                            name, json.loads(data), int(event_id) if event_id and event_id.isdigit() else None
                        )
                        yield Emit(event)
                        if name == "end":
                            yield Close(response)
                            return
                yield Close(response)  # the server ended the stream early: reconnect
            except httpx.TransportError as exc:
                if response is not None:
                    yield Close(response)
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"task {task_id}: timed out") from None
                if failures >= self.retries:
                    raise ConnectionFailed(f"event stream of task {task_id} lost: {describe(exc)}") from None
            except ValueError as exc:
                raise ProtocolError(f"malformed event from the server: {exc}") from None
            # An interrupted stream is closed by the driver: a generator may not yield while closing.
            yield Sleep(self.delay(failures))
            failures += 1

    def events(self, task_id: str, last_event_id: int = 0) -> Op[None]:
        """Iterate the task's events (``state`` changes, ``progress``, a final ``end``); reconnects."""
        yield from self._event_source(task_id, last_event_id)

    def wait(
        self,
        task_id: str,
        until: str | Collection[str] = TERMINAL_STATES,
        *,
        timeout: float | None = None,
        on_progress: TaskProgress | None = None,
    ) -> Op[Task]:
        """Wait until the task is in one of ``until``; :class:`TaskEnded` if it ends elsewhere.

        ``on_progress(progress)`` gets every progress update the server streams, a
        :class:`Progress` in the task's own unit (``progress.unit``: "rows", "steps" …), and
        last the task's progress as it is returned (or raised in :class:`TaskEnded`).
        """
        wanted = {until} if isinstance(until, str) else set(until)
        deadline = None if timeout is None else time.monotonic() + timeout
        task = yield from self.get_task(task_id)
        # The stream first replays the task's history; the first progress event marks "now".
        caught_up = False
        reported: Progress | None = None

        def on_event(event: Event) -> bool:
            nonlocal caught_up, reported
            if event.type == "progress":
                caught_up = True
                reported = Progress.model_validate(event.data)
                if on_progress is not None:
                    on_progress(reported)
                return event.state in wanted
            return event.type == "end" or (caught_up and event.state in wanted)

        if task.state not in wanted and task.state not in TERMINAL_STATES:
            yield from consume(self._event_source(task_id, 0, deadline), on_event)
            task = yield from self.get_task(task_id)
        if on_progress is not None and not _same_progress(reported, task.progress):
            # A wait may stop at a state event, before the progress event that follows it.
            on_progress(Progress.model_validate({**task.progress.model_dump(), "state": task.state}))
        if task.state in TERMINAL_STATES and task.state not in wanted:
            raise TaskEnded(task)
        return task  # in a wanted state (or just past one it was seen in)

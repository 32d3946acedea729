"""Structured logs: a request id on every line of a request (echoed as X-Request-ID), and the
task id and owner on every line about a task."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from urllib.parse import quote

import httpx
import pytest

from app.logs import ContextFilter, JsonFormatter, TextFormatter, bind, request_context
from app.main import create_app
from tests.helpers.apps import make_settings, wait_state
from tests.helpers.server import LiveServer


async def test_request_id_is_kept_or_made_and_echoed(client):
    kept = await client.get("/healthz", headers={"X-Request-ID": "abc-123:retry.2"})
    assert kept.headers["x-request-id"] == "abc-123:retry.2"
    made = [(await client.get("/healthz")).headers["x-request-id"] for _ in range(2)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made) and made[0] != made[1]
    for unsafe in ("has spaces", "x" * 129, 'quote"d'):
        replaced = await client.get("/healthz", headers={"X-Request-ID": unsafe})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"]), unsafe
    # Problem responses carry it too, so a client can quote it when it reports an error.
    missing = await client.get("/tasks/nope", headers={"X-Request-ID": "req-404"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "req-404"
    invalid = await client.post("/tasks", json={"kind": 3}, headers={"X-Request-ID": "req-422"})
    assert invalid.status_code == 422 and invalid.headers["x-request-id"] == "req-422"


@pytest.fixture
async def json_logged(db_url, tmp_path):
    """An app logging JSON at info level into a buffer, and a client for it."""
    settings = make_settings(db_url, tmp_path / "storage", log_json=True, log_level="info")
    app = create_app(settings)
    buffer = io.StringIO()
    handler = logging.getLogger("tsm").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tsm.test") as client:
            yield client, buffer


async def test_json_lines_carry_request_id_task_id_and_owner(json_logged):
    client, buffer = json_logged
    created = await client.post(
        "/tasks",
        json={"kind": "process", "params": {"steps": 2, "step_seconds": 0.01}},
        headers={"X-Request-ID": "req-create"},
    )
    task_id = created.json()["id"]
    await wait_state(client, task_id, "succeeded", headers={"X-Request-ID": "req-poll"})

    records = [json.loads(line) for line in buffer.getvalue().splitlines()]  # every line is one JSON object
    (create,) = [r for r in records if r.get("request_id") == "req-create"]
    assert create["logger"] == "tsm.access" and create["status"] == 201 and create["route"] == "/tasks"
    assert create["level"] == "info" and create["duration_ms"] >= 0 and "time" in create
    polls = [r for r in records if r.get("request_id") == "req-poll"]
    assert polls and all(r["task_id"] == task_id and r["path"] == f"/tasks/{task_id}" for r in polls)

    runner = [r for r in records if r["logger"] == "tsm.engine" and r.get("task_id") == task_id]
    assert {r["message"] for r in runner} >= {"process task running (attempt 1)", "running → succeeded"}
    assert all(r["owner"] == "local" for r in runner)
    assert not any("request_id" in r for r in runner), "the runner is not part of the request that queued it"
    # Probes are logged at debug level only.
    await client.get("/healthz", headers={"X-Request-ID": "req-probe"})
    assert "req-probe" not in buffer.getvalue()
    # Any other library's (or plug-in kind's) warnings come out the same way, with the context.
    with request_context("req-lib", None):
        logging.getLogger("some.library").warning("disk %s", "slow")
    last = json.loads(buffer.getvalue().splitlines()[-1])
    assert (last["logger"], last["message"], last["request_id"]) == ("some.library", "disk slow", "req-lib")


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("tsm.test", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    ContextFilter().filter(record)
    return record


def test_context_reaches_lines_logged_inside_a_request_and_is_restored():
    scope: dict = {"path_params": {}}
    with request_context("req-9", scope):
        scope["path_params"] = {"task_id": "t-1"}  # what the router fills in once it matched
        bind(owner="alice")
        inside = _record("about a task")
        explicit = _record("other task", task_id="t-2")
    outside = _record("after the request")
    assert (inside.request_id, inside.task_id, inside.owner) == ("req-9", "t-1", "alice")
    assert explicit.task_id == "t-2", "an explicit extra= value wins"
    assert not any(hasattr(outside, key) for key in ("request_id", "task_id", "owner"))

    as_json = json.loads(JsonFormatter().format(inside))
    assert as_json | {"time": None} == {
        "time": None,
        "level": "warning",
        "logger": "tsm.test",
        "message": "about a task",
        "request_id": "req-9",
        "owner": "alice",
        "task_id": "t-1",
    }
    assert TextFormatter().format(inside).endswith("about a task [request_id=req-9 owner=alice task_id=t-1]")
    assert TextFormatter().format(outside).endswith("after the request")


FORGED = "2026-01-01 00:00:00,000 WARNING tsm.auth: owner admin logged in"


def test_control_characters_in_a_request_path_cannot_forge_a_log_line(tmp_path):
    storage = tmp_path / "storage"
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tsm.sqlite3'}"
    with LiveServer(db_url, storage, TSM_LOG_LEVEL="info") as server:
        path = "/tasks/x%0A" + quote(FORGED) + "%0D%0B%1B%5B2J%E2%80%A8%C2%85"
        assert httpx.get(server.url + path).status_code == 404
    lines = server.log.read_text().splitlines()
    assert not any(line.startswith(FORGED[:23]) for line in lines), lines
    (access,) = [line for line in lines if "tsm.access" in line and "/tasks/x" in line]
    assert "GET /tasks/x\\n2026-01-01 00:00:00,000 WARNING" in access
    assert "logged in\\r\\x0b\\x1b[2J\\u2028\\x85 404 " in access


def test_every_text_field_is_escaped_and_only_a_records_first_line_starts_a_line():
    record = _record("user said %s", request_id="r\n1", route="/x\r\ny")
    record.args = ("hi\nthere",)
    try:
        raise ValueError("bad\n" + FORGED)
    except ValueError:
        record.exc_info = sys.exc_info()
    text = TextFormatter().format(record)
    first, *rest = text.split("\n")
    assert first.endswith("user said hi\\nthere [request_id=r\\n1]")
    assert rest and all(line.startswith("  ") for line in rest), rest
    assert any(line.strip() == FORGED for line in rest), "the traceback is kept, indented"
    as_json = json.loads(JsonFormatter().format(record))
    assert (as_json["message"], as_json["route"]) == ("user said hi\nthere", "/x\r\ny")
    assert "\n" not in JsonFormatter().format(record)

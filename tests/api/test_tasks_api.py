"""The tasks API: creation, validation, listing, and the shape of errors."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from app.services.owners import keys
from app.services.runtime import tasks as service
from tests.helpers.apps import open_app, wait_state
from tests.helpers.server import LiveServer
from tests.helpers.sse import open_stream

PROCESS = {"kind": "process", "params": {"steps": 2, "step_seconds": 0.01}}


async def test_create_returns_the_task(client):
    response = await client.post("/tasks", json={"kind": "process", "params": {"steps": 4, "step_seconds": 0.01}})
    assert response.status_code == 201
    task = response.json()
    assert task["kind"] == "process"
    assert task["owner"] == "local"
    assert task["params"] == {"steps": 4, "step_seconds": 0.01, "fail_at_step": None}
    assert task["state"] in {"queued", "running"}
    for field in ("progress", "checkpoint", "created_at", "started_at", "paused_at", "finished_at", "attempts"):
        assert field in task
    done = await wait_state(client, task["id"], "succeeded")
    assert done["progress"] == {
        **done["progress"],
        "done": 4,
        "total": 4,
        "unit": "steps",
        "percent": 100.0,
    }
    assert done["checkpoint"] == {"step": 4}
    assert done["finished_at"] is not None
    assert done["attempts"] == 1


async def test_unknown_kind_lists_known_kinds(client):
    response = await client.post("/tasks", json={"kind": "nope", "params": {}})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert "unknown task kind 'nope'" in body["detail"]
    assert "process" in body["known_kinds"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"steps": 0}, "params.steps"),
        ({"steps": "many"}, "params.steps"),
        ({"step_seconds": -1}, "params.step_seconds"),
        ({"surprise": 1}, "params.surprise"),
    ],
)
async def test_invalid_params_are_422_naming_the_field(client, params, message):
    response = await client.post("/tasks", json={"kind": "process", "params": params})
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == 422 and body["title"]
    assert message in body["detail"]


@pytest.mark.parametrize("body", [{}, {"params": {}}, {"kind": 3}, {"kind": "process", "params": []}])
async def test_malformed_bodies_are_422(client, body):
    response = await client.post("/tasks", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_not_json_is_422_not_500(client):
    response = await client.post("/tasks", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "Traceback" not in response.text


async def test_unknown_task_is_404_problem(client):
    for path in ("/tasks/0b7f1c1e-0000-4000-8000-000000000000", "/tasks/../etc/passwd", "/tasks/%00"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    for action in ("pause", "resume", "cancel"):
        response = await client.post(f"/tasks/does-not-exist/{action}")
        assert response.status_code == 404
        assert response.json()["detail"] == "no task with id 'does-not-exist'"


async def test_list_newest_first_with_filters_and_cursor(client):
    ids = []
    for _ in range(5):
        ids.append((await client.post("/tasks", json=PROCESS)).json()["id"])
    other = (await client.post("/tasks", json={"kind": "flaky", "params": {"failures": 0}})).json()["id"]
    for task_id in [*ids, other]:
        await wait_state(client, task_id, "succeeded")

    page = (await client.get("/tasks", params={"kind": "process", "limit": 2})).json()
    seen = [t["id"] for t in page["items"]]
    while page["next_cursor"]:
        page = (
            await client.get("/tasks", params={"kind": "process", "limit": 2, "cursor": page["next_cursor"]})
        ).json()
        seen += [t["id"] for t in page["items"]]
    assert seen == list(reversed(ids))

    everything = (await client.get("/tasks", params={"state": "succeeded"})).json()["items"]
    assert everything[0]["id"] == other
    assert (await client.get("/tasks", params={"state": "failed"})).json()["items"] == []


@pytest.mark.parametrize(
    "query",
    [{"cursor": "!!!"}, {"cursor": "bm90IGEgY3Vyc29y"}, {"limit": 0}, {"limit": 100000}, {"state": "bogus"}],
)
async def test_bad_list_queries_are_4xx(client, query):
    response = await client.get("/tasks", params=query)
    assert response.status_code in (400, 422)
    assert response.json()["detail"]


async def test_kinds_are_listed_with_their_schemas(client):
    kinds = {k["name"]: k for k in (await client.get("/tasks/kinds")).json()}
    assert "steps" in kinds["process"]["params_schema"]["properties"]


async def test_health_and_readiness(client):
    from app import __version__

    assert (await client.get("/healthz")).json() == {"status": "ok", "version": __version__}
    ready = (await client.get("/readyz")).json()
    assert ready == {"status": "ok", "version": __version__, "database": ready["database"], "store": "local"}
    assert ready["database"] in {"sqlite", "postgresql"}


async def test_openapi_documents_every_endpoint(client):
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    spec = (await client.get("/openapi.json")).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]  # Swagger UI's Authorize button
    for path in ("/tasks", "/tasks/{task_id}", "/tasks/{task_id}/pause", "/tasks/{task_id}/events"):
        assert path in spec["paths"]
        for operation in spec["paths"][path].values():
            assert operation["summary"] or operation["description"]


async def test_a_dry_run_answers_what_the_real_call_would_and_starts_nothing(client):
    checked = await client.post("/tasks?dry_run=true", json={"kind": "process", "params": {"steps": 3}})
    assert checked.status_code == 200
    assert checked.json() == {
        "kind": "process",
        "params": {"steps": 3, "step_seconds": 1.0, "fail_at_step": None},
        "max_attempts": checked.json()["max_attempts"],
    }
    assert checked.json()["max_attempts"] >= 1
    assert (await client.get("/tasks")).json()["items"] == []
    for body in ({"kind": "nope"}, {"kind": "process", "params": {"steps": -1}}, {"kind": "process", "x": 1}):
        real, dry = await client.post("/tasks", json=body), await client.post("/tasks?dry_run=true", json=body)
        assert dry.status_code == real.status_code == 422, body
        assert dry.json()["detail"] == real.json()["detail"]
    assert (await client.post("/tasks?dry_run=maybe", json=PROCESS)).status_code == 422


async def test_a_dry_run_is_held_to_the_owner_limits_and_holds_nothing(settings):
    from tests.helpers.apps import open_app

    async with open_app(settings, max_active_tasks_per_owner=1) as (_app, client):
        assert (await client.post("/tasks?dry_run=true", json=PROCESS)).status_code == 200
        running = await client.post("/tasks", json={"kind": "process", "params": {"steps": 50, "step_seconds": 0.1}})
        assert running.status_code == 201  # the dry run before it kept no share of the limit
        refused = await client.post("/tasks?dry_run=true", json=PROCESS)
        assert refused.status_code == 429, refused.text
        await client.post(f"/tasks/{running.json()['id']}/cancel")


# -- watching: GET /tasks/events (every task) and GET /tasks/{id}/events?follow=false ---------


async def _key(app, owner: str, role: str = "user") -> dict[str, str]:
    async with app.state.database.sessionmaker.begin() as session:
        _row, full_key = await keys.create_key(session, owner, role)
    return {"Authorization": f"Bearer {full_key}"}


def _seen(stream, task_id: str) -> list[dict]:
    return [task for task in stream.of("task") if task["id"] == task_id]


async def test_the_list_stream_shows_each_owner_only_their_tasks_and_an_admin_all(settings):
    async with open_app(settings, auth_required=True) as (app, client):
        alice, bob, admin = await _key(app, "alice"), await _key(app, "bob"), await _key(app, "root", "admin")
        async with (
            open_stream(app, "/tasks/events", alice) as alices,
            open_stream(app, "/tasks/events", bob) as bobs,
            open_stream(app, "/tasks/events", admin) as admins,
        ):
            assert alices.status == 200 and alices.headers["content-type"].startswith("text/event-stream")
            assert alices.headers["cache-control"] == "no-store"
            await alices.wait(lambda s: s.of("watching"))
            assert alices.of("watching") == [{"owner": "alice", "admin": False}]
            await admins.wait(lambda s: s.of("watching") == [{"owner": "root", "admin": True}])
            body = {"kind": "process", "params": {"steps": 5, "step_seconds": 0.05}}
            task = (await client.post("/tasks", json=body, headers=alice)).json()
            bobs_task = (await client.post("/tasks", json=PROCESS, headers=bob)).json()

            # New, running, moving and finished: all on the one stream, without asking.
            done = await alices.wait(lambda s: [t for t in _seen(s, task["id"]) if t["state"] == "succeeded"])
            assert done[0]["progress"]["done"] == 5 and done[0]["owner"] == "alice"
            states = [t["state"] for t in _seen(alices, task["id"])]
            assert "running" in states
            progress = [t["progress"]["done"] for t in _seen(alices, task["id"])]
            assert progress == sorted(progress) and any(0 < done < 5 for done in progress)
            await admins.wait(lambda s: _seen(s, task["id"]) and _seen(s, bobs_task["id"]))
            await bobs.wait(lambda s: [t for t in _seen(s, bobs_task["id"]) if t["state"] == "succeeded"])
            assert {t["owner"] for t in bobs.of("task")} == {"bob"}
            assert {t["owner"] for t in alices.of("task")} == {"alice"}
        assert (await client.get("/tasks/events")).status_code == 401


async def test_the_list_stream_sends_keep_alives_when_nothing_moves(settings, monkeypatch):
    monkeypatch.setattr(service, "KEEPALIVE_SECONDS", 0.2)
    async with open_app(settings) as (app, _client), open_stream(app, "/tasks/events") as stream:
        await stream.wait(lambda s: "keep-alive" in s.comments)
        assert stream.of("task") == []


async def test_open_streams_end_cleanly_when_the_server_stops(settings):
    async with open_app(settings) as (app, client):
        task = (await client.post("/tasks", json={"kind": "process", "params": {"steps": 400}})).json()
        async with (
            open_stream(app, "/tasks/events") as everything,
            open_stream(app, f"/tasks/{task['id']}/events") as one,
        ):
            await everything.wait(lambda s: s.of("watching"))
            await one.wait(lambda s: s.of("progress"))
            app.state.draining.set()  # what SIGTERM does under uvicorn (tests/live: the real signal)
            for stream in (everything, one):
                await stream.wait(lambda s: s.ended, timeout=5)
                assert stream.comments[-1].startswith("the server is shutting down")
        await client.post(f"/tasks/{task['id']}/cancel")


async def test_follow_false_sends_what_is_known_and_closes(client):
    task = (await client.post("/tasks", json={"kind": "process", "params": {"steps": 400}})).json()
    await wait_state(client, task["id"], "running")
    response = await client.get(f"/tasks/{task['id']}/events", params={"follow": "false"})  # complete, not endless
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert "event: state" in response.text and '"state":"running"' in response.text
    assert "event: progress" in response.text and "event: end" not in response.text
    await client.post(f"/tasks/{task['id']}/cancel")
    await wait_state(client, task["id"], "cancelled")
    ended = (await client.get(f"/tasks/{task['id']}/events?follow=false")).text
    assert ended.rstrip().rsplit("\n", 2)[-2] == "event: end"


async def test_the_event_streams_are_documented_as_event_streams(client):
    spec = (await client.get("/openapi.json")).json()
    for path in ("/tasks/events", "/tasks/{task_id}/events"):
        operation = spec["paths"][path]["get"]
        assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"], path
    one = spec["paths"]["/tasks/{task_id}/events"]["get"]
    assert "until the task ends" in one["description"]
    assert next(p for p in one["parameters"] if p["name"] == "follow")["schema"]["default"] is True
    assert "Swagger UI" in one["description"] and "Swagger UI" in spec["paths"]["/tasks/events"]["get"]["description"]


def test_sigterm_closes_an_open_list_stream_and_the_server_exits_at_once(tmp_path):
    with LiveServer(f"sqlite+aiosqlite:///{tmp_path / 'tsm.sqlite3'}", tmp_path / "storage") as server:
        with httpx.stream("GET", f"{server.url}/tasks/events", timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: watching"
            started = time.monotonic()
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            rest = list(lines)  # ends: the server closed the stream
        assert rest[-2].startswith(": the server is shutting down")
        server.process.wait(10)  # uvicorn ends by re-raising the signal it caught: -15 is a clean stop
        assert time.monotonic() - started < 5  # not the graceful timeout (grace + 5 s)
        assert "timeout graceful shutdown exceeded" not in server.log.read_text()

"""Hostile input on every endpoint: a clear 4xx problem, never a 500, never a stalled service.

NUL bytes, malformed ids and cursors, integers past BIGINT, bodies past the cap, bodies with
a hundred thousand mistakes, tus method overrides and 405s on paths several routers share.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import pytest

from app.errors import MAX_REPORTED_ERRORS, PROBLEM_JSON
from tests.helpers.apps import open_app, wait_state
from tests.helpers.server import LiveServer, poll
from tests.helpers.tus import OCTET, TUS, new_upload, upload

UUID = "00000000-0000-4000-8000-000000000000"
BIGINT_MAX = 2**63 - 1


def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body = response.json()
    assert body["status"] == status and body["detail"], body
    return body


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_nul_bytes_and_malformed_ids_are_404_before_sql(client):
    for bad in ("%00", "a%00b", "not-a-uuid", UUID.upper(), "x" * 5000):
        _problem(await client.get(f"/tasks/{bad}"), 404)
        _problem(await client.get(f"/tasks/{bad}/events"), 404)
        _problem(await client.post(f"/tasks/{bad}/cancel"), 404)
        _problem(await client.get(f"/files/{bad}"), 404)
        _problem(await client.get(f"/files/{bad}/info"), 404)
        for method in ("HEAD", "PATCH", "DELETE"):
            response = await client.request(method, f"/files/{bad}", headers={**OCTET, "Upload-Offset": "0"})
            assert response.status_code == 404 and response.headers["tus-resumable"] == "1.0.0", method


async def test_nul_bytes_and_malformed_filters_are_422(client):
    _problem(await client.get("/tasks", params={"kind": "a\x00b"}), 422)
    _problem(await client.get("/tasks", params={"kind": "k" * 65}), 422)
    _problem(await client.get("/files", params={"task_id": "\x00"}), 422)
    _problem(await client.get("/files", params={"task_id": "not-a-uuid"}), 422)
    # A well-formed filter that matches nothing is an empty page, not an error.
    assert (await client.get("/tasks", params={"kind": "no_such_kind"})).json()["items"] == []
    assert (await client.get("/files", params={"task_id": UUID})).json()["items"] == []


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor(f"2026-01-01T00:00:00+00:00|{UUID[:-1]}\x00"),  # NUL in the id
        _cursor(f"0001-01-01T00:00:00+14:00|{UUID}"),  # before year 1 in UTC
        _cursor(f"9999-12-31T23:59:59-14:00|{UUID}"),  # after year 9999 in UTC
        _cursor(f"2026-01-01T00:00:00|{UUID}"),  # no time zone
        _cursor(f"2026-01-01T00:00:00+00:00|{'x' * 36}"),  # not a UUID
        "A" * 1000,
        "",
    ],
)
async def test_a_cursor_no_page_handed_out_is_400(client, cursor):
    for path in ("/tasks", "/files"):
        _problem(await client.get(path, params={"cursor": cursor}), 400)


async def test_integers_past_bigint_are_400_on_tus_headers(client):
    url = await new_upload(client, 10)
    for name in ("Upload-Offset", "Upload-Length"):
        for value in ("9999999999999999999", str(BIGINT_MAX + 1)):
            response = await client.patch(url, headers={**OCTET, "Upload-Offset": "0", name: value}, content=b"a")
            assert "at most" in _problem(response, 400)["detail"]
    response = await client.post("/files", headers={**TUS, "Upload-Length": "9999999999999999999"})
    _problem(response, 400)
    head = await client.head(url, headers=TUS)
    assert head.headers["upload-offset"] == "0"  # nothing was written by the refused PATCHes


async def test_last_event_id_past_bigint_is_422_and_the_largest_replays_nothing(client):
    task = (await client.post("/tasks", json={"kind": "process", "params": {"steps": 1, "step_seconds": 0}})).json()
    await wait_state(client, task["id"], "succeeded")
    events = f"/tasks/{task['id']}/events"
    _problem(await client.get(events, headers={"Last-Event-ID": str(BIGINT_MAX + 1)}), 422)
    _problem(await client.get(events, headers={"Last-Event-ID": "99999999999999999999999"}), 422)
    response = await client.get(events, headers={"Last-Event-ID": str(BIGINT_MAX)})
    assert response.status_code == 200
    assert "event: state" not in response.text and "event: end" in response.text


async def test_huge_numbers_in_range_and_conditional_headers_are_answered(client):
    file_id = await upload(client, b"0123456789", "digits.txt")
    huge = "9" * 19
    for header, status in [
        (f"bytes={huge}-", 416),
        (f"bytes=0-{huge}", 206),
        (f"bytes=-{huge}", 206),
        (f"bytes={'9' * 40}-", 200),  # not a range this server parses: ignored, the whole file
    ]:
        response = await client.get(f"/files/{file_id}", headers={"Range": header})
        assert response.status_code == status, (header, response.text)
    for name in ("If-Range", "If-Modified-Since", "If-Unmodified-Since"):
        response = await client.get(f"/files/{file_id}", headers={"Range": "bytes=0-0", name: "Mon, 01 Jan 99999 0"})
        assert response.status_code in (200, 206), (name, response.text)


async def test_json_bodies_over_the_cap_are_413_declared_or_streamed_and_tus_bodies_are_not_capped(settings):
    async with open_app(settings, max_json_body_bytes=4096) as (_app, client):
        body = json.dumps({"kind": "process", "params": {"pad": "x" * 5000}}).encode()
        response = await client.post("/tasks", content=body, headers={"Content-Type": "application/json"})
        assert "4096" in _problem(response, 413)["detail"]

        async def chunks():  # no Content-Length: counted while it streams
            for _ in range(10):
                yield b" " * 1000

        _problem(await client.post("/tasks", content=chunks(), headers={"Content-Type": "application/json"}), 413)
        url = await new_upload(client, 8192)
        response = await client.patch(url, headers={**OCTET, "Upload-Offset": "0"}, content=b"u" * 8192)
        assert response.status_code == 204 and response.headers["upload-offset"] == "8192"


async def test_a_body_with_many_mistakes_reports_the_first_few_and_counts_the_rest(client):
    params = {f"unknown_{i}": i for i in range(5000)}
    response = await client.post("/tasks", json={"kind": "process", "params": params})
    problem = _problem(response, 422)
    assert len(problem["errors"]) == MAX_REPORTED_ERRORS
    assert problem["errors"][0]["loc"] == ["body", "params", "unknown_0"]
    assert problem["detail"].endswith(f"(and {5000 - MAX_REPORTED_ERRORS} more errors)")
    assert len(response.content) < 5000
    wide = {"kind": "process", **{f"top_{i}": 1 for i in range(500)}}
    assert len(_problem(await client.post("/tasks", json=wide), 422)["errors"]) == MAX_REPORTED_ERRORS


async def test_post_tasks_needs_a_json_body(client):
    response = await client.post("/tasks", content=b"kind=process", headers={"Content-Type": "text/plain"})
    _problem(response, 415)
    response = await client.post("/tasks", content=b"{not json", headers={"Content-Type": "application/json"})
    assert _problem(response, 422)["errors"][0]["type"] == "json_invalid"
    _problem(await client.post("/tasks", content=b""), 422)


async def test_x_http_method_override_works_on_every_tus_route(client):
    response = await client.get("/files", headers={**TUS, "X-HTTP-Method-Override": "OPTIONS"})
    assert response.status_code == 204 and response.headers["tus-version"] == "1.0.0"
    response = await client.post("/files", headers={**TUS, "Upload-Length": "3", "X-HTTP-Method-Override": "post"})
    url = response.headers["location"].removeprefix("http://tsm.test")
    response = await client.put(
        url, headers={**OCTET, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}, content=b"ab"
    )
    assert response.status_code == 204 and response.headers["upload-offset"] == "2"
    response = await client.get(url, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert response.status_code == 200 and response.headers["upload-offset"] == "2" and response.content == b""
    response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 204
    assert (await client.head(url, headers=TUS)).status_code in (404, 410)
    response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "P@TCH"})
    assert "X-HTTP-Method-Override" in _problem(response, 400)["detail"]
    assert response.headers["tus-resumable"] == "1.0.0"
    # Only tus routes: elsewhere the header means nothing.
    assert (await client.get("/tasks", headers={"X-HTTP-Method-Override": "DELETE"})).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", f"/files/{UUID}", "DELETE, GET, HEAD, OPTIONS, PATCH"),
        ("POST", f"/files/{UUID}", "DELETE, GET, HEAD, OPTIONS, PATCH"),
        ("DELETE", "/files", "GET, OPTIONS, POST"),
        ("DELETE", "/tasks", "GET, POST"),
        ("PATCH", f"/tasks/{UUID}/pause", "POST"),
    ],
)
async def test_405_lists_every_method_the_path_takes(client, method, path, allow):
    response = await client.request(method, path)
    _problem(response, 405)
    assert response.headers["allow"] == allow


def test_healthz_stays_fast_while_a_hostile_body_is_refused_or_validated(tmp_path):
    """A 12 MB body is refused before parsing; one just under the 1 MiB cap, made of nothing
    but mistakes, is validated while /healthz keeps answering."""
    storage = tmp_path / "storage"
    huge = json.dumps({"kind": "process", "params": {f"k{i}": 0 for i in range(1_000_000)}}).encode()
    params, size = {}, 40
    while size < 1024**2 - 20:
        key = f"k{len(params)}"
        params[key], size = 0, size + len(key) + 5
    capped = json.dumps({"kind": "process", "params": params}, separators=(",", ":")).encode()
    assert 1000**2 < len(capped) <= 1024**2
    with LiveServer(f"sqlite+aiosqlite:///{storage / 'tsm.sqlite3'}", storage) as server:
        answers: list[httpx.Response] = []

        def post_hostile_bodies() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as hostile:
                headers = {"Content-Type": "application/json"}
                answers.append(hostile.post("/tasks", content=huge, headers=headers))
                for _ in range(3):
                    answers.append(hostile.post("/tasks", content=capped, headers=headers))

        sender = threading.Thread(target=post_hostile_bodies)
        latencies: list[float] = []
        with httpx.Client(base_url=server.url, timeout=30) as probe:
            sender.start()
            while sender.is_alive():
                started = time.perf_counter()
                assert probe.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
            sender.join()
            # An override to HEAD on a real GET: no Content-Length promising a body that never comes.
            file_id = probe.post("/files", headers={**TUS, "Upload-Length": "0"}).headers["location"].rsplit("/", 1)[1]
            poll(lambda: probe.get(f"/files/{file_id}/info").json()["state"] == "complete", what="empty upload")
            response = probe.get(f"/files/{file_id}", headers={"X-HTTP-Method-Override": "HEAD"})
            assert response.status_code == 200 and response.content == b""
            assert probe.get("/healthz").status_code == 200  # the connection survived
    assert [a.status_code for a in answers] == [413, 422, 422, 422]
    assert all(len(a.content) < 10_000 for a in answers)
    print(f"/healthz during hostile bodies: {len(latencies)} probes, max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 2.0, latencies

"""The console in Chromium: live task list, controls, the start form, browser uploads, docs offline."""

from __future__ import annotations

import hashlib
import re
import time

import httpx
import pytest

from tests.helpers.server import LiveServer, poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _start(http: httpx.Client, steps: int, step_seconds: float) -> str:
    response = http.post("/tasks", json={"kind": "process", "params": {"steps": steps, "step_seconds": step_seconds}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _state_of(page, task_id: str):
    return page.locator(f'tr[data-task-id="{task_id}"] .state')


def test_task_list_updates_live_while_a_process_task_runs(page, http, server: LiveServer):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url.removeprefix(server.url)))
    page.goto("/")
    page.locator("#tasks-empty:not([hidden]), #tasks tbody tr").first.wait_for()  # the first page is in
    task_id = _start(http, steps=60, step_seconds=0.1)
    row = page.locator(f'tr[data-task-id="{task_id}"]')
    row.wait_for()  # a task started elsewhere appears, no reload
    bar = row.locator("progress")
    # Progress moves while the task runs: seen part-way, then finished, without reloading the page.
    page.wait_for_function(
        "bar => bar.value > 0 && bar.value < bar.max", arg=bar.element_handle(), timeout=15_000, polling=20
    )
    assert _state_of(page, task_id).inner_text() == "running"
    page.wait_for_function("row => row.dataset.state === 'succeeded'", arg=row.element_handle())
    assert row.locator(".done").inner_text() == "60 / 60 steps"
    assert row.locator("button", has_text="Pause").is_disabled()
    assert row.locator("button", has_text="Cancel").is_disabled()
    # All of it over one stream: no stream per row, no polling of the list.
    assert [url for url in requests if "/events" in url] == ["/tasks/events"]
    lists = len([url for url in requests if url.startswith("/tasks?")])
    page.wait_for_timeout(3500)  # quiet: nothing asks again (the list used to refresh every 3 s)
    assert len([url for url in requests if url.startswith("/tasks?")]) == lists


def test_the_owner_column_is_for_admins_only_and_hidden_for_local(page, http):
    _start(http, steps=1, step_seconds=0)
    page.goto("/")
    page.locator("#tasks tbody tr").first.wait_for()
    assert not page.get_by_role("columnheader", name="Owner").is_visible()
    assert not page.locator("#tasks tbody td.owner").first.is_visible()


def test_pause_resume_and_cancel_buttons_change_the_state(page, http):
    task_id = _start(http, steps=400, step_seconds=0.05)
    page.goto("/")
    row = page.locator(f'tr[data-task-id="{task_id}"]')
    state = _state_of(page, task_id)
    short = task_id[:8]
    page.wait_for_function("row => row.dataset.state === 'running'", arg=row.element_handle())
    assert page.get_by_role("button", name=f"Resume task {short}").is_disabled()

    page.get_by_role("button", name=f"Pause task {short}").click()
    page.wait_for_function("row => row.dataset.state === 'paused'", arg=row.element_handle())
    assert http.get(f"/tasks/{task_id}").json()["state"] == "paused"
    assert page.get_by_role("button", name=f"Pause task {short}").is_disabled()

    page.get_by_role("button", name=f"Resume task {short}").click()
    page.wait_for_function("row => row.dataset.state === 'running'", arg=row.element_handle())
    assert http.get(f"/tasks/{task_id}").json()["state"] in ("queued", "running")

    page.get_by_role("button", name=f"Cancel task {short}").click()
    page.wait_for_function("row => row.dataset.state === 'cancelled'", arg=row.element_handle())
    assert state.inner_text() == "cancelled"
    assert http.get(f"/tasks/{task_id}").json()["state"] == "cancelled"
    for action in ("Pause", "Resume", "Cancel"):
        assert page.get_by_role("button", name=f"{action} task {short}").is_disabled()


def test_the_start_form_is_made_from_the_kind_schema_and_starts_a_task(page, http):
    page.goto("/ui/start")
    page.get_by_label("Kind").select_option("process")
    page.get_by_label(re.compile(r"^Steps")).fill("3")
    page.get_by_label(re.compile(r"^Step Seconds")).fill("0.01")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/ui/tasks/[0-9a-f-]{36}$"))
    task_id = page.url.rsplit("/", 1)[1]
    page.locator("#task-summary dd.state-succeeded").wait_for()
    assert http.get(f"/tasks/{task_id}").json()["params"]["steps"] == 3
    events = page.locator("#task-events li")
    events.filter(has_text="succeeded").wait_for()
    assert events.count() >= 3  # queued, running, succeeded
    assert '"steps": 3' in page.locator("#task-result").inner_text()


def test_the_start_form_shows_the_servers_validation_errors(page, problems):
    problems.allowed.append("status of 422")  # the refused POST, as Chromium reports it
    page.goto("/ui/start")
    page.get_by_label("Kind").select_option("process")
    page.get_by_label(re.compile(r"^Steps")).fill("0")
    page.get_by_role("button", name="Start").click()
    page.locator("#start-errors li", has_text="steps").wait_for()
    assert page.url.endswith("/ui/start")


def test_a_browser_upload_pauses_resumes_and_arrives_byte_identical(page, http, tmp_path):
    payload = hashlib.sha256(b"seed").digest() * (4 * 1024 * 1024 // 32)  # 4 MiB, not compressible to nothing
    payload = bytes(b ^ (i % 251) for i, b in enumerate(payload))
    source = tmp_path / "upload.bin"
    source.write_bytes(payload)
    page.goto("/ui/files")
    # Slow the link so there is time to pause mid-upload.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1024 * 1024},
    )
    page.get_by_label(re.compile("Choose files")).set_input_files(str(source))
    row = page.locator('tr[data-upload="upload.bin"]')
    page.wait_for_function("row => row.querySelector('progress').value > 0", arg=row.element_handle())
    page.get_by_role("button", name="Pause upload of upload.bin").click()
    assert row.get_attribute("data-state") == "paused"

    def stored() -> dict | None:
        items = [f for f in http.get("/files").json()["items"] if f["filename"] == "upload.bin"]
        return items[0] if items else None

    paused = poll(stored, what="the upload on the server")
    assert paused["state"] == "uploading" and paused["offset"] < len(payload)

    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    page.get_by_role("button", name="Resume upload of upload.bin").click()
    page.wait_for_function("row => row.dataset.state === 'complete'", arg=row.element_handle(), timeout=60_000)
    done = stored()
    assert done is not None and done["state"] == "complete" and done["length"] == len(payload)
    digest = poll(lambda: (stored() or {}).get("sha256"), what="the server's checksum")  # computed after completion
    assert digest == hashlib.sha256(payload).hexdigest()
    assert http.get(f"/files/{done['id']}").content == payload
    page.locator(f'#files tr[data-file-id="{done["id"]}"] a', has_text="Download").wait_for()


# ReDoc's sidebar credit shows Redocly's logo from their CDN, hard-coded in the bundle; the image
# hides itself when it cannot load, so the page renders the same offline.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.mark.parametrize(("path", "title"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_docs_render_with_the_network_blocked(page, problems, server: LiveServer, path, title):
    blocked: list[str] = []
    problems.allowed.append(f"net::ERR_FAILED ({REDOC_LOGO})")

    def only_loopback(route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_loopback)
    page.goto(path)
    heading = page.locator(title).first
    heading.wait_for()
    assert "Task State Manager" in heading.inner_text()
    if path == "/docs":
        page.locator(".opblock-tag", has_text="tasks").first.wait_for()
    page.wait_for_load_state("networkidle")
    assert [url for url in blocked if url != REDOC_LOGO] == [], "the docs needed the network"


def _payload(size: int, seed: bytes) -> bytes:
    """``size`` bytes no compression or a stray zero-fill could fake."""
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(1024))  # 32 KiB
    return (block * (size // len(block) + 1))[:size]


UNTHROTTLED = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}


def _throttle(page, bytes_per_second: int):
    """Slow the page's uploads (Chromium's network emulation), so there is time to act mid-upload."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second}
    cdp.send("Network.emulateNetworkConditions", conditions)
    return cdp


def _stored(http: httpx.Client, filename: str) -> list[dict]:
    return [f for f in http.get("/files").json()["items"] if f["filename"] == filename]


def test_a_20_mib_upload_paused_then_reloaded_resumes_byte_identical(page, http, tmp_path):
    payload = _payload(20 * 1024 * 1024, b"reload")
    source = tmp_path / "reloaded.bin"
    source.write_bytes(payload)
    page.goto("/ui/files")
    cdp = _throttle(page, 2 * 1024 * 1024)
    page.get_by_label(re.compile("Choose files")).set_input_files(str(source))
    row = page.locator('tr[data-upload="reloaded.bin"]')
    page.wait_for_function("row => row.querySelector('progress').value > 3 * 1024 * 1024", arg=row.element_handle())
    page.get_by_role("button", name="Pause upload of reloaded.bin").click()
    assert row.get_attribute("data-state") == "paused"
    poll(lambda: [f for f in _stored(http, "reloaded.bin") if f["offset"] > 0], what="bytes on the server")
    page.wait_for_timeout(500)  # the server has written what the aborted PATCH carried
    [before] = _stored(http, "reloaded.bin")
    assert before["state"] == "uploading" and 0 < before["offset"] < len(payload)

    cdp.send("Network.emulateNetworkConditions", UNTHROTTLED)
    page.reload()
    offsets: list[str] = []
    page.on("request", lambda r: r.method == "PATCH" and offsets.append(r.headers.get("upload-offset")))
    page.get_by_label(re.compile("Choose files")).set_input_files(str(source))  # the same file again
    page.locator("#message", has_text="Resuming reloaded.bin").wait_for()
    row = page.locator('tr[data-upload="reloaded.bin"]')
    page.wait_for_function("row => row.dataset.state === 'complete'", arg=row.element_handle(), timeout=60_000)
    [done] = _stored(http, "reloaded.bin")  # one upload, continued: not a second one from zero
    assert done["id"] == before["id"] and done["state"] == "complete" and done["length"] == len(payload)
    assert offsets[0] == str(before["offset"])  # from where the server stopped, not from zero
    digest = poll(lambda: (_stored(http, "reloaded.bin")[0]).get("sha256"), what="the server's checksum")
    assert digest == hashlib.sha256(payload).hexdigest()
    assert http.get(f"/files/{done['id']}").content == payload


def test_a_network_cut_mid_upload_resumes_from_the_servers_offset(page, http, problems, tmp_path):
    problems.allowed.append("ERR_INTERNET_DISCONNECTED")  # the cut PATCH, as Chromium reports it
    payload = _payload(12 * 1024 * 1024, b"cut")
    source = tmp_path / "cut.bin"
    source.write_bytes(payload)
    page.goto("/ui/files")
    cdp = _throttle(page, 2 * 1024 * 1024)
    heads: list[str] = []
    patches: list[str] = []
    page.on("response", lambda r: r.request.method == "HEAD" and heads.append(r.headers.get("upload-offset")))
    page.on("request", lambda r: r.method == "PATCH" and patches.append(r.headers.get("upload-offset")))
    page.get_by_label(re.compile("Choose files")).set_input_files(str(source))
    row = page.locator('tr[data-upload="cut.bin"]')
    page.wait_for_function("row => row.querySelector('progress').value > 2 * 1024 * 1024", arg=row.element_handle())

    # The cut: the context goes offline, and so does the throttle's own emulation (which would
    # otherwise keep its connection up): the running PATCH breaks off.
    page.context.set_offline(True)
    cdp.send("Network.emulateNetworkConditions", {**UNTHROTTLED, "offline": True})
    page.wait_for_function("row => row.dataset.state === 'offline'", arg=row.element_handle())
    [cut] = poll(lambda: [f for f in _stored(http, "cut.bin") if f["offset"] > 0], what="bytes on the server")
    assert cut["state"] == "uploading" and 0 < cut["offset"] < len(payload)
    assert heads == []  # nothing asked the server yet: the first PATCH was still running

    cdp.send("Network.emulateNetworkConditions", UNTHROTTLED)
    page.context.set_offline(False)
    page.wait_for_function("row => row.dataset.state === 'complete'", arg=row.element_handle(), timeout=60_000)
    [done] = _stored(http, "cut.bin")
    assert done["id"] == cut["id"] and done["length"] == len(payload)
    # Back online: HEAD asked the server where it stood, and the next PATCH started right there.
    assert heads and patches[0] == "0" and patches[1] == heads[0] and int(heads[0]) >= cut["offset"]
    assert http.get(f"/files/{done['id']}").content == payload


def test_swagger_ui_shows_a_tasks_events_with_follow_false(page, http):
    task_id = _start(http, steps=400, step_seconds=0.05)
    poll(lambda: http.get(f"/tasks/{task_id}").json()["state"] == "running", what="the task running")
    page.goto("/docs")
    operation = page.locator("#operations-tasks-task_events_tasks__task_id__events_get")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator('tr[data-param-name="task_id"] input').fill(task_id)
    operation.locator('tr[data-param-name="follow"] select').select_option("false")
    operation.get_by_role("button", name="Execute").click()
    body = operation.locator(".live-responses-table .response-col_description pre").first
    body.filter(has_text="event: progress").wait_for()  # the response completed: no spinner until the end
    assert "event: state" in body.inner_text() and '"state":"running"' in body.inner_text()
    http.post(f"/tasks/{task_id}/cancel")


def test_the_list_reconnects_after_a_server_restart_and_keeps_updating(browser, problems, tmp_path):
    problems.allowed += ["ERR_CONNECTION_REFUSED", "cannot be reached"]  # while the server is down
    storage = tmp_path / "storage"
    server = LiveServer(f"sqlite+aiosqlite:///{tmp_path / 'tsm.sqlite3'}", storage).start()
    context = browser.new_context(base_url=server.url)
    try:
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and problems.errors.append(message.text))
        task_id = httpx.post(
            f"{server.url}/tasks", json={"kind": "process", "params": {"steps": 300, "step_seconds": 0.05}}
        ).json()["id"]
        page.goto("/")
        row = page.locator(f'tr[data-task-id="{task_id}"]')
        page.wait_for_function("row => row.dataset.state === 'running'", arg=row.element_handle())
        started = time.monotonic()
        server.stop()  # the open stream must not hold the stop up
        assert time.monotonic() - started < 5
        seen = int(row.locator("progress").get_attribute("value") or 0)
        server.start()
        page.wait_for_function(
            "([row, seen]) => row.querySelector('progress').value > seen + 5", arg=[row.element_handle(), seen]
        )
        page.wait_for_function("row => row.dataset.state === 'succeeded'", arg=row.element_handle(), timeout=30_000)
    finally:
        context.close()
        server.stop()
        server.kill()
    assert problems.unexpected() == []

"""The console with auth on: a clear 401, a key kept per tab, two owners who each see only their
own tasks; and tus-js-client on another origin uploading through CORS with a key."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import ROOT, LiveServer, free_port, poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

OTHER_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>uploader</title>
<link rel="icon" href="data:,"><script src="{server}/ui/static/vendor/tus.min.js"></script></head>
<body><input id="pick" type="file" aria-label="file"><p id="out"></p><script>
document.getElementById("pick").addEventListener("change", (e) => {{
  const upload = new tus.Upload(e.target.files[0], {{
    endpoint: "{server}/files", headers: {{ Authorization: "Bearer {key}" }}, chunkSize: 1048576,
    metadata: {{ filename: "cross-origin.bin" }},
    onSuccess: () => {{ document.getElementById("out").textContent = "done " + upload.url; }},
    onError: (err) => {{ document.getElementById("out").textContent = "error " + err; }},
  }});
  upload.start();
}});
</script></body></html>"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def other_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A second origin (another loopback port) serving static pages from a folder."""
    folder = tmp_path_factory.mktemp("other-origin")
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", folder
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, other_origin: tuple[str, Path]) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("browser-auth")
    url = f"sqlite+aiosqlite:///{root / 'tsm.sqlite3'}"
    with LiveServer(url, root / "storage", TSM_AUTH_REQUIRED="true", TSM_CORS_ORIGINS=other_origin[0]) as live:
        yield live


def _create_key(server: LiveServer, owner: str, *options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app", "keys", "create", owner, *options],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().split()[-1]


@pytest.fixture(scope="module")
def keys(server: LiveServer) -> dict[str, str]:
    return {
        **{owner: _create_key(server, owner) for owner in ("alice", "bob")},
        "root": _create_key(server, "root", "--admin"),
    }


def _start(server: LiveServer, key: str) -> str:
    response = httpx.post(
        f"{server.url}/tasks",
        json={"kind": "process", "params": {"steps": 1, "step_seconds": 0}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _use_key(page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Use key").click()


def test_without_a_key_the_console_says_so(page, problems):
    problems.allowed.append("status of 401")  # Chromium reports the refused request itself
    page.goto("/")
    message = page.locator("#message")
    message.filter(has_text="needs an API key").wait_for()
    assert "tsm-server keys create" in message.inner_text()
    _use_key(page, "tsm_not_a_real_key")
    message.filter(has_text="key was refused").wait_for()


def test_each_owner_sees_only_their_own_tasks(page, problems, server, keys):
    problems.allowed.append("status of 401")  # the first look, before a key is entered
    alices, bobs = _start(server, keys["alice"]), _start(server, keys["bob"])
    page.goto("/")
    _use_key(page, keys["alice"])
    page.locator(f'tr[data-task-id="{alices}"]').wait_for()
    assert page.locator(f'tr[data-task-id="{bobs}"]').count() == 0
    assert not page.get_by_role("columnheader", name="Owner").is_visible()  # all of them are hers

    page.reload()  # the key stays for the tab
    page.locator(f'tr[data-task-id="{alices}"]').wait_for()

    _use_key(page, keys["bob"])
    page.locator(f'tr[data-task-id="{bobs}"]').wait_for()
    assert page.locator(f'tr[data-task-id="{alices}"]').count() == 0


def test_tus_js_client_on_another_origin_uploads_through_cors(page, server, keys, other_origin, tmp_path):
    origin, folder = other_origin
    payload = hashlib.sha256(b"cors").digest() * (3 * 1024 * 1024 // 32)
    source = tmp_path / "cross-origin.bin"
    source.write_bytes(payload)
    (folder / "upload.html").write_text(OTHER_PAGE.format(server=server.url, key=keys["alice"]))
    page.goto(f"{origin}/upload.html")
    page.get_by_label("file").set_input_files(str(source))
    page.locator("#out", has_text="done").wait_for()
    upload_url = page.locator("#out").inner_text().split()[-1]
    auth = {"Authorization": f"Bearer {keys['alice']}"}
    stored = poll(lambda: (r := httpx.get(upload_url, headers=auth)).status_code == 200 and r.content, what="the bytes")
    assert stored == payload


def test_an_admin_sees_everyones_tasks_with_their_owners(page, problems, server, keys):
    problems.allowed.append("status of 401")  # the first look, before a key is entered
    alices, bobs = _start(server, keys["alice"]), _start(server, keys["bob"])
    page.goto("/")
    _use_key(page, keys["root"])
    for task_id, owner in ((alices, "alice"), (bobs, "bob")):
        cell = page.locator(f'tr[data-task-id="{task_id}"] td.owner')
        cell.wait_for()
        assert cell.is_visible() and cell.inner_text() == owner
    assert page.get_by_role("columnheader", name="Owner").is_visible()

    _use_key(page, keys["alice"])  # the same tab, a user's key: the column goes
    page.locator(f'tr[data-task-id="{bobs}"]').wait_for(state="detached")
    assert not page.get_by_role("columnheader", name="Owner").is_visible()
    assert not page.locator(f'tr[data-task-id="{alices}"] td.owner').is_visible()

"""The ``tsm`` command line, run as a real subprocess against a real server (both databases).

Interruptions are real signals: SIGKILL (no chance to clean up) and SIGINT (Ctrl-C), sent once
the transfer has demonstrably moved bytes (the server's tus offset / the ``.part`` file grew),
never after a guessed sleep. The auth and server-down cases don't depend on the database and
run on SQLite only.
"""

from __future__ import annotations

import csv
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients import Client
from clients.store import ResumeStore, fingerprint
from tests.helpers.clients import Live, random_file
from tests.helpers.server import ROOT, LiveServer, poll

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def env(live: Live, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TSM_SERVER": live.url,
        "TSM_CACHE_DIR": str(tmp_path / "cache"),
        "TSM_TOKEN": "",
    }


def tsm(env: dict[str, str], *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=stdin,
    )


def spawn(env: dict[str, str], *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "clients.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=stdin,
        text=True,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsm: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def stop(process: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


INTERRUPTS = [pytest.param(signal.SIGKILL, id="SIGKILL"), pytest.param(signal.SIGINT, id="SIGINT")]
# For what happens only in the client (download resume, Ctrl-C dialogue, output formats): one database.
sqlite_only = pytest.mark.parametrize("live", ["sqlite"], indirect=True)


@pytest.mark.parametrize("sig", INTERRUPTS)
def test_upload_interrupted_then_rerun_resumes(live: Live, env: dict[str, str], tmp_path: Path, sig: Any) -> None:
    source = random_file(tmp_path / "upload.bin", 3 * 1024 * 1024)
    size = source.stat().st_size
    store = ResumeStore(tmp_path / "cache")
    key = f"{live.url}|{fingerprint(source)}"
    process = spawn(env, "upload", str(source), "--limit-rate", "1M", "--chunk-size", "64K")

    def server_offset() -> int | None:
        entry = store.get("uploads", key)
        if entry is None:
            return None
        offset = int(httpx.head(entry["url"], headers=TUS).headers["upload-offset"])
        return offset or None

    moved = poll(server_offset, what="the first uploaded bytes")
    code, err = stop(process, sig)
    if sig == signal.SIGINT:
        assert code == 130 and "run the same command again to resume" in err and "Traceback" not in err
    else:
        assert code == -signal.SIGKILL
    entry = store.get("uploads", key)
    assert entry is not None and 0 < moved < size

    result = ok_json(tsm(env, "--json", "upload", str(source)))
    assert result["url"] == entry["url"] and moved <= result["resumed_from"] < size
    assert live.stored(result["file_id"]) == source.read_bytes()
    assert store.get("uploads", key) is None


@sqlite_only
@pytest.mark.parametrize("sig", INTERRUPTS)
def test_download_interrupted_then_rerun_resumes(live: Live, env: dict[str, str], tmp_path: Path, sig: Any) -> None:
    source = random_file(tmp_path / "source.bin", 3 * 1024 * 1024)
    with live.client() as client:
        file_id = client.upload(source).file_id
    dest, part = tmp_path / "out" / "copy.bin", tmp_path / "out" / "copy.bin.part"
    dest.parent.mkdir()
    process = spawn(env, "download", file_id, "-o", str(dest), "--limit-rate", "1M")
    poll(lambda: part.exists() and part.stat().st_size > 0, what="the first downloaded bytes")
    code, err = stop(process, sig)
    if sig == signal.SIGINT:
        assert code == 130 and "run the same command again to resume" in err and "Traceback" not in err
    else:
        assert code == -signal.SIGKILL
    kept = part.stat().st_size
    assert 0 < kept < source.stat().st_size and not dest.exists()

    result = ok_json(tsm(env, "--json", "download", file_id, "-o", str(dest)))
    assert result["resumed_from"] == kept and "size" in result["verified"]
    assert dest.read_bytes() == source.read_bytes() and not part.exists()


def test_task_control_round_trip(env: dict[str, str]) -> None:
    # Long enough that a fresh `tsm` process started on a loaded machine still finds it running.
    task = ok_json(tsm(env, "--json", "tasks", "start", "record_steps", "-p", "steps=20", "-p", "step_seconds=0.25"))
    assert task["kind"] == "record_steps" and task["params"]["steps"] == 20
    paused = ok_json(tsm(env, "--json", "tasks", "pause", task["id"], "--wait"))
    assert paused["state"] in ("paused", "succeeded")
    shown = ok_json(tsm(env, "--json", "tasks", "show", task["id"]))
    assert shown["state"] == paused["state"] and shown["progress"]["done"] == paused["progress"]["done"]
    if paused["state"] == "paused":
        resumed = ok_json(tsm(env, "--json", "tasks", "resume", task["id"]))
        assert resumed["state"] in ("queued", "running", "succeeded")
    watch = tsm(env, "--json", "tasks", "watch", task["id"])
    assert watch.returncode == 0, watch.stderr
    events = [json.loads(line) for line in watch.stdout.splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["data"]["state"] == "succeeded"
    assert {e["event"] for e in events} >= {"state", "progress", "end"}
    listed = ok_json(tsm(env, "--json", "tasks", "ls", "--kind", "record_steps"))
    assert task["id"] in [t["id"] for t in listed["items"]] and "next_cursor" in listed
    one_error_line(tsm(env, "tasks", "resume", task["id"]), 6, "409", "succeeded")


@sqlite_only
def test_files_commands_json(live: Live, env: dict[str, str], tmp_path: Path) -> None:
    source = random_file(tmp_path / "small.bin", 70_000)
    up = ok_json(tsm(env, "--json", "upload", str(source)))
    listed = ok_json(tsm(env, "--json", "files", "ls", "--all"))
    assert up["file_id"] in [f["id"] for f in listed["items"]]
    info = ok_json(tsm(env, "--json", "files", "show", up["file_id"]))
    assert info["filename"] == "small.bin" and info["length"] == 70_000 and info["state"] == "complete"
    human = tsm(env, "files", "ls")
    assert human.returncode == 0 and up["file_id"] in human.stdout and "small.bin" in human.stdout
    one_error_line(tsm(env, "tasks", "show", "does-not-exist"), 5, "404", "does-not-exist")
    one_error_line(tsm(env, "tasks", "start", "no_such_kind"), 2, "no_such_kind")
    kinds = ok_json(tsm(env, "--json", "kinds"))
    assert "record_steps" in [k["name"] for k in kinds]
    assert ok_json(tsm(env, "--json", "files", "rm", up["file_id"])) == {"deleted": [up["file_id"]]}
    one_error_line(tsm(env, "files", "show", up["file_id"]), 5, "404")
    one_error_line(tsm(env, "download", up["file_id"], "-o", str(tmp_path / "x")), 5, "404")
    one_error_line(tsm(env, "upload", str(tmp_path / "missing.csv")), 1, "missing.csv")


def test_import_then_export_round_trip(live: Live, env: dict[str, str], tmp_path: Path) -> None:
    with Client(live.url) as client:
        kinds = {k.name for k in client.kinds()}
    if not {"import_csv", "export_csv"} <= kinds:
        pytest.skip("the server has no import_csv/export_csv kinds")
    rows = [["id", "name", "score"], *[[str(i), f"person {i}", str(i * 1.5)] for i in range(1, 501)]]
    source = tmp_path / "people.csv"
    with source.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    table = f"people_{tmp_path.name[-8:].lower().replace('-', '_')}".replace("__", "_")
    imported = ok_json(tsm(env, "--json", "import", str(source), "--table", table, "--wait"))
    assert imported["state"] == "succeeded" and imported["kind"] == "import_csv"
    out = tmp_path / "exported.csv"
    exported = ok_json(tsm(env, "--json", "export", table, "-o", str(out)))
    assert exported["task"]["state"] == "succeeded" and exported["download"]["path"] == str(out)
    with out.open(newline="") as handle:
        back = list(csv.reader(handle))
    assert back[0] == rows[0]
    assert sorted((r[0], r[1], float(r[2])) for r in back[1:]) == sorted((r[0], r[1], float(r[2])) for r in rows[1:])


def test_import_into_an_existing_table_is_refused_before_the_upload(
    live: Live, env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "first.csv"
    source.write_text("id,name\n1,a\n2,b\n")
    table = f"taken_{tmp_path.name[-8:].lower().replace('-', '_')}".replace("__", "_")
    assert ok_json(tsm(env, "--json", "import", str(source), "--table", table, "--wait"))["state"] == "succeeded"
    with Client(live.url) as client:
        before = {f.id for f in client.iter_files()}
    again = tsm(env, "import", str(source), "--table", table)
    one_error_line(again, 6, "409", "already exists")
    with Client(live.url) as client:
        assert {f.id for f in client.iter_files()} == before


@sqlite_only
def test_a_failed_task_is_exit_code_7(env: dict[str, str]) -> None:
    failed = tsm(env, "-q", "tasks", "start", "flaky", "-p", "failures=1", "--max-attempts", "1", "--wait")
    one_error_line(failed, 7, "ended failed", "flaky failure on attempt 1")


def _newest(client: Client, name: str) -> Any:
    return next((t for t in client.list_tasks(kind="marker").items if t.params.get("name") == name), None)


@sqlite_only
def test_ctrl_c_while_waiting_leaves_the_task_running(live: Live, env: dict[str, str]) -> None:
    process = spawn(env, "tasks", "start", "marker", "-p", "name=leaverunning", "--wait")
    with live.client() as client:
        task = poll(lambda: (t := _newest(client, "leaverunning")) and t.progress.done >= 1 and t, what="running")
        code, err = stop(process, signal.SIGINT)
        assert code == 130 and "still running" in err and task.id in err
        assert client.get_task(task.id).state == "running"
        client.cancel(task.id)


@sqlite_only
def test_ctrl_c_while_waiting_offers_to_pause(live: Live, env: dict[str, str]) -> None:
    master, slave = pty.openpty()  # an interactive stdin
    try:
        process = spawn(env, "tasks", "start", "marker", "-p", "name=offerpause", "--wait", stdin=slave)
        with live.client() as client:
            task = poll(lambda: (t := _newest(client, "offerpause")) and t.progress.done >= 1 and t, what="running")
            process.send_signal(signal.SIGINT)
            os.write(master, b"p\n")
            _, err = process.communicate(timeout=30)
            assert process.returncode == 130 and "Pause task" in err, err
            assert client.wait(task.id, "paused", timeout=20).state == "paused"
            client.cancel(task.id)
    finally:
        os.close(master)
        os.close(slave)


@sqlite_only
def test_a_task_that_ends_while_the_pause_question_is_open_is_said_so(live: Live, env: dict[str, str]) -> None:
    master, slave = pty.openpty()
    try:
        process = spawn(
            env, "tasks", "start", "process", "-p", "steps=3", "-p", "step_seconds=0.3", "--wait", stdin=slave
        )
        with live.client() as client:
            newest = lambda: next(iter(client.list_tasks(kind="process", limit=1).items), None)  # noqa: E731
            task = poll(lambda: (t := newest()) and t.progress.done >= 1 and t, what="running")
            process.send_signal(signal.SIGINT)
            client.wait(task.id, "succeeded", timeout=20)  # it ends while the question waits
            os.write(master, b"p\n")
            _, err = process.communicate(timeout=30)
        assert process.returncode == 130, err
        assert "Traceback" not in err and f"task {task.id} succeeded; there is nothing to pause" in err, err
    finally:
        os.close(master)
        os.close(slave)


# ---- errors that do not depend on the database (SQLite only) -------------------------------------


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    root = tmp_path_factory.mktemp("auth")
    server = LiveServer(f"sqlite+aiosqlite:///{root / 'tsm.sqlite3'}", root / "storage", TSM_AUTH_REQUIRED="true")
    made = subprocess.run(
        [sys.executable, "-m", "app", "keys", "create", "alice"],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = made.stdout.strip().splitlines()[-1]
    with server:
        yield server, key


def test_bad_token_and_server_down_are_one_clear_line(auth_server: tuple[LiveServer, str], tmp_path: Path) -> None:
    server, key = auth_server
    base = {**os.environ, "PYTHONPATH": str(ROOT), "TSM_CACHE_DIR": str(tmp_path), "TSM_SERVER": server.url}
    one_error_line(tsm({**base, "TSM_TOKEN": "tsm_000000000000_" + "x" * 30}, "tasks", "ls"), 4, "401")
    one_error_line(tsm({**base, "TSM_TOKEN": ""}, "tasks", "ls"), 4, "401")
    good = tsm({**base, "TSM_TOKEN": ""}, "--token", key, "--json", "tasks", "ls")
    assert ok_json(good)["items"] == []
    down = tsm({**base, "TSM_SERVER": "http://127.0.0.1:9"}, "--retries", "1", "tasks", "ls")
    one_error_line(down, 3, "cannot reach http://127.0.0.1:9")
    usage = tsm(base, "tasks", "frobnicate", "x")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr

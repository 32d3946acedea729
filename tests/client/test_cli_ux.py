"""``tsm`` as a user meets it: versions, human units, id prefixes, fail-fast errors, and
``tsm-server run`` options. Real ``tsm`` processes against a real server (SQLite: this is
client-side behaviour; the import round trip on both databases lives in test_cli.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from clients import Client
from tests.client.test_cli import env, ok_json, one_error_line, tsm
from tests.helpers.clients import Live
from tests.helpers.server import ROOT, free_port, poll

__all__ = ["env"]

sqlite_only = pytest.mark.parametrize("live", ["sqlite"], indirect=True)


def test_versions() -> None:
    for module, name in (("clients.cli", "tsm"), ("app", "tsm-server")):
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert re.fullmatch(rf"{name} \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_every_option_says_its_default() -> None:
    from clients.cli import build_parser

    def walk(parser: object) -> list[tuple[str, str]]:
        found = []
        for action in parser._actions:  # type: ignore[attr-defined]
            if action.choices and isinstance(action.choices, dict):
                for child in action.choices.values():
                    found += walk(child)
            elif action.option_strings and action.dest not in ("help", "version"):
                found.append((action.option_strings[-1], action.help or ""))
        return found

    options = walk(build_parser())
    assert len(options) > 20
    missing = [name for name, text in options if "default" not in text and "required" not in text]
    assert missing == [], missing


def test_every_positional_argument_says_what_it_takes() -> None:
    from clients.cli import build_parser

    def walk(parser: object, path: str) -> list[tuple[str, str]]:
        found = []
        for action in parser._actions:  # type: ignore[attr-defined]
            if action.choices and isinstance(action.choices, dict):
                for name, child in action.choices.items():
                    found += walk(child, f"{path} {name}")
            elif not action.option_strings:
                found.append((f"{path} {action.metavar or action.dest}", action.help or ""))
        return found

    positionals = walk(build_parser(), "tsm")
    assert len(positionals) >= 8
    assert [where for where, text in positionals if not text] == []


def test_server_down_fails_fast_and_names_the_url(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    base = {"PYTHONPATH": str(ROOT), "TSM_CACHE_DIR": str(tmp_path), "TSM_TOKEN": "", "PATH": ""}
    started = time.monotonic()
    down = tsm({**base, "TSM_SERVER": f"127.0.0.1:{port}"}, "tasks", "ls")  # no scheme: http:// assumed
    took = time.monotonic() - started
    one_error_line(down, 3, f"cannot reach http://127.0.0.1:{port}", "refused")
    assert took < 8, f"took {took:.1f}s to report a refused connection"


@sqlite_only
def test_server_url_without_scheme_works(live: Live, env: dict[str, str]) -> None:
    bare = live.url.removeprefix("http://")
    listed = ok_json(tsm({**env, "TSM_SERVER": ""}, "--server", bare, "--json", "tasks", "ls"))
    assert "items" in listed


@sqlite_only
def test_id_prefixes_unique_and_ambiguous(live: Live, env: dict[str, str]) -> None:
    with live.client() as client:
        made = [client.create_task("record_steps", {"steps": 1, "step_seconds": 0}) for _ in range(17)]
        ids = [t.id for t in client.iter_tasks()]
    # 17 ids over 16 hex digits: at least two share a first character.
    shared, count = Counter(i[0] for i in ids).most_common(1)[0]
    assert count >= 2
    ambiguous = one_error_line(tsm(env, "tasks", "show", shared), 2, "ambiguous", repr(shared))
    assert str(count) in ambiguous
    target = made[0].id
    prefix = next(target[:n] for n in range(4, 37) if sum(i.startswith(target[:n]) for i in ids) == 1)
    shown = ok_json(tsm(env, "--json", "tasks", "show", prefix))
    assert shown["id"] == target
    watched = tsm(env, "--json", "tasks", "watch", prefix)
    assert watched.returncode == 0, watched.stderr
    end = json.loads(watched.stdout.splitlines()[-1])
    assert end["event"] == "end" and end["data"]["id"] == target
    one_error_line(tsm(env, "tasks", "show", "ffffffff-0000"), 5, "404", "ffffffff-0000")


@sqlite_only
def test_file_prefix_and_not_found_names_the_id(live: Live, env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "little.txt"
    source.write_bytes(b"hello\n" * 1000)
    up = ok_json(tsm(env, "--json", "upload", str(source)))
    with live.client() as client:
        ids = [f.id for f in client.iter_files()]
    file_id = up["file_id"]
    prefix = next(file_id[:n] for n in range(6, len(file_id) + 1) if sum(i.startswith(file_id[:n]) for i in ids) == 1)
    info = ok_json(tsm(env, "--json", "files", "show", prefix))
    assert info["id"] == file_id
    out = tmp_path / "back.txt"
    ok_json(tsm(env, "--json", "download", prefix, "-o", str(out)))
    assert out.read_bytes() == source.read_bytes()
    assert ok_json(tsm(env, "--json", "files", "rm", prefix)) == {"deleted": [file_id]}
    gone = one_error_line(tsm(env, "files", "show", file_id), 5, "404", file_id)
    assert "Not Found: Not Found" not in gone


@sqlite_only
def test_import_reports_rows_rejects_and_how_to_fetch_them(live: Live, env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "scores.csv"
    good = [f"{i},person {i}" for i in range(1, 1501)]
    source.write_text("id,name\n" + "\n".join(good[:700]) + "\n1,2,3,4\n" + "\n".join(good[700:]) + "\n")
    table = "scores_" + tmp_path.name[-6:].lower().replace("-", "_")
    done = tsm(env, "import", str(source), "--table", table, "-p", "on_error=skip", "--wait")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert (
        " succeeded: " in first
        and "is succeeded" not in first
        and "1,500 rows imported" in first
        and "1 rejected" in first
    ), done.stdout
    assert re.search(r"in \d+(\.\d)?s|in \d+m", first) and "rows/s" in first, first
    hint = re.search(r"download them with: tsm download (\S+)", done.stdout)
    assert hint, done.stdout
    rejects = tmp_path / "rejects.csv"
    ok_json(tsm(env, "--json", "download", hint.group(1), "-o", str(rejects)))
    assert "1,2,3,4" in rejects.read_text()

    with Client(live.url) as client:
        task = next(t for t in client.list_tasks(kind="import_csv").items if t.params["table"] == table)
    shown = tsm(env, "tasks", "show", task.id)
    assert shown.returncode == 0, shown.stderr
    progress = next(line for line in shown.stdout.splitlines() if "progress" in line)
    assert re.search(r"\d+(\.\d)? (B|KiB) / \d+(\.\d)? (B|KiB)", progress), progress
    assert "e+" not in shown.stdout and "1,500 rows imported" in shown.stdout


def test_server_run_takes_host_port_workers(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PYTHONPATH": str(ROOT),
        "TSM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tsm.sqlite3'}",
        "TSM_STORAGE_DIR": str(tmp_path / "storage"),
        "TSM_PORT": "1",  # overridden by --port
        "TSM_LOG_LEVEL": "warning",
        "PATH": "/usr/bin:/bin",
    }
    bad = subprocess.run(
        [sys.executable, "-m", "app", "run", "--port", "0"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--port" in bad.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return process.poll() is not None  # exited: stop polling, the assert below tells

        poll(ready, timeout=30, what="the server on --port")
        assert process.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(20)


def test_transfer_rate_is_in_the_same_binary_units_as_the_sizes() -> None:
    from rich.progress import Progress

    from clients._cli_output import _ByteRate

    with Progress(disable=True) as progress:
        job = progress.add_task("upload", total=10 * 2**20)
        progress.update(job, completed=5 * 2**20)
        task = progress.tasks[job]
        task.finished_speed = 3 * 2**20  # what rich measured, in bytes per second
        assert _ByteRate().render(task).plain == "3.0 MiB/s"


@sqlite_only
def test_files_preview_prints_dialect_columns_and_rows(live: Live, env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "pipes.csv"
    source.write_text("day|count\n2026-11-01|4\n2026-11-02|5\n")
    file_id = ok_json(tsm(env, "--json", "upload", str(source)))["file_id"]
    shown = tsm(env, "files", "preview", file_id[:8])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("pipe-separated") and "a header line" in lines[0], shown.stdout
    assert "day" in lines[1] and "count" in lines[1] and "date" in lines[2] and "bigint" in lines[2], shown.stdout
    assert "2026-11-02" in shown.stdout

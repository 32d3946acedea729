"""Schemathesis over the whole API spec, against a live server on PostgreSQL with auth on.

Every check runs (server errors, status codes, content types, response schemas and headers,
negative and positive data, missing headers, unsupported methods, Allow, auth). A failure
prints schemathesis's own report, with a curl line to reproduce it. tests/schemathesis.toml
says where the tus and HTTP protocols answer statuses schemathesis does not expect.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.database import clean_pg
from tests.helpers.server import ROOT, LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEED = "20261124"


def _server_env(url: str, storage: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TSM_DATABASE_URL": url, "TSM_STORAGE_DIR": str(storage)}


def _create_key(url: str, storage: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app", "keys", "create", "fuzzer"],
        env=_server_env(url, storage),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().split()[-1]


def _schemathesis(server: LiveServer, tmp_path: Path, examples: int, *headers: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run", f"{server.url}/openapi.json"]
    command += ["--checks", "all", "--seed", SEED, "--max-examples", str(examples)]
    # One worker: this CPython keeps the AST validator's recursion depth in shared state (gh-106905),
    # so hypothesis compiling in two threads at once can die with "AST constructor recursion depth
    # mismatch".
    command += ["--workers", "1", "--request-timeout", "10", "--report-dir", str(tmp_path / "report")]
    for header in headers:
        command += ["--header", header]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def _cases_passed(done: subprocess.CompletedProcess[str]) -> int:
    """How many cases ran, all of them passing (0 when any failed or errored)."""
    summary = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    if done.returncode != 0 or summary is None or summary.group(1) != summary.group(2):
        return 0
    return int(summary.group(1))


@pytest.fixture
def live(pg_url: str, tmp_path: Path):
    asyncio.run(clean_pg(pg_url))
    storage = tmp_path / "storage"
    with LiveServer(pg_url, storage, TSM_AUTH_REQUIRED="true", TSM_LOG_LEVEL="error") as server:
        yield server, _create_key(pg_url, storage)


def test_schemathesis_finds_nothing_with_a_key(live, tmp_path):
    server, key = live
    done = _schemathesis(server, tmp_path, 10, f"Authorization: Bearer {key}")
    assert _cases_passed(done) >= 500, done.stdout[-20000:] + done.stderr[-2000:]


def test_schemathesis_without_a_key_gets_401_problems_as_declared(live, tmp_path):
    server, _key = live
    done = _schemathesis(server, tmp_path, 3)
    assert _cases_passed(done) >= 100, done.stdout[-20000:] + done.stderr[-2000:]

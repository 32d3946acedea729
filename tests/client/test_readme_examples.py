"""The README's Python examples run as written against a live server (each ```python block)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from clients import Client
from tests.helpers.clients import Live
from tests.helpers.server import ROOT, LiveServer, poll

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
CLIENT_BLOCKS = [block for block in BLOCKS if "from clients import" in block]


def test_the_readme_has_client_examples():
    assert len(CLIENT_BLOCKS) >= 2


@pytest.mark.parametrize("number", range(len(CLIENT_BLOCKS)))
def test_readme_client_example_runs_as_written(live: Live, tmp_path, number):
    (tmp_path / "big.csv").write_text("id,name,amount\n" + "".join(f"{i},n{i},{i * 1.5}\n" for i in range(500)))
    env = {**os.environ, "TSM_SERVER": live.url, "TSM_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TSM_TOKEN", None)
    command = [sys.executable, "-c", CLIENT_BLOCKS[number]]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "succeeded" in run.stdout  # every example follows a task to its end
    if "export_csv" in CLIENT_BLOCKS[number]:
        exported = (tmp_path / "sales.csv").read_text().splitlines()
        assert len(exported) == 501 and exported[0].split(",")[:3] == ["id", "name", "amount"]


PLUGIN = next(block for block in BLOCKS if "@task_kind(" in block)


def test_readme_plugin_kind_runs_as_written_and_pauses_at_its_checkpoints(tmp_path):
    """The README's kind, loaded from its own module by TSM_KIND_MODULES, runs, pauses and resumes."""
    (tmp_path / "readme_kind.py").write_text(PLUGIN)
    with (
        LiveServer(
            f"sqlite+aiosqlite:///{tmp_path / 'tsm.sqlite3'}",
            tmp_path / "storage",
            PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}",
            TSM_KIND_MODULES="readme_kind",
        ) as server,
        Client(server.url) as tsm,
    ):
        assert "crunch" in {kind.name for kind in tsm.kinds()}
        task = tsm.create_task("crunch", {"items": 100_000})
        poll(lambda: tsm.get_task(task.id).checkpoint is not None, timeout=60)  # running, past a checkpoint
        tsm.pause(task.id)
        paused = tsm.wait(task.id, {"paused", "succeeded"})
        tsm.resume(task.id)
        done = tsm.wait(task.id, "succeeded")
    assert done.result == {"items": 100_000}
    if paused.state == "paused":  # it stopped at a checkpoint and goes on from there
        assert paused.checkpoint is not None and paused.checkpoint["next"] % 100 == 0

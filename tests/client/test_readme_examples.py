"""The README's Python examples run as written against a live server (each ```python block)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers.clients import Live
from tests.helpers.server import ROOT

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

"""One progress unit per call, and a callback that ends where the call ends (real server, SQLite).

Transfers report ``(done, total)`` in bytes from where they start — a resumed download from its
``.part`` — to the last byte; a wait reports the task's :class:`Progress` in the task's unit,
last as the task is when the wait returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from clients import Progress
from tests.helpers.clients import Live, random_file

pytestmark = pytest.mark.parametrize("live", ["sqlite"], indirect=True)  # client-side behaviour only


class Stop(Exception):
    pass


def test_a_wait_reports_the_progress_of_the_task_it_returns(live: Live) -> None:
    with live.client() as tsm:
        task = tsm.create_task("record_steps", {"steps": 3, "step_seconds": 0})
        assert tsm.wait(task.id, "succeeded", timeout=20).progress.done == 3
        seen: list[Progress] = []
        done = tsm.wait(task.id, on_progress=seen.append)  # already over: no event stream to follow
    assert done.state == "succeeded"
    assert [(p.done, p.total, p.unit) for p in seen] == [(3, 3, "steps")]
    assert (seen[-1].model_extra or {}).get("state") == "succeeded"  # like a progress event


def test_a_resumed_download_reports_bytes_from_its_part(live: Live, tmp_path: Path) -> None:
    source = random_file(tmp_path / "r.bin", 1024 * 1024)
    dest = tmp_path / "r.copy"

    def stop_at(limit: int) -> Callable[[int, int | None], None]:
        def callback(done: int, total: int | None) -> None:
            if done >= limit:
                raise Stop()

        return callback

    with live.client() as tsm:
        up = tsm.upload(source)
        with pytest.raises(Stop):
            tsm.download(up.file_id, dest, on_progress=stop_at(300 * 1024))
        kept = (tmp_path / "r.copy.part").stat().st_size
        seen: list[tuple[int, int | None]] = []
        got = tsm.download(up.file_id, dest, on_progress=lambda done, total: seen.append((done, total)))
    assert 300 * 1024 <= kept < up.size and got.resumed_from == kept
    assert seen[0] == (kept, up.size) and seen[-1] == (up.size, up.size)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))


def test_a_download_whose_part_is_complete_reports_its_bytes(live: Live, tmp_path: Path) -> None:
    source = random_file(tmp_path / "c.bin", 200 * 1024)
    dest = tmp_path / "c.copy"

    def stop_at_the_end(done: int, total: int | None) -> None:
        if done == total:
            raise Stop()  # every byte is in ``.part``; it was not renamed yet

    with live.client() as tsm:
        up = tsm.upload(source)
        with pytest.raises(Stop):
            tsm.download(up.file_id, dest, on_progress=stop_at_the_end)
        seen: list[tuple[int, int | None]] = []
        got = tsm.download(up.file_id, dest, on_progress=lambda done, total: seen.append((done, total)))
    assert got.resumed_from == up.size and dest.read_bytes() == source.read_bytes()
    assert seen == [(up.size, up.size)]

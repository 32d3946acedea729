"""The Python client (``clients``) against a real server: uvicorn on loopback, both databases.

One server per database for the whole module (``live`` below) keeps this fast; every test uses
its own tasks and files, so tests don't see each other. Pure-logic tests (SSE parsing, the
resume store, a server that is down) don't need a server or a database.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients import (
    Client,
    Conflict,
    ConnectionFailed,
    NotFound,
    TaskEnded,
    Unprocessable,
    WaitTimeout,
)
from clients._tasks import parse_sse
from clients.store import ResumeStore, fingerprint
from tests.helpers.clients import Live, random_file

# ---- tasks -------------------------------------------------------------------------------------


def test_sync_task_control_round_trip(live: Live) -> None:
    with live.client() as tsm:
        task = tsm.create_task("record_steps", {"steps": 80, "step_seconds": 0.02})
        assert task.state == "queued" and task.kind == "record_steps"
        running = tsm.wait(task.id, "running", timeout=20)
        assert running.state in ("running", "succeeded")
        assert tsm.pause(task.id).state in ("pausing", "paused")
        paused = tsm.wait(task.id, "paused", timeout=20)
        assert paused.state == "paused" and paused.progress.done < 80
        assert tsm.get_task(task.id).progress.done == paused.progress.done  # frozen while paused
        assert tsm.resume(task.id).state in ("queued", "running")
        seen: list[float] = []
        done = tsm.wait(task.id, timeout=30, on_progress=lambda p: seen.append(p.done))
        assert done.state == "succeeded" and done.result == {"steps": 80}
        assert seen and max(seen) == 80 and min(seen) >= paused.progress.done  # resumed, not restarted
        states = [e.state for e in tsm.events(task.id) if e.type == "state"]
        assert states[:2] == ["queued", "running"] and "paused" in states and states[-1] == "succeeded"
        ids = [t.id for t in tsm.iter_tasks(kind="record_steps", page_size=1)]
        assert task.id in ids and len(ids) == len(set(ids))


async def test_async_client_runs_the_same_api(live: Live) -> None:
    async with live.async_client() as tsm:
        kinds = {k.name for k in await tsm.kinds()}
        assert {"process", "marker", "record_steps"} <= kinds
        task = await tsm.create_task("marker", {"name": "asyncclient", "step_seconds": 0.02})
        await tsm.wait(task.id, "running", timeout=20)
        events = []
        async for event in tsm.events(task.id):
            events.append(event)
            if event.type == "progress" and event.progress and event.progress.done >= 2:
                cancelled = await tsm.cancel(task.id)
                assert cancelled.state in ("cancelling", "cancelled")
        assert events[-1].type == "end" and events[-1].task is not None
        assert events[-1].task.state == "cancelled"
        page = await tsm.list_tasks(kind="marker", limit=5)
        assert task.id in [t.id for t in page.items]
        # Two operations at once on one AsyncClient don't mix up their results.
        a, b = await asyncio.gather(tsm.get_task(task.id), tsm.kinds())
        assert a.id == task.id and isinstance(b, list)


def test_errors_map_to_one_exception_tree(live: Live) -> None:
    with live.client() as tsm:
        with pytest.raises(NotFound) as missing:
            tsm.get_task("no-such-task")
        assert missing.value.status == 404 and "no-such-task" in missing.value.detail
        with pytest.raises(Unprocessable) as bad:
            tsm.create_task("no_such_kind")
        assert "no_such_kind" in str(bad.value)
        task = tsm.create_task("record_steps", {"steps": 1, "step_seconds": 0})
        assert tsm.wait(task.id, timeout=20).state == "succeeded"
        with pytest.raises(Conflict) as conflict:
            tsm.resume(task.id)
        assert conflict.value.current_state == "succeeded"
        with pytest.raises(TaskEnded) as ended:
            tsm.wait(task.id, "paused")  # it can never get there any more
        assert ended.value.task.state == "succeeded"
        slow = tsm.create_task("marker", {"name": "waittimeout", "step_seconds": 0.05})
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            tsm.wait(slow.id, "succeeded", timeout=0.5)
        assert time.monotonic() - started < 10
        tsm.cancel(slow.id)


# ---- transfers ----------------------------------------------------------------------------------


def test_upload_and_download_are_byte_identical(live: Live, tmp_path: Path) -> None:
    source = random_file(tmp_path / "data.bin", 3 * 1024 * 1024 + 17)
    progress: list[tuple[int, int | None]] = []
    with live.client(chunk_size=1024 * 1024) as tsm:
        up = tsm.upload(source, on_progress=lambda done, total: progress.append((done, total)))
        assert up.size == source.stat().st_size and up.checksum == "sha256" and up.resumed_from == 0
        assert progress[-1] == (up.size, up.size) and len(progress) > 4  # sub-chunk progress
        info = tsm.file_info(up.file_id)
        assert info.filename == "data.bin" and info.state == "complete" and info.length == up.size
        assert live.stored(up.file_id) == source.read_bytes()
        got = tsm.download(up.file_id, tmp_path / "copy.bin")
        assert Path(got.path).read_bytes() == source.read_bytes() and "size" in got.verified
        assert not (tmp_path / "copy.bin.part").exists()
        with pytest.raises(FileExistsError):
            tsm.download(up.file_id, tmp_path / "copy.bin")
        folder = tmp_path / "into"
        folder.mkdir()
        named = tsm.download(up.file_id, folder)  # a folder: the server's file name is used
        assert Path(named.path) == folder / "data.bin"
        assert up.file_id in [f.id for f in tsm.iter_files(page_size=2)]
        tsm.delete_file(up.file_id)
        with pytest.raises(NotFound):
            tsm.file_info(up.file_id)


def test_import_and_export_helpers(live: Live, tmp_path: Path) -> None:
    source = tmp_path / "cities.csv"
    source.write_text("id,city\n" + "".join(f"{i},city {i}\n" for i in range(1, 301)))
    with live.client() as tsm:
        if not {"import_csv", "export_csv"} <= {k.name for k in tsm.kinds()}:
            pytest.skip("the server has no import_csv/export_csv kinds")
        uploads: list[int] = []
        task = tsm.import_csv(
            source, "cities", mode="replace", wait=True, on_upload_progress=lambda d, t: uploads.append(d)
        )
        assert task.state == "succeeded" and task.params["table"] == "cities" and uploads[-1] == source.stat().st_size
        seen: list[float] = []
        got = tsm.export_csv("cities", tmp_path / "back.csv", on_progress=lambda p: seen.append(p.done))
    assert Path(got.path).read_text().splitlines() == source.read_text().splitlines()
    assert seen and "size" in got.verified


def test_an_import_is_checked_before_its_upload_and_leaves_no_orphan(live: Live, tmp_path: Path) -> None:
    source = tmp_path / "towns.csv"
    source.write_text("id,town\n" + "".join(f"{i},town {i}\n" for i in range(1, 51)))
    with live.client() as tsm:
        tsm.import_csv(source, "towns", mode="replace", wait=True)
        before = {f.id for f in tsm.iter_files()}
        sent: list[int] = []
        with pytest.raises(Conflict, match="already exists"):  # the table is refused before any byte
            tsm.import_csv(
                source.rename(tmp_path / "other.csv"), "towns", on_upload_progress=lambda d, t: sent.append(d)
            )
        assert sent == [] and {f.id for f in tsm.iter_files()} == before
        check = tsm.check_task("import_csv", {"table": "towns", "mode": "append"})
        assert check.params["table"] == "towns" and check.params["file_id"] is None
        unreadable = tmp_path / "unreadable.csv"
        unreadable.write_bytes(b"")  # passes the dry run, then fails the real call after its upload
        with pytest.raises(Unprocessable):
            tsm.import_csv(unreadable, "fresh_table")
        assert {f.id for f in tsm.iter_files()} == before  # the refused task's upload was removed


def test_a_csv_preview_shows_the_sniffed_dialect_and_inferred_types(live: Live, tmp_path: Path) -> None:
    source = tmp_path / "semi.csv"
    source.write_text("id;name;amount\n" + "".join(f"{i};n{i};{i}.5\n" for i in range(1, 40)))
    with live.client() as tsm:
        up = tsm.upload(source)
        preview = tsm.preview_csv(up.file_id, rows=3)
        forced = tsm.preview_csv(up.file_id, rows=1, header=False, delimiter=";")
    assert preview.dialect["delimiter"] == ";" and preview.dialect["header"] is True
    assert [(c["name"], c["type"]) for c in preview.columns] == [
        ("id", "bigint"),
        ("name", "text"),
        ("amount", "numeric"),
    ]
    assert preview.rows == [["1", "n1", "1.5"], ["2", "n2", "2.5"], ["3", "n3", "3.5"]]
    assert forced.dialect["header"] is False and forced.rows == [["id", "name", "amount"]]


def test_empty_file_round_trip(live: Live, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with live.client() as tsm:
        up = tsm.upload(empty)
        got = tsm.download(up.file_id, tmp_path / "empty.copy")
    assert up.size == 0 and got.size == 0 and Path(got.path).read_bytes() == b""


class Interrupt(Exception):
    pass


def _stop_after(limit: int) -> Any:
    def callback(done: int, total: int | None) -> None:
        if done >= limit:
            raise Interrupt()

    return callback


def test_upload_resumes_from_the_servers_offset(live: Live, tmp_path: Path) -> None:
    source = random_file(tmp_path / "big.bin", 2 * 1024 * 1024)
    with live.client(chunk_size=256 * 1024) as tsm:
        with pytest.raises(Interrupt):
            tsm.upload(source, on_progress=_stop_after(700 * 1024))  # dies inside the third PATCH
        up = tsm.upload(source)
    assert 512 * 1024 <= up.resumed_from < up.size
    assert live.stored(up.file_id) == source.read_bytes()
    assert ResumeStore(live.root / "cache").get("uploads", f"{live.url}|{fingerprint(source)}") is None


async def test_async_upload_and_download_resume(live: Live, tmp_path: Path) -> None:
    source = random_file(tmp_path / "a.bin", 1536 * 1024)
    async with live.async_client(chunk_size=256 * 1024) as tsm:
        with pytest.raises(Interrupt):
            await tsm.upload(source, on_progress=_stop_after(600 * 1024))
        up = await tsm.upload(source)
        assert up.resumed_from > 0
        dest = tmp_path / "a.copy"
        with pytest.raises(Interrupt):
            await tsm.download(up.file_id, dest, on_progress=_stop_after(512 * 1024))
        assert (tmp_path / "a.copy.part").stat().st_size >= 512 * 1024
        got = await tsm.download(up.file_id, dest)
    assert got.resumed_from >= 512 * 1024 and dest.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("live", ["sqlite"], indirect=True)  # client-side behaviour only
async def test_cancelled_async_download_resumes(live: Live, tmp_path: Path) -> None:
    """asyncio cancellation (a timeout here) mid-body leaves a resumable ``.part``, nothing else."""
    source = random_file(tmp_path / "slow.bin", 2 * 1024 * 1024)
    dest, part = tmp_path / "slow.copy", tmp_path / "slow.copy.part"
    async with live.async_client() as tsm:
        up = await tsm.upload(source)
        download = asyncio.ensure_future(tsm.download(up.file_id, dest, limit_rate=1024 * 1024))
        deadline = time.monotonic() + 20
        while not (part.exists() and part.stat().st_size > 0):
            assert time.monotonic() < deadline and not download.done(), "no bytes arrived"
            await asyncio.sleep(0.02)
        download.cancel()
        with pytest.raises(asyncio.CancelledError):
            await download
        kept = part.stat().st_size
        assert 0 < kept < 2 * 1024 * 1024 and not dest.exists()
        got = await tsm.download(up.file_id, dest)
    assert got.resumed_from == kept and dest.read_bytes() == source.read_bytes()


def test_download_starts_over_when_the_validator_is_stale(live: Live, tmp_path: Path) -> None:
    source = random_file(tmp_path / "v.bin", 600 * 1024)
    with live.client() as tsm:
        up = tsm.upload(source)
        dest = tmp_path / "v.copy"
        part = tmp_path / "v.copy.part"
        part.write_bytes(b"x" * 1000)  # bytes from some other version of the file …
        key = f"{live.url}|{up.file_id}|{dest.resolve()}"
        tsm.store.put("downloads", key, {"validator": '"not-the-etag"', "length": 600 * 1024})
        got = tsm.download(up.file_id, dest)  # … If-Range fails, the server sends it all (200)
    assert got.resumed_from == 0 and dest.read_bytes() == source.read_bytes()


def test_upload_checksum_mismatch_is_retried(live: Live, tmp_path: Path) -> None:
    """A chunk whose Upload-Checksum fails (460) is sent again; the result is still intact."""
    source = random_file(tmp_path / "c.bin", 300 * 1024)
    corrupted = {"done": False}

    def corrupt_once(request: httpx.Request) -> None:
        if request.method == "PATCH" and not corrupted["done"]:
            corrupted["done"] = True
            request.headers["Upload-Checksum"] = "sha256 " + "A" * 43 + "="

    with live.client(chunk_size=128 * 1024, backoff=0.01) as tsm:
        tsm._http.event_hooks["request"].append(corrupt_once)
        up = tsm.upload(source, checksum="sha256")
    assert corrupted["done"] and live.stored(up.file_id) == source.read_bytes()


class FlakyTransport(httpx.HTTPTransport):
    """A real transport that drops the first PATCH and cuts the first download body short."""

    def __init__(self, cut_after: int) -> None:
        super().__init__()
        self.patch_failures, self.cut_after, self.cuts = 1, cut_after, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and self.patch_failures:
            self.patch_failures -= 1
            raise httpx.ConnectError("link down", request=request)
        response = super().handle_request(request)
        if request.method == "GET" and response.status_code == 200 and not self.cuts:
            self.cuts += 1
            return httpx.Response(200, headers=response.headers, stream=CutStream(response.stream, self.cut_after))
        return response


class CutStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, limit: int) -> None:
        self.inner, self.limit = inner, limit

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            if sent + len(chunk) > self.limit:
                yield chunk[: self.limit - sent]
                raise httpx.ReadError("connection reset")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


def test_network_failures_are_retried_from_where_the_bytes_stopped(live: Live, tmp_path: Path) -> None:
    source = random_file(tmp_path / "flaky.bin", 1024 * 1024 + 5)
    flaky = FlakyTransport(cut_after=300_000)
    with live.client(transport=flaky, backoff=0.01, chunk_size=256 * 1024) as tsm:
        up = tsm.upload(source)
        got = tsm.download(up.file_id, tmp_path / "flaky.copy")
    assert flaky.patch_failures == 0 and flaky.cuts == 1
    assert live.stored(up.file_id) == source.read_bytes()
    assert Path(got.path).read_bytes() == source.read_bytes() and got.resumed_from == 0


# ---- no server needed -------------------------------------------------------------------------


def test_server_down_is_one_connection_error(tmp_path: Path) -> None:
    expected = r"cannot reach http://127\.0\.0\.1:9: connection refused"
    with (
        Client("http://127.0.0.1:9", retries=1, backoff=0.01, cache_dir=tmp_path) as tsm,
        pytest.raises(ConnectionFailed, match=expected),
    ):
        tsm.list_tasks()


def test_sse_parser_handles_split_chunks_and_crlf() -> None:
    stream = b'id: 7\r\nevent: state\r\ndata: {"state":"running"}\r\n\r\n: keep-alive\n\nevent: progress\ndata: {"d'
    events, rest = parse_sse(bytearray(stream))
    assert events == [("state", '{"state":"running"}', "7")]
    events, rest = parse_sse(rest + b'one":1}\n\n')
    assert events == [("progress", '{"done":1}', None)] and rest == b""


def test_fingerprint_follows_content_not_name(tmp_path: Path) -> None:
    first = random_file(tmp_path / "one.bin", 200 * 1024)
    key = fingerprint(first)
    moved = first.rename(tmp_path / "two.bin")
    assert fingerprint(moved) == key
    with moved.open("r+b") as handle:  # same size, new tail bytes: a different upload
        handle.seek(-1, os.SEEK_END)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    os.utime(moved, ns=(0, int(key.split("|")[1])))
    assert fingerprint(moved) != key
    store = ResumeStore(tmp_path / "cache")
    store.put("uploads", key, {"url": "http://x/files/1"})
    assert store.get("uploads", key)["url"] == "http://x/files/1"
    store.put("uploads", key, None)
    assert store.get("uploads", key) is None

"""tus against a real uvicorn: cut connections, a crash, two replicas, and the tuspy client
(on the local directory and on S3, where the replicas share no directory at all)."""

from __future__ import annotations

import io
import os
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient import client as tus_client

from tests.helpers.s3 import store_settings
from tests.helpers.server import LiveServer, poll
from tests.helpers.tus import OCTET, TUS

pytestmark = pytest.mark.parametrize("store", ["local", "s3"], indirect=True)

DATA = os.urandom(3 * 1024 * 1024 + 123)


@pytest.fixture
def store_env(store: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The server's environment for the store under test: nothing for local, the bucket for s3."""
    if store == "local":
        return {}
    values = store_settings(request.getfixturevalue("s3_server"))
    return {f"TSM_{name.upper()}": value for name, value in values.items()}


def _create(server: LiveServer, length: int) -> str:
    response = httpx.post(f"{server.url}/files", headers={**TUS, "Upload-Length": str(length)})
    assert response.status_code == 201, response.text
    return urlsplit(response.headers["location"]).path


def _offset(server: LiveServer, path: str) -> int:
    return int(httpx.head(server.url + path, headers=TUS).headers["upload-offset"])


def _open_patch(server: LiveServer, path: str, offset: int, total: int) -> socket.socket:
    """Start a PATCH that announces ``total`` body bytes; the caller sends (some of) them."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {total}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def _patch_until_accepted(server: LiveServer, path: str, offset: int, body: bytes) -> httpx.Response:
    """PATCH, retrying while the previous (cut) request still holds the upload's lock."""

    def attempt():
        response = httpx.patch(server.url + path, headers={**OCTET, "Upload-Offset": str(offset)}, content=body)
        return response if response.status_code != 423 else None

    return poll(attempt, what="the upload lock to be released")


def test_disconnect_mid_patch_keeps_every_received_byte_and_resume_completes(db_url, tmp_path, store_env):
    with LiveServer(db_url, tmp_path / "storage", **store_env) as server:
        path = _create(server, len(DATA))
        cut = 1536 * 1024 + 7
        sock = _open_patch(server, path, 0, len(DATA))
        sock.sendall(DATA[:cut])
        sock.close()  # the client vanishes mid-body
        poll(lambda: _offset(server, path) == cut, what=f"HEAD to report {cut} bytes")
        response = _patch_until_accepted(server, path, cut, DATA[cut:])
        assert response.status_code == 204, response.text
        assert response.headers["upload-offset"] == str(len(DATA))
        assert httpx.get(server.url + path).content == DATA


def test_a_patch_body_that_goes_silent_is_cut_and_its_bytes_kept(db_url, tmp_path, store_env):
    # Idle limit = 5 leases = 2 s here: the client's network vanished without closing the socket.
    with LiveServer(db_url, tmp_path / "storage", TSM_LEASE_SECONDS="0.4", **store_env) as server:
        path = _create(server, len(DATA))
        sock = _open_patch(server, path, 0, len(DATA))
        sock.sendall(DATA[:100_000])
        try:
            poll(lambda: _offset(server, path) == 100_000, what="the silent PATCH's bytes to be committed")
            response = _patch_until_accepted(server, path, 100_000, DATA[100_000:])
            assert response.status_code == 204
            assert httpx.get(server.url + path).content == DATA
        finally:
            sock.close()


def test_crash_mid_patch_then_restart_reports_an_offset_backed_by_bytes_on_disk(db_url, tmp_path, store_env):
    storage = tmp_path / "storage"
    data = os.urandom(12 * 1024 * 1024)
    with LiveServer(db_url, storage, **store_env) as server:
        path = _create(server, len(data))
        sock = _open_patch(server, path, 0, len(data))
        sock.sendall(data[: 9 * 1024 * 1024])
        # Wait for the heartbeat to commit durable progress, then crash without any clean-up.
        poll(lambda: _offset(server, path) > 0, what="progress to be committed")
        server.kill()
        sock.close()
    stored = storage / "files" / path.rsplit("/", 1)[1]
    with LiveServer(db_url, storage, TSM_LEASE_SECONDS="1", **store_env) as server:
        offset = poll(lambda: _patch_offset_after_lease(server, path), what="the dead writer's lease to lapse")
        assert 0 < offset <= 9 * 1024 * 1024
        if not store_env:  # on S3 the offset is the row's acknowledged parts: nothing to reconcile
            assert stored.stat().st_size == offset  # reconciled: the offset names exactly the bytes on disk
            assert stored.read_bytes() == data[:offset]
        response = _patch_until_accepted(server, path, offset, data[offset:])
        assert response.status_code == 204
        assert httpx.get(server.url + path).content == data


def _patch_offset_after_lease(server: LiveServer, path: str) -> int | None:
    offset = _offset(server, path)
    probe = httpx.patch(server.url + path, headers={**OCTET, "Upload-Offset": str(offset)}, content=b"")
    return offset if probe.status_code == 204 else None


def test_concurrent_patch_across_two_replicas_is_refused_by_the_database_lock(db_url, tmp_path, store_env):
    if db_url.startswith("sqlite"):
        pytest.skip("several replicas need PostgreSQL: SQLite serves one process (see DESIGN.md)")
    storage = tmp_path / "storage"
    data = os.urandom(8 * 1024 * 1024)
    # On S3 each replica has its own directory: the bucket and the database are all they share.
    other = tmp_path / "other" if store_env else storage
    with LiveServer(db_url, storage, **store_env) as first, LiveServer(db_url, other, **store_env) as second:
        path = _create(first, len(data))
        sock = _open_patch(first, path, 0, len(data))
        sock.sendall(data[: 6 * 1024 * 1024])
        offset = poll(lambda: _offset(second, path), what="the first replica's progress")
        intruder = httpx.patch(second.url + path, headers={**OCTET, "Upload-Offset": str(offset)}, content=b"\0" * 1024)
        assert intruder.status_code == 423, intruder.text
        assert intruder.headers["tus-resumable"] == "1.0.0"
        sock.sendall(data[6 * 1024 * 1024 :])
        reply = sock.recv(65536).decode("latin-1")
        sock.close()
        assert reply.startswith("HTTP/1.1 204"), reply
        assert httpx.get(second.url + path).content == data


def test_tuspy_client_uploads_pauses_and_resumes(db_url, tmp_path, store_env):
    data = os.urandom(1024 * 1024 + 5)
    with LiveServer(db_url, tmp_path / "storage", **store_env) as server:
        client = tus_client.TusClient(f"{server.url}/files")
        uploader = client.uploader(
            file_stream=io.BytesIO(data),
            chunk_size=256 * 1024,
            metadata={"filename": "tuspy.bin"},
            upload_checksum=True,
        )
        uploader.upload_chunk()
        uploader.upload_chunk()  # "pause": the client simply stops sending here
        assert _offset(server, urlsplit(uploader.url).path) == 512 * 1024
        resumed = client.uploader(file_stream=io.BytesIO(data), url=uploader.url, chunk_size=300 * 1024)
        assert resumed.offset == 512 * 1024  # learnt with HEAD
        resumed.upload()
        response = httpx.get(uploader.url)
        assert response.content == data
        assert "tuspy.bin" in response.headers["content-disposition"]


def test_an_upload_killed_mid_patch_on_one_replica_is_finished_through_another(db_url, tmp_path, store_env):
    data = os.urandom(11 * 1024 * 1024 + 3)
    storage = tmp_path / "storage"
    other = tmp_path / "other" if store_env else storage  # on S3 the second replica shares no directory
    with LiveServer(db_url, storage, **store_env) as first:
        path = _create(first, len(data))
        sock = _open_patch(first, path, 0, len(data))
        sock.sendall(data[: 7 * 1024 * 1024])
        poll(lambda: _offset(first, path) > 0, what="progress to be committed")
        first.kill()
        sock.close()
    with LiveServer(db_url, other, TSM_LEASE_SECONDS="1", **store_env) as second:
        offset = poll(lambda: _patch_offset_after_lease(second, path), what="the dead writer's lease to lapse")
        assert 0 < offset <= 7 * 1024 * 1024
        response = _patch_until_accepted(second, path, offset, data[offset:])
        assert response.status_code == 204
        assert httpx.get(second.url + path, headers={"Range": "bytes=5242870-5242889"}).content == data[5242870:5242890]
        assert httpx.get(second.url + path).content == data

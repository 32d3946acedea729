"""tus on S3: multipart parts, the tail object, another replica continuing, nothing left behind.

The protocol itself is covered on both stores by test_tus.py; these look at what only exists
on S3 (part lists, tails, open multipart uploads), on both databases.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from app.models import utcnow
from app.services.files.s3store import PART_BYTES
from tests.helpers.apps import open_app
from tests.helpers.tus import TUS, b64, get_row, new_upload, patch, poll, s3_leftovers, set_row

pytestmark = pytest.mark.parametrize("store", ["s3"], indirect=True)
MiB = 1 << 20


def _id(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def _sha256(client, file_id: str) -> str | None:
    return (await client.get(f"/files/{file_id}/info")).json()["sha256"]


@pytest.mark.parametrize(
    "size",
    [1, 4 * MiB, 5 * MiB, 5 * MiB + 1, pytest.param(64 * MiB, marks=pytest.mark.slow)],
    ids=["1B", "4MiB", "5MiB", "5MiB+1", "64MiB"],
)
async def test_patch_sizes_around_the_part_size_count_only_acknowledged_bytes(client, app, size):
    data = os.urandom(size + 7)
    url = await new_upload(client, len(data))
    first = await patch(client, url, 0, data[:size])
    assert first.status_code == 204 and first.headers["upload-offset"] == str(size)
    row = await get_row(app, _id(url))
    parts, tail = row.multipart["parts"], row.multipart["tail"]
    assert sum(p["size"] for p in parts) + tail == row.offset == size
    assert all(p["size"] >= PART_BYTES for p in parts) and tail < PART_BYTES
    assert [p["number"] for p in parts] == list(range(1, len(parts) + 1))
    assert all(p["etag"] for p in parts)

    second = await patch(client, url, size, data[size:])
    assert second.status_code == 204 and second.headers["upload-offset"] == str(len(data))
    row = await get_row(app, _id(url))
    assert row.state == "complete" and row.multipart is None
    response = await client.get(url)
    assert response.status_code == 200 and response.content == data
    assert await poll(lambda: _sha256(client, _id(url))) == hashlib.sha256(data).hexdigest()
    assert await s3_leftovers(app, _id(url)) == [app.state.store.key(_id(url))]  # one object, no tail


async def test_a_second_replica_continues_an_upload_from_the_parts_and_tail_in_the_row(settings, tmp_path):
    data = os.urandom(13 * MiB + 5)
    cuts = [0, 3 * MiB, 6 * MiB + 1, 11 * MiB, len(data)]
    replica_b = settings.model_copy(update={"storage_dir": tmp_path / "replica-b"})  # shares no directory
    async with open_app(settings) as (app_a, client_a), open_app(replica_b) as (_app_b, client_b):
        url = await new_upload(client_a, len(data))
        for number, (start, end) in enumerate(itertools.pairwise(cuts)):
            client = client_a if number % 2 == 0 else client_b
            response = await patch(client, url, start, data[start:end])
            assert response.status_code == 204 and response.headers["upload-offset"] == str(end)
            head = await (client_b if client is client_a else client_a).head(url, headers=TUS)
            assert head.headers["upload-offset"] == str(end)
        assert (await client_b.get(url)).content == data
        ranged = await client_b.get(url, headers={"Range": f"bytes={5 * MiB - 2}-{5 * MiB + 1},-3"})
        assert ranged.status_code == 206
        assert data[5 * MiB - 2 : 5 * MiB + 2] in ranged.content and data[-3:] in ranged.content
        assert await s3_leftovers(app_a, _id(url)) == [app_a.state.store.key(_id(url))]


async def test_a_failed_checksum_keeps_the_previous_tail_and_leaves_one_tail_object(client, app):
    data = os.urandom(3 * MiB)
    url = await new_upload(client, len(data))
    assert (await patch(client, url, 0, data[: 1 * MiB])).status_code == 204
    before = (await get_row(app, _id(url))).multipart
    wrong = {"Upload-Checksum": f"sha1 {b64(hashlib.sha1(b'other').digest())}"}
    assert (await patch(client, url, MiB, data[MiB : 2 * MiB], wrong)).status_code == 460
    assert (await get_row(app, _id(url))).multipart == before
    key = app.state.store.key(_id(url))
    assert sorted(await s3_leftovers(app, _id(url))) == [key, before["tail_key"]]  # the upload, its tail
    right = {"Upload-Checksum": f"sha1 {b64(hashlib.sha1(data[MiB : 2 * MiB]).digest())}"}
    assert (await patch(client, url, MiB, data[MiB : 2 * MiB], right)).status_code == 204
    assert len([k for k in await s3_leftovers(app, _id(url)) if k.startswith(f"{key}.tail-")]) == 1
    assert (await patch(client, url, 2 * MiB, data[2 * MiB :])).status_code == 204
    assert (await client.get(url)).content == data


async def test_termination_aborts_the_multipart_upload_and_deletes_the_tail(client, app):
    url = await new_upload(client, 20 * MiB)
    assert (await patch(client, url, 0, os.urandom(6 * MiB))).status_code == 204  # a part and a tail
    row = await get_row(app, _id(url))
    assert len(row.multipart["parts"]) == 1 and row.multipart["tail"] == 0
    assert (await patch(client, url, 6 * MiB, os.urandom(MiB))).status_code == 204
    assert len(await s3_leftovers(app, _id(url))) == 2  # the open multipart upload and the tail
    assert (await client.delete(url, headers=TUS)).status_code == 204
    assert await s3_leftovers(app, _id(url)) == []


async def test_expiry_aborts_the_multipart_upload_and_deletes_the_tail(settings):
    async with open_app(settings, upload_sweep_seconds=0.05) as (app, client):
        url = await new_upload(client, 20 * MiB)
        assert (await patch(client, url, 0, os.urandom(5 * MiB + 3))).status_code == 204
        assert len(await s3_leftovers(app, _id(url))) == 1  # the open multipart upload
        assert (await patch(client, url, 5 * MiB + 3, b"tail")).status_code == 204
        assert len(await s3_leftovers(app, _id(url))) == 2
        await set_row(app, _id(url), expires_at=utcnow() - timedelta(seconds=1))

        async def gone() -> bool:
            return await get_row(app, _id(url)) is None

        await poll(gone)
        assert await s3_leftovers(app, _id(url)) == []


async def test_a_crash_between_completing_the_object_and_committing_is_repaired_at_start_up(settings):
    data = os.urandom(6 * MiB)
    async with open_app(settings) as (app, client):
        url = await new_upload(client, len(data))
        assert (await patch(client, url, 0, data)).status_code == 204
        # As the row stood when the process died: every part named, offset == length, not complete.
        gone = {"upload_id": "completed-already", "parts": [{"number": 1, "etag": '"x"', "size": len(data)}]}
        await set_row(app, _id(url), state="uploading", completed_at=None, sha256=None, multipart=gone)
    async with open_app(settings) as (app, client):
        row = await get_row(app, _id(url))
        assert row.state == "complete" and row.multipart is None
        assert (await client.get(url)).content == data
        assert await poll(lambda: _sha256(client, _id(url))) == hashlib.sha256(data).hexdigest()


async def _held_open(client, url: str, first: bytes, release: asyncio.Event):
    async def body():
        yield first
        await release.wait()
        yield b"more"

    return asyncio.create_task(patch(client, url, 0, body()))


@pytest.mark.parametrize("noticed", ["at-the-end", "by-the-heartbeat"])
async def test_a_patch_that_loses_its_lock_leaves_no_tail_object(settings, noticed):
    # A heartbeat every 0.1 s notices the theft mid-body; a long lease leaves it to the final UPDATE.
    lease = 0.3 if noticed == "by-the-heartbeat" else 60.0
    async with open_app(settings, lease_seconds=lease) as (app, client):
        url = await new_upload(client, 20 * MiB)
        release = asyncio.Event()
        holder = await _held_open(client, url, os.urandom(MiB), release)

        async def locked() -> bool:
            row = await get_row(app, _id(url))
            return row is not None and row.lock_token is not None

        await poll(locked)
        await set_row(app, _id(url), lock_token="another-replica", lock_expires_at=utcnow() + timedelta(minutes=5))
        if noticed == "by-the-heartbeat":
            await asyncio.sleep(lease)
        release.set()
        assert (await holder).status_code == 423
        row = await get_row(app, _id(url))
        assert row.offset == 0 and row.multipart["tail_key"] is None
        assert await s3_leftovers(app, _id(url)) == [app.state.store.key(_id(url))]  # the open upload only


async def test_a_multipart_upload_whose_row_was_never_committed_is_aborted(client, app, monkeypatch):
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.models import File

    commit = AsyncSession.commit

    async def failing_commit(self):
        if any(isinstance(obj, File) and obj.multipart for obj in self.sync_session.identity_map.values()):
            raise ConnectionResetError("the database went away")
        await commit(self)

    monkeypatch.setattr(AsyncSession, "commit", failing_commit)
    with pytest.raises(ConnectionResetError):
        await client.post("/files", headers={**TUS, "Upload-Length": str(10 * MiB)})
    monkeypatch.setattr(AsyncSession, "commit", commit)
    store = app.state.store
    uploads = await store.s3.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert uploads.get("Uploads", []) == []


def _requests(operation: str) -> float:
    return REGISTRY.get_sample_value("tsm_object_store_requests_total", {"operation": operation}) or 0


async def test_a_final_is_copied_inside_s3_and_leaves_one_object_and_no_partials(client, app):
    pieces = [os.urandom(12 * MiB + 1), os.urandom(3 * MiB), os.urandom(9 * MiB)]
    urls = []
    for piece in pieces:
        url = await new_upload(client, len(piece), **{"Upload-Concat": "partial"})
        assert (await patch(client, url, 0, piece)).status_code == 204
        urls.append(url)
    copies, sent = _requests("upload_part_copy"), _requests("upload_part")
    response = await client.post("/files", headers={**TUS, "Upload-Concat": "final;" + " ".join(urls)})
    assert response.status_code == 201, response.text
    final = _id(response.headers["location"])
    # The first partial and the last 7 MiB are copied by S3; 3 MiB + 2 MiB travel as one part.
    assert _requests("upload_part_copy") - copies == 2 and _requests("upload_part") - sent == 1
    whole = b"".join(pieces)
    assert (await client.get(f"/files/{final}")).content == whole
    assert await poll(lambda: _sha256(client, final)) == hashlib.sha256(whole).hexdigest()
    assert await s3_leftovers(app, final) == [app.state.store.key(final)]
    for url in urls:
        assert await s3_leftovers(app, _id(url)) == []

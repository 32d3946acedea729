"""tus 1.0.0 conformance: one test per protocol rule, named after the rule (both databases,
both byte stores: the local directory and S3)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from app.models import utcnow
from app.services.files.storage import file_path
from tests.helpers.apps import open_app
from tests.helpers.tus import (
    OCTET,
    TUS,
    b64,
    create,
    get_row,
    key_headers,
    new_upload,
    patch,
    poll,
    set_row,
    stored,
    upload,
)

pytestmark = pytest.mark.parametrize("store", ["local", "s3"], indirect=True)


def _id(url: str) -> str:
    return url.rsplit("/", 1)[1]


# --- core protocol ---------------------------------------------------------------------------


async def test_options_advertises_version_extensions_max_size_and_checksum_algorithms(client, settings):
    response = await client.options("/files")
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    extensions = set(response.headers["tus-extension"].split(","))
    assert {"creation", "creation-with-upload", "creation-defer-length", "termination", "checksum", "expiration"} <= (
        extensions
    )
    assert response.headers["tus-max-size"] == str(settings.max_upload_bytes)
    assert set(response.headers["tus-checksum-algorithm"].split(",")) == {"sha1", "sha256", "md5"}


async def test_head_reports_offset_length_and_cache_control_no_store(client):
    url = await new_upload(client, 10)
    assert (await patch(client, url, 0, b"abcd")).status_code == 204
    response = await client.head(url, headers=TUS)
    assert response.status_code == 200
    assert response.headers["upload-offset"] == "4"
    assert response.headers["upload-length"] == "10"
    assert response.headers["cache-control"] == "no-store"


async def test_patch_needs_offset_octet_stream_content_type_else_415(client):
    url = await new_upload(client, 10)
    response = await client.patch(
        url, headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"}, content=b"abc"
    )
    assert response.status_code == 415
    assert (await client.head(url, headers=TUS)).headers["upload-offset"] == "0"


async def test_patch_with_offset_mismatch_is_409(client):
    url = await new_upload(client, 10)
    assert (await patch(client, url, 0, b"abc")).status_code == 204
    response = await patch(client, url, 1, b"xyz")
    assert response.status_code == 409
    assert response.headers["upload-offset"] == "3"
    assert response.json()["current_offset"] == 3


async def test_patch_answers_204_with_the_new_offset(client, settings, app):
    before = REGISTRY.get_sample_value("tsm_bytes_uploaded_total") or 0
    url = await new_upload(client, 6)
    response = await patch(client, url, 0, b"abc")
    assert response.status_code == 204 and response.headers["upload-offset"] == "3"
    response = await patch(client, url, 3, b"def")
    assert response.status_code == 204 and response.headers["upload-offset"] == "6"
    assert await stored(app, _id(url)) == b"abcdef"
    assert REGISTRY.get_sample_value("tsm_bytes_uploaded_total") - before == 6


async def test_tus_resumable_is_on_every_response(client):
    url = await new_upload(client, 3)
    responses = [
        await client.options("/files"),
        await create(client, 3),
        await client.head(url, headers=TUS),
        await patch(client, url, 0, b"abc"),
        await patch(client, url, 9, b"x"),  # 409
        await client.head("/files/00000000-0000-0000-0000-000000000000", headers=TUS),  # 404
        await client.patch(url, headers={"Tus-Resumable": "0.2.2"}),  # 412
        await patch(client, url, 0, b"", {"Upload-Offset": "-1"}),  # 400
        await client.delete(url, headers=TUS),
        await client.head(url, headers=TUS),  # 410
    ]
    for response in responses:
        assert response.headers.get("tus-resumable") == "1.0.0", (response.request.method, response.status_code)


async def test_unsupported_version_is_412_with_tus_version_and_changes_nothing(client, settings, app):
    url = await new_upload(client, 3)
    response = await client.patch(
        url, headers={**OCTET, "Tus-Resumable": "0.2.2", "Upload-Offset": "0"}, content=b"abc"
    )
    assert response.status_code == 412
    assert response.headers["tus-version"] == "1.0.0"
    assert (await client.head(url, headers=TUS)).headers["upload-offset"] == "0"
    assert await stored(app, _id(url)) == b""
    created = await client.post("/files", headers={"Tus-Resumable": "2.0.0", "Upload-Length": "3"})
    assert created.status_code == 412
    assert (await client.get("/files")).json()["items"][0]["id"] == _id(url)  # no second upload


async def test_missing_tus_resumable_on_a_tus_request_is_412(client):
    url = await new_upload(client, 3)
    response = await client.patch(url, headers={"Upload-Offset": "0", "Content-Type": OCTET["Content-Type"]})
    assert response.status_code == 412


async def test_x_http_method_override_stands_in_for_patch_head_and_delete(client, settings, app):
    url = await new_upload(client, 3)
    response = await client.post(
        url, headers={**OCTET, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}, content=b"abc"
    )
    assert response.status_code == 204 and response.headers["upload-offset"] == "3"
    response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert response.status_code == 200 and response.headers["upload-offset"] == "3"
    response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 204
    assert await stored(app, _id(url)) is None
    response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "PUT"})
    assert response.status_code == 405  # routed as PUT, which no route takes
    assert response.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH"


async def test_non_integer_or_negative_offsets_and_lengths_are_400(client):
    url = await new_upload(client, 10)
    for value in ["-1", "abc", "1.5", "+3", "", "1 2", "99999999999999999999999"]:
        response = await patch(client, url, 0, b"abc", {"Upload-Offset": value})
        assert response.status_code == 400, (value, response.text)
        assert "Upload-Offset" in response.json()["detail"]
        response = await create(client, None, Upload_Length=value)
        assert response.status_code == 400, value
        response = await patch(client, url, 0, b"abc", {"Upload-Length": value})
        assert response.status_code == 400, value
    assert (await client.head(url, headers=TUS)).headers["upload-offset"] == "0"


# --- creation, creation-with-upload, creation-defer-length -----------------------------------


async def test_creation_answers_201_with_location_and_an_empty_file(client, settings, app):
    response = await create(client, 5)
    assert response.status_code == 201
    location = response.headers["location"]
    assert location.startswith("http://tsm.test/files/")
    assert response.headers["upload-offset"] == "0"
    assert await stored(app, _id(location)) == b""


async def test_creation_over_max_size_is_413(settings):
    async with open_app(settings, max_upload_bytes=100) as (_app, client):
        response = await create(client, 101)
        assert response.status_code == 413
        assert "100" in response.json()["detail"]
        assert response.headers["tus-resumable"] == "1.0.0"
        assert (await create(client, 100)).status_code == 201


async def test_creation_parses_and_echoes_upload_metadata(client):
    header = f"filename {b64('report 2024.csv')},filetype {b64('text/csv')},is_confidential"
    url = await new_upload(client, 3, metadata=header)
    response = await client.head(url, headers=TUS)
    assert response.headers["upload-metadata"] == header
    info = (await client.get(f"{url}/info")).json()
    assert info["filename"] == "report 2024.csv"
    assert info["content_type"] == "text/csv"
    assert info["metadata"] == {"filename": "report 2024.csv", "filetype": "text/csv", "is_confidential": None}


async def test_creation_accepts_an_empty_upload_metadata_header(client):
    response = await create(client, 3, metadata="")
    assert response.status_code == 201
    assert "upload-metadata" not in (await client.head(response.headers["location"], headers=TUS)).headers


async def test_creation_needs_exactly_one_of_length_and_defer_length(client):
    assert (await create(client, None)).status_code == 400
    assert (await create(client, 5, Upload_Defer_Length="1")).status_code == 400
    assert (await create(client, None, Upload_Defer_Length="2")).status_code == 400


async def test_creation_with_upload_stores_the_first_chunk(client, settings, app):
    response = await client.post("/files", headers={**OCTET, "Upload-Length": "6"}, content=b"abc")
    assert response.status_code == 201
    assert response.headers["upload-offset"] == "3"
    url = response.headers["location"]
    assert (await patch(client, url, 3, b"def")).status_code == 204
    assert await stored(app, _id(url)) == b"abcdef"


async def test_creation_defer_length_then_upload_length_in_a_patch(client, settings, app):
    url = await new_upload(client, None, Upload_Defer_Length="1")
    head = await client.head(url, headers=TUS)
    assert head.headers["upload-defer-length"] == "1" and "upload-length" not in head.headers
    assert (await patch(client, url, 0, b"abc")).status_code == 204
    response = await patch(client, url, 3, b"de", {"Upload-Length": "5"})
    assert response.status_code == 204
    assert response.headers["upload-length"] == "5"
    info = (await client.get(f"{url}/info")).json()
    assert info["state"] == "complete" and info["length"] == 5
    assert await stored(app, _id(url)) == b"abcde"


async def test_upload_length_cannot_change_once_known(client):
    url = await new_upload(client, 5)
    response = await patch(client, url, 0, b"ab", {"Upload-Length": "7"})
    assert response.status_code == 400
    assert (await client.head(url, headers=TUS)).headers["upload-offset"] == "0"


async def test_zero_length_upload_is_complete_at_once(client):
    url = await new_upload(client, 0)
    assert (await client.get(f"{url}/info")).json()["state"] == "complete"
    response = await client.get(url)
    assert response.status_code == 200 and response.content == b""


# --- termination -----------------------------------------------------------------------------


async def test_termination_answers_204_removes_bytes_and_later_requests_get_404_or_410(client, settings, app):
    url = await new_upload(client, 10)
    await patch(client, url, 0, b"abc")
    assert await stored(app, _id(url)) == b"abc"
    assert (await client.delete(url, headers=TUS)).status_code == 204
    assert await stored(app, _id(url)) is None
    assert (await client.head(url, headers=TUS)).status_code in (404, 410)
    assert (await patch(client, url, 3, b"def")).status_code in (404, 410)
    assert (await client.get(f"{url}/info")).status_code == 404
    assert (await client.get(url)).status_code == 404
    assert (await client.delete(url, headers=TUS)).status_code in (404, 410)


# --- checksum --------------------------------------------------------------------------------


async def test_checksum_with_a_supported_algorithm_is_accepted(client):
    for algorithm in ("sha1", "sha256", "md5"):
        url = await new_upload(client, 3)
        digest = base64.b64encode(hashlib.new(algorithm, b"abc").digest()).decode()
        response = await patch(client, url, 0, b"abc", {"Upload-Checksum": f"{algorithm} {digest}"})
        assert response.status_code == 204 and response.headers["upload-offset"] == "3", algorithm


async def test_checksum_with_an_unsupported_algorithm_is_400(client):
    url = await new_upload(client, 3)
    response = await patch(client, url, 0, b"abc", {"Upload-Checksum": f"crc32 {b64(b'1234')}"})
    assert response.status_code == 400
    assert "sha1" in response.json()["detail"]
    response = await patch(client, url, 0, b"abc", {"Upload-Checksum": "sha1 not*base64"})
    assert response.status_code == 400


async def test_checksum_mismatch_is_460_and_the_chunk_is_discarded(client, settings, app):
    url = await new_upload(client, 6)
    await patch(client, url, 0, b"abc")
    wrong = base64.b64encode(hashlib.sha1(b"XXX").digest()).decode()
    response = await patch(client, url, 3, b"def", {"Upload-Checksum": f"sha1 {wrong}"})
    assert response.status_code == 460
    assert response.headers["tus-resumable"] == "1.0.0"
    assert (await client.head(url, headers=TUS)).headers["upload-offset"] == "3"
    assert await stored(app, _id(url)) == b"abc"
    right = base64.b64encode(hashlib.sha1(b"def").digest()).decode()
    response = await patch(client, url, 3, b"def", {"Upload-Checksum": f"sha1 {right}"})
    assert response.status_code == 204
    assert await stored(app, _id(url)) == b"abcdef"


# --- expiration ------------------------------------------------------------------------------


async def test_expiration_upload_expires_on_creation_patch_and_head_until_complete(client, settings):
    response = await create(client, 6)
    url = response.headers["location"]
    assert "upload-expires" in response.headers
    assert "GMT" in (await patch(client, url, 0, b"abc")).headers["upload-expires"]
    assert "upload-expires" in (await client.head(url, headers=TUS)).headers
    done = await patch(client, url, 3, b"def")
    assert "upload-expires" not in done.headers
    info = (await client.get(f"{url}/info")).json()
    assert info["expires_at"] is None


async def test_expired_upload_answers_410_before_the_sweeper_runs(client, app):
    url = await new_upload(client, 6)
    await set_row(app, _id(url), expires_at=utcnow() - timedelta(seconds=1))
    assert (await client.head(url, headers=TUS)).status_code == 410
    assert (await patch(client, url, 0, b"abc")).status_code == 410


async def test_expiry_sweeper_deletes_expired_unfinished_uploads_and_their_rows(settings):
    async with open_app(settings, upload_sweep_seconds=0.05) as (app, client):
        expired = await new_upload(client, 6)
        await patch(client, expired, 0, b"abc")
        alive = await new_upload(client, 6)
        finished = await upload(client, b"done")
        assert await stored(app, _id(expired)) == b"abc"  # before it expires: the sweeper may be quick
        await set_row(app, _id(expired), expires_at=utcnow() - timedelta(seconds=1))

        async def gone() -> bool:
            return await get_row(app, _id(expired)) is None

        await poll(gone)
        assert await stored(app, _id(expired)) is None
        assert (await client.head(expired, headers=TUS)).status_code == 404
        assert (await client.head(alive, headers=TUS)).status_code == 200
        assert (await client.get(f"/files/{finished}")).content == b"done"


# --- limits ----------------------------------------------------------------------------------


async def test_body_past_upload_length_is_413_and_changes_nothing(client, settings):
    url = await new_upload(client, 4)
    response = await patch(client, url, 0, b"abcdef")
    assert response.status_code == 413
    assert (await client.head(url, headers=TUS)).headers["upload-offset"] == "0"


async def test_chunked_body_past_upload_length_is_413_keeping_the_bytes_before_the_limit(client, settings, app):
    url = await new_upload(client, 4)

    async def body():
        yield b"ab"
        yield b"cdef"

    response = await patch(client, url, 0, body())
    assert response.status_code == 413
    assert (await client.head(url, headers=TUS)).headers["upload-offset"] == "2"
    assert await stored(app, _id(url)) == b"ab"


async def test_body_larger_than_max_chunk_bytes_is_413(settings):
    async with open_app(settings, max_chunk_bytes=4) as (_app, client):
        url = await new_upload(client, 10)
        response = await patch(client, url, 0, b"abcdef")
        assert response.status_code == 413
        assert (await patch(client, url, 0, b"abcd")).status_code == 204


async def test_open_uploads_per_owner_limit_is_429(settings):
    async with open_app(settings, max_open_uploads_per_owner=2) as (app, client):
        await new_upload(client, 5)
        await new_upload(client, 5)
        response = await create(client, 5)
        assert response.status_code == 429
        assert "limit 2" in response.json()["detail"]
        other = await key_headers(app, "bob")
        assert (await client.post("/files", headers={**TUS, "Upload-Length": "5", **other})).status_code == 201


async def test_storage_quota_per_owner_is_413(settings):
    async with open_app(settings, max_storage_bytes_per_owner=10) as (_app, client):
        await new_upload(client, 6)
        response = await create(client, 5)
        assert response.status_code == 413
        assert "quota" in response.json()["detail"]
        assert (await create(client, 4)).status_code == 201


# --- one PATCH at a time, durability ---------------------------------------------------------


async def test_concurrent_patch_gets_423_and_bytes_never_interleave(client, app, settings):
    url = await new_upload(client, 6 * 1024 * 1024)
    first_part = bytes(range(256)) * (5 * 4096)  # 5 MiB: written and synced while the PATCH is held open
    release = asyncio.Event()

    async def slow_body():
        yield first_part
        await release.wait()
        yield b"\x01" * (1024 * 1024)

    holder = asyncio.create_task(patch(client, url, 0, slow_body()))

    async def locked() -> bool:
        row = await get_row(app, _id(url))
        return row is not None and row.lock_token is not None

    await poll(locked)
    intruder = await patch(client, url, 0, b"\x02" * 1024)
    assert intruder.status_code in (409, 423)
    assert intruder.headers["tus-resumable"] == "1.0.0"

    # The heartbeat makes durable progress visible while the PATCH is still open.
    async def progressed() -> bool:
        return (await client.head(url, headers=TUS)).headers["upload-offset"] == str(len(first_part))

    await poll(progressed)
    release.set()
    response = await holder
    assert response.status_code == 204
    assert await stored(app, _id(url)) == first_part + b"\x01" * (1024 * 1024)


async def test_lock_held_by_another_replica_is_honoured_until_its_lease_expires(client, app, settings):
    url = await new_upload(client, 3)
    await set_row(app, _id(url), lock_token="another-replica", lock_expires_at=utcnow() + timedelta(minutes=5))
    assert (await patch(client, url, 0, b"abc")).status_code == 423
    assert (await client.delete(url, headers=TUS)).status_code == 423
    await set_row(app, _id(url), lock_expires_at=utcnow() - timedelta(seconds=1))
    assert (await patch(client, url, 0, b"abc")).status_code == 204
    assert await stored(app, _id(url)) == b"abc"


@pytest.mark.local_only
async def test_bytes_past_the_offset_left_by_a_crashed_writer_are_trimmed_before_appending(client, settings, app):
    url = await new_upload(client, 6)
    await patch(client, url, 0, b"abc")
    with file_path(settings, _id(url)).open("ab") as handle:
        handle.write(b"GARBAGE")  # written by a writer that died before committing its offset
    assert (await client.head(url, headers=TUS)).headers["upload-offset"] == "3"
    assert (await patch(client, url, 3, b"def")).status_code == 204
    assert await stored(app, _id(url)) == b"abcdef"


@pytest.mark.local_only
async def test_startup_reconciles_offsets_with_file_sizes(settings):
    async with open_app(settings) as (_app, client):
        longer = await new_upload(client, 10)
        await patch(client, longer, 0, b"abc")
        shorter = await new_upload(client, 10)
        await patch(client, shorter, 0, b"abcdef")
    with file_path(settings, _id(longer)).open("ab") as handle:
        handle.write(b"unacknowledged")
    with file_path(settings, _id(shorter)).open("r+b") as handle:
        handle.truncate(4)  # bytes lost in a crash
    async with open_app(settings) as (app, client):
        assert await stored(app, _id(longer)) == b"abc"
        assert (await client.head(longer, headers=TUS)).headers["upload-offset"] == "3"
        assert (await client.head(shorter, headers=TUS)).headers["upload-offset"] == "4"
        assert (await patch(client, shorter, 4, b"efghij")).status_code == 204
        assert await stored(app, _id(shorter)) == b"abcdefghij"


async def test_startup_hashes_finished_uploads_left_without_a_sha256(settings):
    async with open_app(settings) as (app, client):
        file_id = await upload(client, b"hash me")
        await poll(lambda: _sha256(client, file_id))
        await set_row(app, file_id, sha256=None)  # as if the process stopped before hashing
    async with open_app(settings) as (_app, client):
        assert await poll(lambda: _sha256(client, file_id)) == hashlib.sha256(b"hash me").hexdigest()


async def _sha256(client, file_id: str) -> str | None:
    return (await client.get(f"/files/{file_id}/info")).json()["sha256"]


async def test_patch_on_a_complete_upload_accepts_nothing_more(client):
    url = await new_upload(client, 3)
    await patch(client, url, 0, b"abc")
    assert (await patch(client, url, 3, b"")).status_code == 204
    assert (await patch(client, url, 3, b"d")).status_code == 413
    assert (await patch(client, url, 0, b"abc")).status_code == 409


async def test_complete_upload_gets_its_sha256(client, app):
    file_id = await upload(client, b"hello world")

    async def hashed() -> str | None:
        return (await client.get(f"/files/{file_id}/info")).json()["sha256"]

    assert await poll(hashed) == hashlib.sha256(b"hello world").hexdigest()


# --- owners and hostile input ----------------------------------------------------------------


async def test_another_owners_upload_is_404(client, app):
    alice, bob = await key_headers(app, "alice"), await key_headers(app, "bob")
    url = await new_upload(client, 3, Authorization=alice["Authorization"])
    assert (await client.head(url, headers={**TUS, **bob})).status_code == 404
    assert (await patch(client, url, 0, b"abc", bob)).status_code == 404
    assert (await client.delete(url, headers={**TUS, **bob})).status_code == 404
    assert (await client.head(url, headers={**TUS, **alice})).status_code == 200
    admin = await key_headers(app, "root", "admin")
    assert (await client.head(url, headers={**TUS, **admin})).status_code == 200


async def test_hostile_metadata_huge_header_is_400(client):
    response = await create(client, 3, metadata=f"filename {b64('x' * 20000)}")
    assert response.status_code == 400
    assert "Upload-Metadata" in response.json()["detail"]


async def test_hostile_metadata_bad_base64_or_grammar_is_400(client):
    for header in ["filename !!!notbase64", "filename abc", "filename a b c", "a 1,a 2", "filename YQ==,,"]:
        response = await create(client, 3, metadata=header)
        assert response.status_code == 400, (header, response.text)
        assert response.json()["status"] == 400
    assert (await client.get("/files")).json()["items"] == []


@pytest.mark.local_only
async def test_hostile_metadata_dotdot_filenames_never_become_paths(client, settings):
    names = {"../../etc/passwd": "passwd", "..\\..\\boot.ini": "boot.ini", "/abs/path/x.txt": "x.txt", "..": None}
    made = []
    for name, shown in names.items():
        url = await new_upload(client, 3, metadata=f"filename {b64(name)}")
        made.append(_id(url))
        await patch(client, url, 0, b"abc")
        assert (await client.get(f"{url}/info")).json()["filename"] == shown
        download = await client.get(url)
        assert download.content == b"abc"
        assert 'filename=".."' not in download.headers["content-disposition"]
    assert sorted(p.name for p in (settings.storage_dir / "files").iterdir()) == sorted(made)
    assert not (settings.storage_dir.parent / "etc").exists()


async def test_hostile_metadata_nul_bytes_are_400(client):
    nul, not_utf8 = b64(b"evil\x00.txt"), b64(b"\xff\xfe")
    response = await create(client, 3, metadata=f"filename {nul}")
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]
    response = await create(client, 3, metadata=f"filename {not_utf8}")
    assert response.status_code == 400

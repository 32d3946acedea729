"""Downloads: HTTP Range (RFC 9110 §14), validators and conditional requests (both databases, both byte
stores: the local directory and S3)."""

from __future__ import annotations

import email
import email.policy
import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from prometheus_client import REGISTRY

from app.models import File, utcnow
from app.services.files.storage import file_path
from tests.helpers.apps import open_app
from tests.helpers.tus import TUS, key_headers, upload

pytestmark = pytest.mark.parametrize("store", ["local", "s3"], indirect=True)

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable enough
SIZE = len(DATA)


@pytest.fixture
async def file_id(client):
    return await upload(client, DATA, "résumé 2024.bin")


async def _get(client, file_id, **headers):
    return await client.get(f"/files/{file_id}", headers={k.replace("_", "-"): v for k, v in headers.items()})


async def test_full_get_streams_the_file_with_validators(client, file_id):
    response = await _get(client, file_id)
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == str(SIZE)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"].startswith('"') and not response.headers["etag"].startswith("W/")
    assert response.headers["last-modified"].endswith("GMT")


async def test_content_disposition_carries_the_original_name_in_rfc_6266_encoding(client, file_id):
    value = (await _get(client, file_id)).headers["content-disposition"]
    assert value.startswith("attachment; ")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%202024.bin" in value
    assert 'filename="r_sum_ 2024.bin"' in value


async def test_range_first_byte(client, file_id):
    response = await _get(client, file_id, Range="bytes=0-0")
    assert response.status_code == 206
    assert response.content == DATA[:1]
    assert response.headers["content-range"] == f"bytes 0-0/{SIZE}"
    assert response.headers["content-length"] == "1"


async def test_range_last_byte(client, file_id):
    for header in (f"bytes={SIZE - 1}-{SIZE - 1}", "bytes=-1", f"bytes={SIZE - 1}-"):
        response = await _get(client, file_id, Range=header)
        assert response.status_code == 206, header
        assert response.content == DATA[-1:]
        assert response.headers["content-range"] == f"bytes {SIZE - 1}-{SIZE - 1}/{SIZE}"


async def test_range_open_ended_resumes_from_an_offset(client, file_id):
    response = await _get(client, file_id, Range="bytes=1000-")
    assert response.status_code == 206
    assert response.content == DATA[1000:]
    assert response.headers["content-range"] == f"bytes 1000-{SIZE - 1}/{SIZE}"


async def test_range_end_beyond_the_file_is_clipped(client, file_id):
    response = await _get(client, file_id, Range=f"bytes=10000-{SIZE * 10}")
    assert response.status_code == 206
    assert response.content == DATA[10000:]
    assert response.headers["content-range"] == f"bytes 10000-{SIZE - 1}/{SIZE}"


async def test_range_starting_beyond_the_end_is_416_with_the_size(client, file_id):
    response = await _get(client, file_id, Range=f"bytes={SIZE}-")
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert response.json()["status"] == 416
    response = await _get(client, file_id, Range="bytes=-0")
    assert response.status_code == 416


async def test_suffix_range_longer_than_the_file_is_the_whole_file(client, file_id):
    response = await _get(client, file_id, Range=f"bytes=-{SIZE * 3}")
    assert response.status_code == 206
    assert response.content == DATA
    assert response.headers["content-range"] == f"bytes 0-{SIZE - 1}/{SIZE}"


def _parts(response):
    message = email.message_from_bytes(
        b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n" + response.content,
        policy=email.policy.HTTP,
    )
    return [(part["Content-Range"], part.get_payload(decode=True)) for part in message.iter_parts()]


async def test_multiple_ranges_are_206_multipart_byteranges(client, file_id):
    response = await _get(client, file_id, Range="bytes=0-9, 500-599,-5")
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(response.headers["content-length"]) == len(response.content)
    assert _parts(response) == [
        (f"bytes 0-9/{SIZE}", DATA[0:10]),
        (f"bytes 500-599/{SIZE}", DATA[500:600]),
        (f"bytes {SIZE - 5}-{SIZE - 1}/{SIZE}", DATA[-5:]),
    ]


async def test_overlapping_ranges_are_coalesced(client, file_id):
    response = await _get(client, file_id, Range="bytes=0-99,50-149,150-199")
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 0-199/{SIZE}"
    assert response.content == DATA[:200]


async def test_unsatisfiable_ranges_among_satisfiable_ones_are_dropped(client, file_id):
    response = await _get(client, file_id, Range=f"bytes=0-1,{SIZE + 5}-{SIZE + 9}")
    assert response.status_code == 206
    assert response.content == DATA[:2]


async def test_invalid_range_syntax_is_ignored_and_the_whole_file_sent(client, file_id):
    for header in ["bytes=5-1", "bytes=abc", "items=0-5", "bytes=", "bytes=1-2,,3-4", "bytes=--1"]:
        response = await _get(client, file_id, Range=header)
        assert response.status_code == 200, header
        assert response.content == DATA


async def test_if_range_with_the_current_etag_honours_the_range(client, file_id):
    etag = (await _get(client, file_id)).headers["etag"]
    response = await _get(client, file_id, Range="bytes=100-", If_Range=etag)
    assert response.status_code == 206
    assert response.content == DATA[100:]


async def test_if_range_with_a_stale_validator_sends_the_full_file(client, file_id):
    for stale in ('"stale-etag"', 'W/"weak"', "Mon, 01 Jan 2001 00:00:00 GMT", "not a date"):
        response = await _get(client, file_id, Range="bytes=100-", If_Range=stale)
        assert response.status_code == 200, stale
        assert response.content == DATA


async def test_if_range_with_the_last_modified_date_honours_the_range(client, file_id):
    last_modified = (await _get(client, file_id)).headers["last-modified"]
    response = await _get(client, file_id, Range="bytes=100-", If_Range=last_modified)
    assert response.status_code == 206


async def test_if_none_match_with_the_etag_is_304(client, file_id):
    etag = (await _get(client, file_id)).headers["etag"]
    for header in (etag, f'"other", {etag}', "*", f"W/{etag}"):
        response = await _get(client, file_id, If_None_Match=header)
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert (await _get(client, file_id, If_None_Match='"other"')).status_code == 200


async def test_if_modified_since_is_304_when_not_modified(client, file_id):
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    assert (await _get(client, file_id, If_Modified_Since=later)).status_code == 304
    earlier = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await _get(client, file_id, If_Modified_Since=earlier)).status_code == 200


async def test_if_match_and_if_unmodified_since_failures_are_412(client, file_id):
    assert (await _get(client, file_id, If_Match='"nope"')).status_code == 412
    assert (await _get(client, file_id, If_Unmodified_Since="Mon, 01 Jan 2001 00:00:00 GMT")).status_code == 412
    etag = (await _get(client, file_id)).headers["etag"]
    assert (await _get(client, file_id, If_Match=etag)).status_code == 200


@pytest.mark.local_only
async def test_etag_changes_when_the_bytes_change(client, settings, file_id):
    before = (await _get(client, file_id)).headers["etag"]
    path = file_path(settings, file_id)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = (await _get(client, file_id)).headers["etag"]
    assert after != before
    response = await _get(client, file_id, Range="bytes=0-", If_Range=before)
    assert response.status_code == 200


async def test_head_on_a_download_has_the_headers_and_no_body(client, file_id):
    response = await client.head(f"/files/{file_id}")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(SIZE)
    assert response.headers["accept-ranges"] == "bytes"
    assert "etag" in response.headers and "content-disposition" in response.headers
    assert response.content == b""
    ranged = await client.head(f"/files/{file_id}", headers={"Range": "bytes=0-0"})
    assert ranged.status_code == 200  # RFC 9110: Range is only defined for GET


async def _server_file(app, settings, state: str, data: bytes = b"") -> str:
    now = utcnow()
    async with app.state.database.sessionmaker.begin() as session:
        row = File(
            owner="local",
            origin="export",
            filename="out.csv",
            content_type="text/csv",
            state=state,
            length=len(data),
            offset=len(data),
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
        file_id = row.id
    store = app.state.store
    if store.local:
        file_path(settings, file_id).write_bytes(data)
    else:  # a task's file lives in the configured store like an upload
        await store.s3.put_object(Bucket=store.bucket, Key=store.key(file_id), Body=data)
    return file_id


async def test_a_finished_export_downloads_like_an_upload(client, app, settings):
    file_id = await _server_file(app, settings, "complete", b"a,b\n1,2\n")
    response = await _get(client, file_id)
    assert response.status_code == 200
    assert response.content == b"a,b\n1,2\n"
    assert response.headers["content-type"].startswith("text/csv")
    assert (await _get(client, file_id, Range="bytes=4-")).content == b"1,2\n"


async def test_a_file_that_is_not_complete_is_409(client, app, settings):
    file_id = await _server_file(app, settings, "writing", b"a,b\n")
    response = await _get(client, file_id)
    assert response.status_code == 409
    assert "not complete" in response.json()["detail"]
    url = f"/files/{file_id}"
    unfinished = await client.post("/files", headers={**TUS, "Upload-Length": "5"})
    assert (await client.get(unfinished.headers["location"])).status_code == 409
    assert (await client.delete(url, headers=TUS)).status_code == 409


async def test_missing_foreign_or_deleted_files_are_404(client, app, file_id):
    assert (await _get(client, "00000000-0000-0000-0000-000000000000")).status_code == 404
    assert (await _get(client, "../../etc/passwd")).status_code == 404
    bob = await key_headers(app, "bob")
    assert (await client.get(f"/files/{file_id}", headers=bob)).status_code == 404
    assert (await client.delete(f"/files/{file_id}", headers=TUS)).status_code == 204
    assert (await _get(client, file_id)).status_code == 404


async def test_empty_file_downloads_and_any_range_is_416(client):
    file_id = await upload(client, b"")
    response = await _get(client, file_id)
    assert response.status_code == 200 and response.content == b""
    response = await _get(client, file_id, Range="bytes=0-")
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */0"


async def test_bytes_downloaded_metric_counts_the_body(client, file_id):
    before = REGISTRY.get_sample_value("tsm_bytes_downloaded_total") or 0
    await _get(client, file_id, Range="bytes=0-99")
    assert REGISTRY.get_sample_value("tsm_bytes_downloaded_total") - before == 100


async def test_presigned_redirects_send_one_full_or_one_range_get_to_the_store(settings, store):
    async with open_app(settings, s3_presigned_redirects=True) as (_app, client):
        file_id = await upload(client, DATA, "résumé 2024.bin")
        streamed = await _get(client, file_id, range="bytes=0-0,-1")  # several ranges: always streamed
        assert streamed.status_code == 206 and streamed.headers["content-type"].startswith("multipart/byteranges")
        head = await client.head(f"/files/{file_id}")  # HEAD: answered here, with the headers a GET has
        assert head.status_code == 200
        etag = head.headers["etag"]
        assert (await _get(client, file_id, if_none_match=etag)).status_code == 304

        full = await _get(client, file_id)
        ranged = await _get(client, file_id, range="bytes=100-199")
        if store == "local":  # nothing to presign: the service streams as ever
            assert full.status_code == 200 and full.content == DATA
            assert ranged.status_code == 206 and ranged.content == DATA[100:200]
            return
        assert full.status_code == ranged.status_code == 307
        assert full.headers["cache-control"] == "private, no-store" and not full.content
        async with httpx.AsyncClient() as direct:  # the store itself answers the presigned URL
            whole = await direct.get(full.headers["location"])
            assert whole.status_code == 200, whole.text
            assert whole.content == DATA
            assert whole.headers["content-disposition"] == head.headers["content-disposition"]
            part = await direct.get(ranged.headers["location"], headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == DATA[100:200]


async def test_presigned_redirects_are_off_by_default(client, file_id):
    response = await _get(client, file_id, range="bytes=0-9")
    assert response.status_code == 206 and response.content == DATA[:10]

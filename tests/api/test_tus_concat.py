"""tus concatenation: partial uploads, the final made of them, and this service's own rules
(owners, limits, what becomes of the partials), on both databases and both byte stores."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from datetime import timedelta

import pytest

from app.http.tus import MAX_CONCAT_PARTS
from app.models import utcnow
from tests.helpers.apps import open_app
from tests.helpers.imports import ImportEnv, import_env
from tests.helpers.tus import OCTET, TUS, b64, get_row, key_headers, new_upload, patch, poll, set_row, stored

__all__ = ["import_env"]  # the `env` fixture

pytestmark = pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
MiB = 1 << 20
BASE = "http://tsm.test"
SOME_ID = "0b5d9f0e-5c1a-4c4e-9a37-6f1e8c2d4b7a"


def _id(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def _partial(client, data: bytes, headers: dict[str, str] | None = None) -> str:
    """A finished partial upload of ``data``; returns its path URL."""
    response = await client.post(
        "/files", headers={**TUS, "Upload-Length": str(len(data)), "Upload-Concat": "partial", **(headers or {})}
    )
    assert response.status_code == 201, response.text
    url = response.headers["location"].removeprefix(BASE)
    if data:
        assert (await patch(client, url, 0, data, headers)).status_code == 204
    return url


async def _final(client, urls: list[str], headers: dict[str, str] | None = None, **extra: str):
    concat = "final;" + " ".join(urls)
    return await client.post("/files", headers={**TUS, "Upload-Concat": concat, **extra, **(headers or {})})


def _problem(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["tus-resumable"] == "1.0.0"
    return str(response.json()["detail"])


async def test_options_lists_the_concatenation_extension(client):
    response = await client.options("/files")
    assert "concatenation" in response.headers["tus-extension"].split(",")


@pytest.mark.parametrize(
    "sizes",
    [[3, 5], [7 * MiB + 3, 1, 2 * MiB, 5 * MiB]],
    ids=["2-parts", "4-parts-around-5MiB"],
)
async def test_a_final_is_the_byte_identical_concatenation_of_its_partials(client, app, sizes):
    pieces = [os.urandom(size) for size in sizes]
    urls = [await _partial(client, piece) for piece in pieces]
    whole = b"".join(pieces)
    # tus-js-client sends the absolute URLs Location gave; a path works as well.
    response = await _final(client, [BASE + urls[0], *urls[1:]], **{"Upload-Metadata": f"filename {b64('all.bin')}"})
    assert response.status_code == 201, response.text
    final = response.headers["location"].removeprefix(BASE)
    assert response.headers["upload-offset"] == response.headers["upload-length"] == str(len(whole))

    download = await client.get(final)
    assert download.status_code == 200 and download.content == whole
    assert "all.bin" in download.headers["content-disposition"]
    edge = sizes[0]
    ranged = await client.get(final, headers={"Range": f"bytes={edge - 2}-{edge + 1}"})
    assert ranged.status_code == 206 and ranged.content == whole[edge - 2 : edge + 2]
    assert await poll(lambda: _sha256(client, final)) == hashlib.sha256(whole).hexdigest()

    # The partials were consumed: their quota is the final's now, their bytes are gone.
    for url in urls:
        assert (await client.head(url, headers=TUS)).status_code == 410
        assert (await get_row(app, _id(url))).state == "deleted"
        assert await stored(app, _id(url)) is None


async def _sha256(client, url: str) -> str | None:
    return (await client.get(f"{url}/info")).json()["sha256"]


async def test_asking_for_the_same_final_again_answers_the_one_already_made(client, app):
    urls = [await _partial(client, b"ab"), await _partial(client, b"cd")]
    first = await _final(client, urls)
    again = await _final(client, [BASE + url for url in urls])
    assert first.status_code == again.status_code == 201
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["upload-offset"] == "4"
    assert "already concatenated" in _problem(await _final(client, urls[::-1]), 410)
    other = await key_headers(app, "mallory")
    assert _problem(await _final(client, urls, other), 404) == f"no upload with id {_id(urls[0])!r}"


async def test_head_reports_upload_concat_on_partials_and_finals(client):
    first = await _partial(client, b"abc")
    open_partial = await new_upload(client, 10, **{"Upload-Concat": "partial"})
    head = await client.head(open_partial, headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-concat"] == "partial"
    assert head.headers["upload-offset"] == "0" and head.headers["upload-length"] == "10"
    assert (await patch(client, open_partial, 0, b"0123456789")).status_code == 204

    final = (await _final(client, [first, open_partial])).headers["location"]
    head = await client.head(final, headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-concat"] == f"final;{BASE}{first} {BASE}{open_partial}"
    assert head.headers["upload-length"] == head.headers["upload-offset"] == "13"
    assert (await client.get(final)).content == b"abc0123456789"


async def test_an_unfinished_final_reports_its_length_but_no_offset(client, app):
    url = await _partial(client, b"xy")
    final = (await _final(client, [url])).headers["location"]
    await set_row(app, _id(final), state="uploading", offset=0)  # as while it is assembled
    head = await client.head(final, headers=TUS)
    assert head.headers["upload-length"] == "2" and "upload-offset" not in head.headers
    assert head.headers["upload-concat"].startswith("final;")


async def test_patch_on_a_final_upload_is_403(client):
    final = (await _final(client, [await _partial(client, b"abc")])).headers["location"]
    assert "final upload" in _problem(await patch(client, final, 3, b""), 403)
    assert "final upload" in _problem(await patch(client, final, 0, b"more"), 403)
    assert (await client.get(final)).content == b"abc"


async def test_a_partial_with_a_deferred_length_and_an_empty_partial_concatenate(client):
    deferred = await new_upload(client, None, **{"Upload-Defer-Length": "1", "Upload-Concat": "partial"})
    response = await patch(client, deferred, 0, b"tail", {"Upload-Length": "4"})
    assert response.status_code == 204
    empty = await _partial(client, b"")
    final = await _final(client, [empty, deferred, await _partial(client, b"!")])
    assert final.status_code == 201, final.text
    assert (await client.get(final.headers["location"])).content == b"tail!"


@pytest.mark.parametrize(
    ("concat", "words"),
    [
        ("final;", "names no partial"),
        ("final", "names no partial"),
        ("whole", "must be `partial` or `final"),
        ("final;/files/not-an-id", "is not the URL of an upload"),
        (f"final;/tasks/{SOME_ID}", "is not the URL of an upload"),
        (f"final;ftp://tsm.test/files/{SOME_ID}", "is not the URL of an upload"),
        (f"final;/files/{SOME_ID}?x=1", "is not the URL of an upload"),
        (f"final;files/{SOME_ID}", "is not the URL of an upload"),
        ("final;" + " ".join(f"/files/{SOME_ID}" for _ in range(MAX_CONCAT_PARTS + 1)), "at most 64"),
    ],
    ids=["empty", "no-semicolon", "unknown-kind", "not-an-id", "not-files", "ftp", "query", "relative", "too-many"],
)
async def test_a_malformed_upload_concat_is_400(client, concat, words):
    response = await client.post("/files", headers={**TUS, "Upload-Concat": concat})
    assert words in _problem(response, 400)


async def test_a_partial_named_twice_is_400(client):
    url = await _partial(client, b"a")
    assert "more than once" in _problem(await _final(client, [url, BASE + url]), 400)
    assert (await client.head(url, headers=TUS)).status_code == 200  # nothing was claimed


async def test_a_final_with_upload_length_or_a_body_is_400(client):
    url = await _partial(client, b"abc")
    assert "no Upload-Length" in _problem(await _final(client, [url], **{"Upload-Length": "3"}), 400)
    assert "no Upload-Length" in _problem(await _final(client, [url], **{"Upload-Defer-Length": "1"}), 400)
    with_body = await client.post("/files", headers={**OCTET, "Upload-Concat": f"final;{url}"}, content=b"abc")
    assert "no body" in _problem(with_body, 400)


async def test_unknown_unfinished_and_non_partial_uploads_are_refused(client):
    done = await _partial(client, b"abc")
    unknown = f"/files/{uuid.uuid4()}"
    assert _problem(await _final(client, [done, unknown]), 404) == f"no upload with id {_id(unknown)!r}"
    unfinished = await new_upload(client, 10, **{"Upload-Concat": "partial"})
    assert (await patch(client, unfinished, 0, b"1234")).status_code == 204
    assert "has 4 of 10 bytes" in _problem(await _final(client, [done, unfinished]), 409)
    plain = await new_upload(client, 1)
    assert (await patch(client, plain, 0, b"x")).status_code == 204
    assert "not a partial upload" in _problem(await _final(client, [done, plain]), 409)
    final = (await _final(client, [done])).headers["location"].removeprefix(BASE)
    assert "not a partial upload" in _problem(await _final(client, [final]), 409)
    assert "already concatenated" in _problem(await _final(client, [done, await _partial(client, b"d")]), 410)
    terminated = await _partial(client, b"z")
    assert (await client.delete(terminated, headers=TUS)).status_code == 204
    assert "terminated" in _problem(await _final(client, [terminated]), 410)


async def test_another_owners_partial_is_404_as_if_unknown_and_stays_untouched(client, app):
    theirs = await _partial(client, b"secret")  # the default test key's owner
    other = await key_headers(app, "mallory")
    mine = await _partial(client, b"mine", other)
    unknown = f"/files/{uuid.uuid4()}"
    detail = _problem(await _final(client, [mine, theirs], other), 404)
    assert detail == f"no upload with id {_id(theirs)!r}"
    assert _problem(await _final(client, [mine, unknown], other), 404) == f"no upload with id {_id(unknown)!r}"
    row = await get_row(app, _id(theirs))
    assert row.state == "complete" and row.concat_into is None and row.lock_token is None
    # The rightful owner still concatenates it; an admin cannot borrow it either.
    admin = await key_headers(app, "root", role="admin")
    assert _problem(await _final(client, [theirs], admin), 404) == f"no upload with id {_id(theirs)!r}"
    response = await _final(client, [theirs])
    assert response.status_code == 201 and (await client.get(response.headers["location"])).content == b"secret"
    assert (await client.get(response.headers["location"], headers=other)).status_code == 404


async def test_a_final_over_the_maximum_upload_size_is_413(settings):
    small = settings.model_copy(update={"max_upload_bytes": 10})
    async with open_app(small) as (_app, client):
        urls = [await _partial(client, b"123456"), await _partial(client, b"7890a")]
        response = await _final(client, urls)
        assert "add up to 11 bytes" in _problem(response, 413)
        assert response.headers["tus-max-size"] == "10"
        assert (await client.head(urls[0], headers=TUS)).headers["upload-concat"] == "partial"


async def test_a_final_needs_no_quota_of_its_own(settings):
    tight = settings.model_copy(update={"max_storage_bytes_per_owner": 8})
    async with open_app(tight) as (_app, client):
        urls = [await _partial(client, b"1234"), await _partial(client, b"5678")]
        response = await _final(client, urls)
        assert response.status_code == 201, response.text
        assert (await client.get(response.headers["location"])).content == b"12345678"
        assert _problem(await client.post("/files", headers={**TUS, "Upload-Length": "1"}), 413)


async def test_a_final_that_died_gives_its_partials_to_the_next_one(client, app):
    urls = [await _partial(client, b"ab"), await _partial(client, b"cd")]
    dead = await new_upload(client, 4)  # stands in for a final whose process died while writing it
    await set_row(app, _id(dead), concat="final", concat_parts=[_id(u) for u in urls])
    for url in urls:
        await set_row(app, _id(url), concat_into=_id(dead))
    await set_row(app, _id(dead), lock_token="t", lock_expires_at=utcnow() + timedelta(minutes=5))
    assert "being concatenated" in _problem(await _final(client, urls), 409)

    await set_row(app, _id(dead), lock_expires_at=utcnow() - timedelta(seconds=1))
    response = await _final(client, urls)
    assert response.status_code == 201, response.text
    assert (await client.get(response.headers["location"])).content == b"abcd"
    assert (await get_row(app, _id(dead))).state == "expired"


async def test_a_partial_being_written_to_cannot_be_claimed(client, app):
    url = await _partial(client, b"abc")
    await set_row(app, _id(url), lock_token="t", lock_expires_at=utcnow() + timedelta(minutes=5))
    assert "writing to one of the partial uploads" in _problem(await _final(client, [url]), 423)
    row = await get_row(app, _id(url))
    assert row.concat_into is None and row.state == "complete"


async def test_a_final_imports_like_any_upload(env: ImportEnv):
    header, body = b"id,name\n", b"".join(f"{i},name {i}\n".encode() for i in range(1, 201))
    urls = [await _partial(env.client, header + body[:1000]), await _partial(env.client, body[1000:])]
    final = (await _final(env.client, urls)).headers["location"]
    task = await env.run(file_id=_id(final), table="joined")
    assert task["state"] == "succeeded", task
    assert task["result"]["rows"] == 200


async def test_a_partial_whose_bytes_vanished_is_404_and_frees_the_others(client, app):
    urls = [await _partial(client, b"abc"), await _partial(client, b"def")]
    await app.state.store.delete(_id(urls[1]), None)  # behind the service's back
    assert "are missing" in _problem(await _final(client, urls), 404)
    first = await get_row(app, _id(urls[0]))
    assert first.state == "complete" and first.lock_token is None
    assert (await client.head(urls[0], headers=TUS)).status_code == 200


async def test_a_final_of_empty_partials_is_complete_and_empty(client, app):
    urls = [await _partial(client, b""), await _partial(client, b"")]
    response = await _final(client, urls)
    assert response.status_code == 201, response.text
    final = response.headers["location"]
    assert response.headers["upload-offset"] == response.headers["upload-length"] == "0"
    assert (await client.get(final)).content == b""
    assert (await client.get(f"{final}/info")).json()["sha256"] == hashlib.sha256(b"").hexdigest()
    assert [(await get_row(app, _id(url))).state for url in urls] == ["deleted", "deleted"]
    assert (await _final(client, urls)).headers["location"] == final


async def test_a_partial_being_concatenated_refuses_patch_and_delete(client, app):
    url = await _partial(client, b"abc")
    await set_row(app, _id(url), lock_token="t", lock_expires_at=utcnow() + timedelta(minutes=5))
    _problem(await client.delete(url, headers=TUS), 423)
    _problem(await patch(client, url, 3, b""), 423)


async def test_two_finals_racing_for_the_same_partials_make_one_file(client):
    urls = [await _partial(client, os.urandom(1000)), await _partial(client, os.urandom(2000))]
    answers = await asyncio.gather(_final(client, urls), _final(client, urls))
    made = {a.headers["location"] for a in answers if a.status_code == 201}
    assert len(made) == 1 and all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
    assert len((await client.get(made.pop())).content) == 3000

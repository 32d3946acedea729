"""Helpers shared by the upload / download / files tests (this module holds no tests)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from app.models import File
from app.services.files.storage import file_path
from app.services.owners.keys import create_key

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {**TUS, "Content-Type": "application/offset+octet-stream"}


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


async def create(
    client: httpx.AsyncClient, length: int | None = None, *, metadata: str | None = None, **headers: str
) -> httpx.Response:
    sent = dict(TUS)
    if length is not None:
        sent["Upload-Length"] = str(length)
    if metadata is not None:
        sent["Upload-Metadata"] = metadata
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return await client.post("/files", headers=sent)


async def new_upload(client: httpx.AsyncClient, length: int | None = None, **kwargs: Any) -> str:
    response = await create(client, length, **kwargs)
    assert response.status_code == 201, response.text
    return response.headers["location"].removeprefix("http://tsm.test")


async def patch(
    client: httpx.AsyncClient, url: str, offset: int, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.patch(url, headers={**OCTET, "Upload-Offset": str(offset), **(headers or {})}, content=body)


async def upload(
    client: httpx.AsyncClient, data: bytes, filename: str = "data.bin", headers: dict[str, str] | None = None
) -> str:
    """A complete upload of ``data``; returns its id."""
    response = await client.post(
        "/files",
        headers={
            **TUS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": f"filename {b64(filename)}",
            **(headers or {}),
        },
    )
    assert response.status_code == 201, response.text
    url = response.headers["location"].removeprefix("http://tsm.test")
    if data:
        response = await patch(client, url, 0, data, headers)
        assert response.status_code == 204, response.text
    return url.rsplit("/", 1)[1]


async def key_headers(app: FastAPI, owner: str, role: str = "user") -> dict[str, str]:
    async with app.state.database.sessionmaker.begin() as session:
        _row, key = await create_key(session, owner, role)
    return {"Authorization": f"Bearer {key}"}


async def set_row(app: FastAPI, file_id: str, **values: Any) -> None:
    """Change a files row behind the API's back (to simulate time passing or another replica)."""
    async with app.state.database.sessionmaker.begin() as session:
        await session.execute(update(File).where(File.id == file_id).values(**values))


async def get_row(app: FastAPI, file_id: str) -> File | None:
    async with app.state.database.sessionmaker() as session:
        return await session.get(File, file_id)


async def poll(check: Any, *, timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Await ``check()`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; last value {value!r}")
        await asyncio.sleep(interval)


async def stored(app: FastAPI, file_id: str) -> bytes | None:
    """The bytes the store holds for a file (None: none at all), on whichever store the app uses.

    On S3 an unfinished upload is parts plus a tail object; parts cannot be read back before
    completion, so only uploads still within their tail (under 5 MiB) can be looked at.
    """
    store = app.state.store
    if store.local:
        path = file_path(app.state.settings, file_id)
        return path.read_bytes() if path.exists() else None
    row = await get_row(app, file_id)
    if row is not None and row.multipart and row.state == "uploading":
        assert not row.multipart["parts"], "the parts of an unfinished S3 upload cannot be read"
        return await store._get(row.multipart["tail_key"]) if row.multipart["tail"] else b""
    if row is not None and row.multipart:  # removed: neither its multipart upload nor its tail is left
        assert not await s3_leftovers(app, file_id)
    if await store.stat(file_id) is None:
        return None
    return b"".join([block async for block in store.read_range(file_id, 0, (await store.stat(file_id)).size - 1)])


async def s3_leftovers(app: FastAPI, file_id: str) -> list[str]:
    """What S3 still holds of an upload: open multipart uploads and objects under its key."""
    store = app.state.store
    key = store.key(file_id)
    uploads = await store.s3.list_multipart_uploads(Bucket=store.bucket, Prefix=key)
    objects = await store.s3.list_objects_v2(Bucket=store.bucket, Prefix=key)
    return [u["Key"] for u in uploads.get("Uploads", [])] + [o["Key"] for o in objects.get("Contents", [])]

"""Shared helpers for the import tests: an app with tiny batches, CSV makers, table readers.

The ``env`` fixtures follow the ``store`` fixture (local unless a test parametrizes it with
"s3", see tests/conftest.py): ``env.upload`` puts a complete upload wherever the app keeps
bytes, ``env.source`` names a file the way each store can import it (a ``path`` on the local
directory, an upload on S3). Data is generated at test time in tmp_path, never committed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from app.models import File, utcnow
from app.services.files.storage import file_path
from tests.helpers.apps import make_settings, wait_state
from tests.helpers.database import dsn

SCHEMA = "data_local"
# A test on both byte stores: the local directory and S3 (the s3_server fixture, SeaweedFS).
BOTH_STORES = pytest.mark.parametrize("store", ["local", "s3"], indirect=True)


def nasty_csv() -> bytes:
    """BOM, CRLF, quoted commas, doubled quotes, embedded newlines, unicode, empty vs ""."""
    lines = [
        "id,name,note,amount,flag,day,at",
        '1,"Smith, John","He said ""hi""",1.5,true,2024-01-02,2024-01-02 03:04:05',
        '2,Zoë 🎉 日本,"multi\r\nline",-2,false,2024-02-29,2024-02-29T23:59:59',
        '3,,"",,,,',
        '4,tab\there,"comma,quote"",newline\nend",1e3,t,1999-12-31,1999-12-31 00:00:00.5',
    ]
    return b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode()


def csv_rows(count: int, start: int = 1) -> bytes:
    return "".join(f'{i},"name {i}, quoted",{i * 0.25},row {i}\n' for i in range(start, start + count)).encode()


def write_csv(path: Path, count: int) -> Path:
    path.write_bytes(b"id,name,amount,note\n" + csv_rows(count))
    return path


async def start(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.post("/tasks", json={"kind": "import_csv", "params": params})


@dataclass
class ImportEnv:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    db_url: str

    @property
    def storage(self) -> Path:
        return self.settings.storage_dir

    @property
    def postgres(self) -> bool:
        return not self.db_url.startswith("sqlite")

    @property
    def on_s3(self) -> bool:
        return not self.app.state.store.local

    async def upload(self, content: bytes, *, state: str = "complete", owner: str = "local") -> str:
        """A ``files`` row of an upload, its bytes in the app's store (one object on S3)."""
        return await self.file_row(content, state=state, owner=owner)

    async def source(self, name: str, content: bytes) -> dict[str, str]:
        """Import params naming ``content``: a ``path`` in storage/incoming on the local store,
        an upload (``file_id``) on S3, where uploads are the only sources in the bucket."""
        if self.on_s3:
            return {"file_id": await self.upload(content)}
        self.put(name, content)
        return {"path": f"incoming/{name}"}

    def put(self, name: str, content: bytes) -> Path:
        folder = self.storage / "incoming"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
        return folder / name

    async def run(self, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        response = await start(self.client, **params)
        assert response.status_code == 201, response.text
        return await wait_state(self.client, response.json()["id"], "succeeded", "failed", "cancelled", timeout=timeout)

    async def file_row(self, content: bytes, *, state: str, owner: str = "local") -> str:
        async with self.app.state.database.sessionmaker.begin() as session:
            row = File(owner=owner, origin="upload", filename="x.csv", state=state, length=len(content))
            row.offset = len(content)
            row.created_at = row.updated_at = utcnow()
            session.add(row)
            await session.flush()
            file_id = row.id
        store = self.app.state.store
        if not store.local:
            await store._call("put_object", Key=store.key(file_id), Body=content)
            return file_id
        path = file_path(self.settings, file_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return file_id

    async def rows(self, table: str, cast: bool = False) -> list[tuple[Any, ...]]:
        return await read_rows(self.db_url, self.settings, table, cast)

    async def tables(self) -> list[str]:
        return await list_tables(self.db_url, self.settings)


async def read_rows(db_url: str, settings: Settings, table: str, cast: bool = False) -> list[tuple[Any, ...]]:
    if not db_url.startswith("sqlite"):
        conn = await asyncpg.connect(dsn(db_url))
        try:
            columns = await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 ORDER BY attnum",
                f'"{SCHEMA}"."{table}"',
            )
            select = ", ".join(f'"{c["attname"]}"' + ("::text" if cast else "") for c in columns)
            records = await conn.fetch(f'SELECT {select} FROM "{SCHEMA}"."{table}" ORDER BY ctid')
            return [tuple(r) for r in records]
        finally:
            await conn.close()
    with sqlite3.connect(settings.storage_dir / "tables" / "local.sqlite3") as db:
        info = db.execute(f'PRAGMA table_info("{table}")').fetchall()
        rows = db.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
    if not cast:
        return [tuple(r) for r in rows]
    kinds = [c[2].upper() for c in info]

    def text(value: Any, kind: str) -> Any:
        if value is None or isinstance(value, str):
            return value
        if kind == "BOOLEAN":
            return "true" if value else "false"
        return str(value)

    return [tuple(text(v, k) for v, k in zip(r, kinds, strict=True)) for r in rows]


async def list_tables(db_url: str, settings: Settings) -> list[str]:
    """Every table in the owner's namespace (the import's own state table aside)."""
    if not db_url.startswith("sqlite"):
        conn = await asyncpg.connect(dsn(db_url))
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", SCHEMA)
        finally:
            await conn.close()
        return sorted(r["tablename"] for r in rows)
    path = settings.storage_dir / "tables" / "local.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return sorted(r[0] for r in rows if r[0] != "tsm_import_state")


@pytest.fixture(name="env")
async def import_env(db_url: str, tmp_path: Path, store_overrides: dict[str, Any]) -> AsyncIterator[ImportEnv]:
    """An app whose import batches are tiny (1 KiB), so small files still span many batches."""
    async for env in _env(db_url, tmp_path, 1024, store_overrides):
        yield env


@pytest.fixture(name="env8k")
async def import_env_8k(db_url: str, tmp_path: Path, store_overrides: dict[str, Any]) -> AsyncIterator[ImportEnv]:
    async for env in _env(db_url, tmp_path, 8192, store_overrides):
        yield env


async def _env(
    db_url: str, tmp_path: Path, batch_bytes: int, overrides: dict[str, Any] | None = None
) -> AsyncIterator[ImportEnv]:
    settings = make_settings(db_url, tmp_path / "storage", import_batch_bytes=batch_bytes, **(overrides or {}))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tsm.test") as client:
            yield ImportEnv(app, client, settings, db_url)

"""Upload housekeeping: expiry sweeps, start-up reconciliation and whole-file SHA-256.

    complete (upload or start-up repair) ──▶ SHA-256 of the file in a thread, off the request path

sweeper (every upload_sweep_seconds, on every replica — the UPDATEs make it idempotent):
  uploading + expires_at passed + not locked ──▶ expired ──▶ bytes unlinked, row deleted
  deleted tombstones older than the expiry period ──▶ row deleted
start-up: every unlocked unfinished upload's file is cut back to its committed offset
  (bytes past it were never acknowledged), or its offset lowered to the bytes that exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update

from app.config import Settings
from app.db import Database
from app.models import File, new_id, utcnow
from app.services.files import writer
from app.services.files.catalog import COMPLETE, DELETED, EXPIRED, UPLOADING
from app.services.files.storage import file_path

logger = logging.getLogger("tsm.uploads")


_background: set[asyncio.Task[None]] = set()


def _hash_file(path: Any) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def _fill_sha256(database: Database, settings: Settings, file_id: str) -> None:
    try:
        value = await asyncio.to_thread(_hash_file, file_path(settings, file_id))
        async with database.sessionmaker() as session:
            await session.execute(update(File).where(File.id == file_id, File.state == COMPLETE).values(sha256=value))
            await session.commit()
    except Exception:
        logger.warning("could not compute the SHA-256 of file %s", file_id, exc_info=True)


def compute_sha256_later(database: Database, settings: Settings, file_id: str) -> None:
    task = asyncio.create_task(_fill_sha256(database, settings, file_id))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def sweep_expired(database: Database, settings: Settings) -> int:
    """Remove expired unfinished uploads (bytes and rows) and old tombstones; returns rows removed."""
    now = utcnow()
    async with database.sessionmaker() as session:
        await session.execute(
            update(File)
            .where(
                File.origin == "upload",
                File.state == UPLOADING,
                File.expires_at < now,
                or_(File.lock_token.is_(None), File.lock_expires_at < now),
            )
            .values(state=EXPIRED, updated_at=now)
        )
        await session.commit()
        old = now - timedelta(seconds=settings.upload_expiry_seconds)
        doomed = list(
            (
                await session.execute(
                    select(File.id, File.state).where(
                        or_(File.state == EXPIRED, (File.state == DELETED) & (File.updated_at < old))
                    )
                )
            ).all()
        )
    for file_id, _state in doomed:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(file_path(settings, file_id).unlink, missing_ok=True)
    if not doomed:
        return 0
    async with database.sessionmaker() as session:
        await session.execute(
            delete(File).where(File.id.in_([d[0] for d in doomed]), File.state.in_((EXPIRED, DELETED)))
        )
        await session.commit()
    return len(doomed)


async def reconcile_uploads(database: Database, settings: Settings) -> int:
    """At start-up: make every unlocked unfinished upload's offset and file size agree, and hash
    finished uploads whose SHA-256 a stopped process never got to."""
    now = utcnow()
    fixed = 0
    async with database.sessionmaker() as session:
        unhashed = (
            await session.execute(
                select(File.id).where(File.origin == "upload", File.state == COMPLETE, File.sha256.is_(None))
            )
        ).scalars()
        for file_id in unhashed:
            compute_sha256_later(database, settings, file_id)
        rows = list(
            (
                await session.execute(
                    select(File).where(
                        File.origin == "upload",
                        File.state == UPLOADING,
                        or_(File.lock_token.is_(None), File.lock_expires_at < now),
                    )
                )
            ).scalars()
        )
    for row in rows:
        token = new_id()
        async with database.sessionmaker() as session:
            taken = await session.execute(
                update(File)
                .where(File.id == row.id, or_(File.lock_token.is_(None), File.lock_expires_at < now))
                .values(
                    lock_token=token, lock_expires_at=now + timedelta(seconds=settings.lease_seconds), lock_reserve=None
                )
            )
            await session.commit()
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            continue  # a live writer elsewhere owns it
        path = file_path(settings, row.id)
        size = await writer.file_size(path)
        offset = row.offset
        if size is None:
            path.touch()
            offset = 0
        elif size > offset:
            await writer.truncate(path, offset)
        elif size < offset:
            offset = size
        values: dict[str, Any] = {"offset": offset, "lock_token": None, "lock_expires_at": None}
        if offset != row.offset:
            values["updated_at"] = utcnow()
            fixed += 1
        if row.length is not None and offset == row.length:
            values.update(state=COMPLETE, completed_at=utcnow(), expires_at=None)
        async with database.sessionmaker() as session:
            await session.execute(update(File).where(File.id == row.id, File.lock_token == token).values(**values))
            await session.commit()
        if values.get("state") == COMPLETE:
            compute_sha256_later(database, settings, row.id)
    return fixed


class UploadSweeper:
    """The background loop the lifespan starts and stops."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                removed = await sweep_expired(self.database, self.settings)
                if removed:
                    logger.info("removed %d expired or terminated uploads", removed)
            except Exception:
                logger.warning("upload sweep failed; retrying later", exc_info=True)
            await asyncio.sleep(self.settings.upload_sweep_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="upload-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Unfinished hashes are simply redone by the next start-up's reconciliation.
        for task in list(_background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

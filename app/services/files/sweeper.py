"""Upload housekeeping: expiry sweeps, start-up reconciliation and whole-file SHA-256.

    complete (upload or start-up repair) ──▶ SHA-256 of the file in a thread, off the request path

sweeper (every upload_sweep_seconds, on every replica — the UPDATEs make it idempotent):
  uploading + expires_at passed + not locked ──▶ expired ──▶ bytes unlinked, row deleted
  deleted tombstones older than the expiry period ──▶ row deleted
start-up: every unlocked unfinished upload's file is cut back to its committed offset
  (bytes past it were never acknowledged), or its offset lowered to the bytes that exist
  (on S3 the row's part list is the truth already); bytes go through the ByteStore.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update

from app.config import Settings
from app.db import Database
from app.models import File, new_id, utcnow
from app.services.files.catalog import COMPLETE, DELETED, EXPIRED, UPLOADING
from app.services.files.store import ByteStore

logger = logging.getLogger("tsm.uploads")


_background: set[asyncio.Task[None]] = set()


async def _fill_sha256(database: Database, store: ByteStore, file_id: str) -> None:
    try:
        value = await store.sha256(file_id)
        async with database.sessionmaker() as session:
            await session.execute(update(File).where(File.id == file_id, File.state == COMPLETE).values(sha256=value))
            await session.commit()
    except Exception:
        logger.warning("could not compute the SHA-256 of file %s", file_id, exc_info=True)


def compute_sha256_later(database: Database, store: ByteStore, file_id: str) -> None:
    task = asyncio.create_task(_fill_sha256(database, store, file_id))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def sweep_expired(database: Database, settings: Settings, store: ByteStore) -> int:
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
                    select(File).where(or_(File.state == EXPIRED, (File.state == DELETED) & (File.updated_at < old)))
                )
            ).scalars()
        )
    for row in doomed:
        try:  # an unfinished upload on S3: its multipart upload is aborted, its tail deleted
            await store.delete(row.id, row.multipart)
        except Exception:
            logger.warning("could not remove the bytes of file %s", row.id, exc_info=True)
    if not doomed:
        return 0
    async with database.sessionmaker() as session:
        await session.execute(
            delete(File).where(File.id.in_([row.id for row in doomed]), File.state.in_((EXPIRED, DELETED)))
        )
        await session.commit()
    return len(doomed)


async def reconcile_uploads(database: Database, settings: Settings, store: ByteStore) -> int:
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
            compute_sha256_later(database, store, file_id)
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
        if taken.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult; execute() is typed as the base Result
            continue  # a live writer elsewhere owns it
        short = await store.prepare(row)
        offset = row.offset if short is None else short
        values: dict[str, Any] = {"offset": offset, "lock_token": None, "lock_expires_at": None}
        if offset != row.offset:
            values["updated_at"] = utcnow()
            fixed += 1
        if row.length is not None and offset == row.length:
            await store.finish(row.id, row.multipart)  # a crash between the last byte and the commit
            values.update(state=COMPLETE, completed_at=utcnow(), expires_at=None, multipart=None)
        async with database.sessionmaker() as session:
            await session.execute(update(File).where(File.id == row.id, File.lock_token == token).values(**values))
            await session.commit()
        if values.get("state") == COMPLETE:
            compute_sha256_later(database, store, row.id)
    return fixed


class UploadSweeper:
    """The background loop the lifespan starts and stops."""

    def __init__(self, database: Database, settings: Settings, store: ByteStore) -> None:
        self.database = database
        self.settings = settings
        self.store = store
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                removed = await sweep_expired(self.database, self.settings, self.store)
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

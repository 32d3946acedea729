"""Per-owner limits (active tasks, open uploads, stored bytes), checked atomically.

    caller's transaction ─▶ check_*(): lock_owner ─▶ count or sum ─▶ raise, or the caller
                                                                     inserts / updates ─▶ COMMIT

``lock_owner`` upserts the owner's row in ``owner_locks``. On PostgreSQL that row lock is held
until the transaction ends, so a second request of the same owner waits there and then counts
what the first one committed. On SQLite the upsert is the transaction's first write, which
takes the database's write lock at once (waiting under busy_timeout); reading first and
writing later could not wait, it would fail with SQLITE_BUSY. So call the checks before any
write of the transaction. Other owners never wait for each other on PostgreSQL.

An upload's stored bytes are its declared length, else its offset; a PATCH streaming into an
upload of unknown length holds ``lock_reserve`` (the offset it may reach: ``hold_quota``) for
as long as its lock lasts, so a crashed writer's hold lapses with its lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.config import Settings
from app.errors import Locked, PayloadTooLarge, TooManyRequests
from app.models import File, Task, utcnow
from app.services.files.catalog import COMPLETE, UPLOADING, WRITING
from app.services.runtime import states as S

Executor = AsyncSession | AsyncConnection

_LOCK = text("INSERT INTO owner_locks (owner) VALUES (:owner) ON CONFLICT (owner) DO UPDATE SET owner = excluded.owner")


class QuotaExceeded(PayloadTooLarge):
    """The owner's storage quota would be exceeded."""


async def lock_owner(db: Executor, owner: str) -> None:
    """Serialise ``owner``'s limit checks until the caller's transaction ends."""
    await db.execute(_LOCK, {"owner": owner})


async def check_active_tasks(db: Executor, owner: str, limit: int, exclude: str = "") -> None:
    """429 unless ``owner`` may have one more active task (``exclude``, the one to resume, aside)."""
    await lock_owner(db, owner)
    active = await db.scalar(
        select(func.count()).select_from(Task).where(Task.owner == owner, Task.state.in_(S.ACTIVE), Task.id != exclude)
    )
    if (active or 0) >= limit:
        raise TooManyRequests(f"owner {owner!r} already has {active} active tasks (limit {limit})")


async def check_open_uploads(db: Executor, owner: str, limit: int) -> None:
    """429 unless ``owner`` may start one more upload."""
    await lock_owner(db, owner)
    open_uploads = await db.scalar(
        select(func.count())
        .select_from(File)
        .where(File.owner == owner, File.origin == "upload", File.state == UPLOADING)
    )
    if (open_uploads or 0) >= limit:
        raise TooManyRequests(
            f"owner {owner!r} already has {open_uploads} unfinished uploads (limit {limit}); finish or DELETE one first"
        )


def _stored_bytes(now: Any) -> Any:
    held = case((File.lock_expires_at > now, File.lock_reserve), else_=None)
    return func.coalesce(File.length, held, File.offset)


async def storage_room(db: Executor, settings: Settings, owner: str, exclude: str = "") -> tuple[int, int]:
    """(bytes ``owner`` stores, bytes still free) — files other than ``exclude``."""
    await lock_owner(db, owner)
    used = await db.scalar(
        select(func.coalesce(func.sum(_stored_bytes(utcnow())), 0)).where(
            File.owner == owner, File.state.in_((UPLOADING, COMPLETE, WRITING)), File.id != exclude
        )
    )
    used = int(used or 0)
    return used, settings.max_storage_bytes_per_owner - used


def quota_exceeded(settings: Settings, owner: str, used: int, what: str, extra: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"storage quota exceeded: owner {owner!r} uses {used} of {settings.max_storage_bytes_per_owner} "
        f"bytes and {what} needs {extra} more"
    )


async def check_storage(
    db: Executor, settings: Settings, owner: str, extra: int, *, what: str, exclude: str = ""
) -> None:
    """413 unless ``owner`` may store ``extra`` more bytes in ``what`` (a file other than ``exclude``)."""
    used, room = await storage_room(db, settings, owner, exclude)
    if extra > room:
        raise quota_exceeded(settings, owner, used, what, extra)


async def hold_quota(
    db: Executor,
    settings: Settings,
    row: File,
    token: str,
    length: int | None,
    limit: int,
    message: str,
    content_length: int | None,
) -> tuple[int, str]:
    """A PATCH (holding lock ``token``) into ``row``, an upload of unknown length, takes its share
    of the quota: a length declared now is stored at once; otherwise the PATCH holds the room it
    may fill. Returns the body limit, cut to that room, and why it is what it is."""
    used, room = await storage_room(db, settings, row.owner, exclude=row.id)
    if length is not None:
        if length > room:
            raise quota_exceeded(settings, row.owner, used, "this upload", length)
        values: dict[str, Any] = {"length": length}
    else:
        room = max(0, room - row.offset)
        if content_length is not None and content_length > room:
            raise quota_exceeded(settings, row.owner, used + row.offset, "this PATCH", content_length)
        if room < limit:
            limit, message = room, f"storage quota exceeded: this upload may grow by {room} more bytes"
        values = {"lock_reserve": row.offset + (limit if content_length is None else content_length)}
    held = await db.execute(
        update(File).where(File.id == row.id, File.lock_token == token).values(**values).returning(File.id)
    )
    if held.first() is None:
        raise Locked("this PATCH lost the upload's lock to another request; HEAD for the offset")
    return limit, message

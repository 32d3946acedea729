"""File rows as the rest of the service sees them: find one, list them, owner-scoped.

One ``files`` table holds tus uploads (origin "upload") and files the server makes
(origin "export" / "rejects"). Anything not the caller's, or deleted, simply does not exist.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import BadRequest, NotFound
from app.models import File
from app.services.keys import Principal

UPLOADING, COMPLETE, EXPIRED, DELETED, WRITING = "uploading", "complete", "expired", "deleted", "writing"
STATES = (UPLOADING, COMPLETE, EXPIRED, DELETED, WRITING)
ORIGINS = ("upload", "export", "rejects")


def visible(principal: Principal) -> Any:
    return True if principal.is_admin else File.owner == principal.owner


async def find_file(session: AsyncSession, principal: Principal, file_id: str) -> File | None:
    """The caller's row in any state (deleted and expired included), or None."""
    query = select(File).where(File.id == file_id, visible(principal))
    return (await session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()


async def get_file(session: AsyncSession, principal: Principal, file_id: str) -> File:
    """The caller's file row; 404 when it is missing, someone else's, deleted or expired."""
    row = await find_file(session, principal, file_id)
    if row is None or row.state in (DELETED, EXPIRED):
        raise NotFound(f"no file with id {file_id!r}")
    return row


def _encode_cursor(row: File) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, file_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), file_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("invalid cursor: pass back the next_cursor of a previous page") from None


async def list_files(
    session: AsyncSession,
    principal: Principal,
    *,
    state: str | None = None,
    origin: str | None = None,
    task_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[File], str | None]:
    """Newest first; deleted rows only when asked for by ``state``."""
    query = select(File).where(visible(principal))
    query = query.where(File.state == state) if state is not None else query.where(File.state != DELETED)
    if origin is not None:
        query = query.where(File.origin == origin)
    if task_id is not None:
        query = query.where(File.task_id == task_id)
    if cursor is not None:
        created, file_id = _decode_cursor(cursor)
        query = query.where(or_(File.created_at < created, and_(File.created_at == created, File.id < file_id)))
    query = query.order_by(File.created_at.desc(), File.id.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor

"""File rows as the rest of the service sees them: find one, list them, owner-scoped.

One ``files`` table holds tus uploads (origin "upload") and files the server makes
(origin "export" / "rejects"). Anything not the caller's, or deleted, simply does not exist.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import File
from app.services.owners.keys import Principal
from app.services.paging import newest_first


class FileState(StrEnum):
    """A file row's ``state`` column; the values are the strings stored and sent."""

    UPLOADING = "uploading"  # a tus upload still receiving bytes
    COMPLETE = "complete"  # every byte is there: downloadable
    EXPIRED = "expired"  # an upload left unfinished past its expiry
    DELETED = "deleted"  # removed by its owner; the row stays a while for the tus 410
    WRITING = "writing"  # a file a task (an export) is still writing


class FileOrigin(StrEnum):
    UPLOAD = "upload"
    EXPORT = "export"
    REJECTS = "rejects"


# Module-level names, so callers read ``COMPLETE`` as before.
UPLOADING, COMPLETE, EXPIRED, DELETED, WRITING = FileState

# ``File.concat`` of a tus concatenation's uploads (services/files/concat.py); None otherwise.
PARTIAL, FINAL = "partial", "final"


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
    return await newest_first(session, query, File, limit=limit, cursor=cursor)

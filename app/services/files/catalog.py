"""File rows as the rest of the service sees them: find one, list them, owner-scoped.

One ``files`` table holds tus uploads (origin "upload") and files the server makes
(origin "export" / "rejects"). Anything not the caller's, or deleted, simply does not exist.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import File
from app.services.owners.keys import Principal
from app.services.paging import newest_first

UPLOADING, COMPLETE, EXPIRED, DELETED, WRITING = "uploading", "complete", "expired", "deleted", "writing"
STATES = (UPLOADING, COMPLETE, EXPIRED, DELETED, WRITING)
ORIGINS = ("upload", "export", "rejects")


async def find_file(session: AsyncSession, principal: Principal, file_id: str) -> File | None:
    """The caller's row in any state (deleted and expired included), or None."""
    query = select(File).where(File.id == file_id, principal.sees(File.owner))
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
    query = select(File).where(principal.sees(File.owner))
    query = query.where(File.state == state) if state is not None else query.where(File.state != DELETED)
    if origin is not None:
        query = query.where(File.origin == origin)
    if task_id is not None:
        query = query.where(File.task_id == task_id)
    return await newest_first(session, query, File, limit=limit, cursor=cursor)

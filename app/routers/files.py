"""Files: list your uploads and server-made files, and inspect one (offset, state, checksum)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.auth import PrincipalDep
from app.http.deps import SessionDep
from app.http.params import FileId, TaskIdFilter
from app.http.problems import problems
from app.schemas import FileOrigin, FilePage, FileRead, FileState
from app.services.files import catalog as service

router = APIRouter(prefix="/files", tags=["files"])


@router.get("", response_model=FilePage, responses=problems(400, 401, 422))
async def list_files(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    state: FileState | None = None,
    origin: FileOrigin | None = None,
    task_id: TaskIdFilter = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> FilePage:
    """List your files (uploads and server-made files), newest first, with filters."""
    rows, next_cursor = await service.list_files(
        session, principal, state=state, origin=origin, task_id=task_id, limit=limit, cursor=cursor
    )
    base = str(request.base_url)
    return FilePage(items=[FileRead.from_row(r, base) for r in rows], next_cursor=next_cursor)


@router.get("/{file_id}/info", response_model=FileRead, responses=problems(401, (404, "No such file (or not yours).")))
async def file_info(file_id: FileId, request: Request, session: SessionDep, principal: PrincipalDep) -> FileRead:
    """Show one file: state, offset / length, checksum, expiry and its URLs."""
    return FileRead.from_row(await service.get_file(session, principal, file_id), str(request.base_url))

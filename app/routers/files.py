"""Files: list your uploads and server-made files, and inspect one (offset, state, checksum)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from app.auth import PrincipalDep
from app.db import SessionDep
from app.errors import PROBLEM_JSON
from app.models import File
from app.services import files as service

router = APIRouter(prefix="/files", tags=["files"])

FileState = Literal["uploading", "complete", "expired", "deleted", "writing"]
FileOrigin = Literal["upload", "export", "rejects"]


class FileRead(BaseModel):
    id: str
    owner: str
    origin: FileOrigin
    filename: str | None = Field(description="Display name from the upload's metadata (never a path).")
    content_type: str | None
    metadata: dict[str, Any] = Field(description="The decoded tus Upload-Metadata.")
    length: int | None = Field(description="Total size in bytes; null while an upload defers its length.")
    offset: int = Field(description="Bytes durably stored so far.")
    percent: float | None
    state: FileState
    sha256: str | None = Field(description="SHA-256 of the complete file (filled in once it is complete).")
    task_id: str | None
    expires_at: datetime | None = Field(description="An unfinished upload is removed after this moment.")
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    upload_url: str | None = Field(description="The tus URL to HEAD / PATCH / DELETE (uploads only).")
    download_url: str | None = Field(description="Where to GET the bytes once the file is complete.")

    @classmethod
    def from_row(cls, row: File, base_url: str) -> FileRead:
        url = f"{base_url.rstrip('/')}/files/{row.id}"
        percent = round(100.0 * row.offset / row.length, 2) if row.length else (100.0 if row.length == 0 else None)
        return cls(
            id=row.id,
            owner=row.owner,
            origin=row.origin,  # type: ignore[arg-type]
            filename=row.filename,
            content_type=row.content_type,
            metadata=row.metadata_ or {},
            length=row.length,
            offset=row.offset,
            percent=percent,
            state=row.state,  # type: ignore[arg-type]
            sha256=row.sha256,
            task_id=row.task_id,
            expires_at=row.expires_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            completed_at=row.completed_at,
            upload_url=url if row.origin == "upload" and row.state == "uploading" else None,
            download_url=url if row.state == "complete" else None,
        )


class FilePage(BaseModel):
    items: list[FileRead]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null at the end.")


@router.get("", response_model=FilePage)
async def list_files(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    state: FileState | None = None,
    origin: FileOrigin | None = None,
    task_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> FilePage:
    """List your files (uploads and server-made files), newest first, with filters."""
    rows, next_cursor = await service.list_files(
        session, principal, state=state, origin=origin, task_id=task_id, limit=limit, cursor=cursor
    )
    base = str(request.base_url)
    return FilePage(items=[FileRead.from_row(r, base) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{file_id}/info",
    response_model=FileRead,
    responses={404: {"description": "No such file (or not yours).", "content": {PROBLEM_JSON: {}}}},
)
async def file_info(file_id: str, request: Request, session: SessionDep, principal: PrincipalDep) -> FileRead:
    """Show one file: state, offset / length, checksum, expiry and its URLs."""
    return FileRead.from_row(await service.get_file(session, principal, file_id), str(request.base_url))

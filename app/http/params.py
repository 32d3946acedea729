"""Path and query parameters the routers share, checked before anything reaches SQL.

    /tasks/{task_id}, /files/{file_id}   a UUID, else 404 — like an id that does not exist
    ?task_id=                            a UUID, else 422
    ?kind=                               at most 64 characters, no control characters, else 422

Malformed input (a NUL byte, a 10 kB id) is refused here, never by the database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query

from app.errors import NotFound
from app.models import is_uuid

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
KIND_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"


def _task_id(task_id: Annotated[str, Path(description="The task's id.", json_schema_extra={"format": "uuid"})]) -> str:
    if not is_uuid(task_id):
        raise NotFound(f"no task with id {task_id[:64]!r}")
    return task_id


def _file_id(file_id: Annotated[str, Path(description="The file's id.", json_schema_extra={"format": "uuid"})]) -> str:
    if not is_uuid(file_id):
        raise NotFound(f"no file with id {file_id[:64]!r}")
    return file_id


TaskId = Annotated[str, Depends(_task_id)]
FileId = Annotated[str, Depends(_file_id)]
TaskIdFilter = Annotated[str | None, Query(pattern=UUID_PATTERN, description="Only files this task made.")]
KindFilter = Annotated[str | None, Query(pattern=KIND_PATTERN, description="Only tasks of this kind.")]


def header_params(*params: tuple[str, bool, dict[str, Any], str]) -> dict[str, Any]:
    """``openapi_extra`` declaring request headers a route reads itself: (name, required, schema, description).

    The route parses them with the protocol's own grammar; this only tells the API spec.
    """
    return {
        "parameters": [
            {"name": name, "in": "header", "required": required, "schema": schema, "description": description}
            for name, required, schema, description in params
        ]
    }

"""Request and response models (``XCreate`` in, ``XRead`` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import File, Task
from app.services.files import catalog
from app.services.runtime import states as S

# The largest value a BIGINT column holds (offsets, lengths, event ids): every integer a
# client sends that reaches one is bounded by it.
BIGINT_MAX = 2**63 - 1


# The enums' members as Literals: the spec lists their values inline (as it always has), and a
# field takes the enum from a row, ``TaskState(task.state)``, with no cast.
TaskState = Literal[
    S.TaskState.QUEUED,
    S.TaskState.RUNNING,
    S.TaskState.PAUSING,
    S.TaskState.PAUSED,
    S.TaskState.CANCELLING,
    S.TaskState.CANCELLED,
    S.TaskState.SUCCEEDED,
    S.TaskState.FAILING,
    S.TaskState.FAILED,
]
Control = Literal[S.Control.PAUSE, S.Control.CANCEL]
FileState = Literal[
    catalog.FileState.UPLOADING,
    catalog.FileState.COMPLETE,
    catalog.FileState.EXPIRED,
    catalog.FileState.DELETED,
    catalog.FileState.WRITING,
]
FileOrigin = Literal[catalog.FileOrigin.UPLOAD, catalog.FileOrigin.EXPORT, catalog.FileOrigin.REJECTS]


class TaskCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"kind": "process", "params": {"steps": 20, "step_seconds": 1.5}}]},
    )

    kind: str = Field(description="A registered task kind; `GET /tasks/kinds` lists them.", examples=["process"])
    params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters.")
    max_attempts: int | None = Field(
        None, ge=1, le=100, description="Runs allowed before the task fails (default from settings)."
    )


class TaskCheck(BaseModel):
    """A dry run's answer: the task would be accepted as shown; nothing was started or kept."""

    kind: str
    params: dict[str, Any] = Field(description="The kind's parameters as the task would get them, defaults filled.")
    max_attempts: int


class Progress(BaseModel):
    done: float
    total: float | None
    unit: str
    percent: float | None = Field(description="done / total × 100, when the total is known.")
    rate: float | None = Field(description="Units per second over the last few seconds.")
    eta_seconds: float | None = Field(description="Estimated seconds to finish at the current rate.")
    updated_at: datetime | None


class TaskRead(BaseModel):
    id: str
    owner: str
    kind: str
    params: dict[str, Any]
    state: TaskState
    control: Control | None = Field(description="A pending control request.")
    progress: Progress
    checkpoint: dict[str, Any] | None = Field(description="The last committed checkpoint.")
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_attempts: int
    runner: str | None = Field(description="The server process running the task now (host:pid:id).")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    paused_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_task(cls, task: Task) -> TaskRead:
        total = task.progress_total
        done = task.progress_done or 0
        percent = round(min(100.0, 100.0 * done / total), 2) if total else None
        rate = task.progress_rate if task.state in S.HELD_BY_RUNNER else None
        eta = (max(0.0, total - done) / rate) if (total and rate) else None
        return cls(
            id=task.id,
            owner=task.owner,
            kind=task.kind,
            params=task.params,
            state=S.TaskState(task.state),
            control=S.Control(task.control) if task.control is not None else None,
            progress=Progress(
                done=done,
                total=total,
                unit=task.progress_unit,
                percent=percent,
                rate=rate,
                eta_seconds=round(eta, 1) if eta is not None else None,
                updated_at=task.progress_at,
            ),
            checkpoint=task.checkpoint,
            result=task.result,
            error=task.error,
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            runner=task.lease_owner,
            created_at=task.created_at,
            updated_at=task.updated_at,
            started_at=task.started_at,
            paused_at=task.paused_at,
            finished_at=task.finished_at,
        )


class TaskPage(BaseModel):
    items: list[TaskRead]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null at the end.")


class KindRead(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any]


class HealthRead(BaseModel):
    """Liveness: the process answers; it says nothing about the database."""

    status: Literal["ok"]
    version: str = Field(description="The service's version.")


class ReadyRead(BaseModel):
    """Readiness: the process reached its database (and its bucket, on S3) just now and takes work."""

    status: Literal["ok"]
    version: str = Field(description="The service's version.")
    database: Literal["sqlite", "postgresql"] = Field(description="The database this replica reached.")
    store: Literal["local", "s3"] = Field(
        description="Where file bytes live: the local directory, or the S3 bucket this replica reached."
    )


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
            origin=catalog.FileOrigin(row.origin),
            filename=row.filename,
            content_type=row.content_type,
            metadata=row.metadata_ or {},
            length=row.length,
            offset=row.offset,
            percent=percent,
            state=catalog.FileState(row.state),
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

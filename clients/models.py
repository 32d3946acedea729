"""Typed results: the server's JSON (``TaskRead``, ``TaskPage`` …) as pydantic models.

They mirror the server's schemas without importing them, so the client installs alone; unknown
fields a newer server adds are kept (``extra="allow"``) rather than rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

TaskState = Literal[
    "queued", "running", "pausing", "paused", "cancelling", "cancelled", "succeeded", "failing", "failed"
]
TERMINAL_STATES: frozenset[str] = frozenset({"cancelled", "succeeded", "failed"})

T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Progress(_Model):
    done: float = 0
    total: float | None = None
    unit: str = ""
    percent: float | None = None
    rate: float | None = None
    eta_seconds: float | None = None
    updated_at: datetime | None = None


class CsvPreview(_Model):
    """A file as ``import_csv`` would read it: dialect, columns and their types, the first rows."""

    dialect: dict[str, Any]
    columns: list[dict[str, str]]
    renamed: list[dict[str, str]] = []
    sampled_records: int = 0
    rows: list[list[str | None]] = []


class TaskCheck(_Model):
    """A dry run's answer: the task the server would start (nothing was started)."""

    kind: str
    params: dict[str, Any]
    max_attempts: int


class Task(_Model):
    id: str
    owner: str
    kind: str
    params: dict[str, Any] = {}
    state: TaskState
    control: str | None = None
    progress: Progress = Progress()
    checkpoint: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    paused_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class Kind(_Model):
    name: str
    description: str = ""
    params_schema: dict[str, Any] = {}


class FileInfo(_Model):
    """A stored file (an upload, an export result …) as ``GET /files/{id}/info`` shows it."""

    id: str
    owner: str | None = None
    origin: str | None = None
    filename: str | None = None
    content_type: str | None = None
    metadata: dict[str, Any] = {}
    length: int | None = None
    offset: int = 0
    percent: float | None = None
    state: str = ""
    sha256: str | None = None
    task_id: str | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    upload_url: str | None = None
    download_url: str | None = None


class Page(_Model, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class Event:
    """One server-sent event of ``GET /tasks/{id}/events``: ``state``, ``progress`` or ``end``."""

    type: str
    data: dict[str, Any]
    id: int | None = None

    @property
    def state(self) -> str | None:
        return self.data.get("state")

    @property
    def progress(self) -> Progress | None:
        return Progress.model_validate(self.data) if self.type == "progress" else None

    @property
    def task(self) -> Task | None:
        """The final task, on the ``end`` event."""
        return Task.model_validate(self.data) if self.type == "end" else None


@dataclass(frozen=True)
class UploadResult:
    file_id: str
    url: str
    size: int
    resumed_from: int = 0  # bytes the server already had when this call started
    checksum: str | None = None  # the per-chunk algorithm used, if any


@dataclass(frozen=True)
class DownloadResult:
    file_id: str
    path: str
    size: int
    resumed_from: int = 0
    sha256: str | None = None
    verified: list[str] = field(default_factory=list)  # what was checked: "size", "sha256"

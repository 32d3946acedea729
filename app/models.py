"""SQLAlchemy 2 typed models: API keys, tasks, task events, files and owner locks.

Every task and file carries an ``owner``; services always filter by it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def is_uuid(value: str) -> bool:
    """The canonical (lower-case, hyphenated) form ``new_id`` gives every id."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both databases (SQLite would otherwise hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# SQLite only autoincrements INTEGER PRIMARY KEY columns.
AutoBigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(32), index=True)
    role: Mapped[str] = mapped_column(String(8), default="user")
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_owner_created", "owner", "created_at"),
        Index("ix_tasks_claim", "state", "run_after"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    # The pending control request ("pause" / "cancel"); the row is the truth, signals only speed it up.
    control: Mapped[str | None] = mapped_column(String(8), default=None)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)

    progress_done: Mapped[float] = mapped_column(default=0)
    progress_total: Mapped[float | None] = mapped_column(default=None)
    progress_unit: Mapped[str] = mapped_column(String(16), default="steps")
    progress_rate: Mapped[float | None] = mapped_column(default=None)
    progress_at: Mapped[datetime | None] = mapped_column(default=None)

    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=1)
    run_after: Mapped[datetime | None] = mapped_column(default=None)

    # Lease: which runner holds the task, the token that fences its writes, and until when.
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_token: Mapped[str | None] = mapped_column(String(36), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    paused_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class TaskEvent(Base):
    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(AutoBigInt, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text, default=None)


class File(Base):
    """An upload (tus), an export result or a reject file: stored under its id, never its name."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_owner_created", "owner", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(32))
    origin: Mapped[str] = mapped_column(String(16), default="upload")  # upload | export | rejects
    filename: Mapped[str | None] = mapped_column(String(255), default=None)
    content_type: Mapped[str | None] = mapped_column(String(255), default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    length: Mapped[int | None] = mapped_column(BigInteger, default=None)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16), default="uploading")
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    task_id: Mapped[str | None] = mapped_column(String(36), default=None)
    # Replicas serialise PATCHes on an upload through this column (see services/uploads.py).
    lock_token: Mapped[str | None] = mapped_column(String(36), default=None)
    lock_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # The offset the PATCH holding the lock may write up to, on an upload of unknown length:
    # counted toward the owner's quota while the lock lasts (see services/limits.py).
    lock_reserve: Mapped[int | None] = mapped_column(BigInteger, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    # An unfinished upload in object storage: its multipart upload id, the parts S3 acknowledged
    # (number, ETag, size) and the tail object (see services/files/s3store.py). None on disk.
    multipart: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # tus concatenation (services/files/concat.py): "partial" or "final"; a final's partial ids in
    # order; on a partial, the final that claimed it (its bytes are read until that one completes).
    concat: Mapped[str | None] = mapped_column(String(8), default=None)
    concat_parts: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    concat_into: Mapped[str | None] = mapped_column(String(36), default=None)


class OwnerLock(Base):
    """One row per owner, locked by whoever checks and uses that owner's limits."""

    __tablename__ = "owner_locks"

    owner: Mapped[str] = mapped_column(String(32), primary_key=True)

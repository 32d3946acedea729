"""The reject CSV of an import with ``on_error=skip``: line, column, error and the raw record.

One ``files`` row (origin "rejects") per import task, its id derived from the task id so a
resumed run finds it again; its durable size is the checkpoint's ``reject_bytes``, committed
with each batch, and a resume cuts the file back to it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import uuid

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.models import File, utcnow
from app.services.files.storage import file_path

REJECTS_NAMESPACE = uuid.UUID("5b0f4f64-3c57-4d3e-9a43-3c1a4f0e7a11")


class Rejects:
    """The reject CSV (line, column, error, raw record): a ``files`` row of origin "rejects", id derived
    from the task id so a resumed run finds it again; truncated back to the checkpoint's size."""

    def __init__(self, settings: Settings, task_id: str, owner: str, table: str, size: int) -> None:
        self.file_id = str(uuid.uuid5(REJECTS_NAMESPACE, task_id))
        self.path = file_path(settings, self.file_id)
        self.owner, self.task_id, self.table = owner, task_id, table
        self.size = size
        self.pending: list[bytes] = []
        self.counted = 0  # records rejected since the last flush
        self.row_known = False
        if size == 0:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            with self.path.open("r+b") as handle:
                handle.truncate(size)

    def add(self, line: int, column: str | None, reason: str, record: str) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        if self.size == 0 and not self.pending:
            writer.writerow(["line", "column", "error", "record"])
        writer.writerow([line, column or "", reason, record.rstrip("\r\n")])
        self.pending.append(out.getvalue().encode())
        self.counted += 1

    def reset(self) -> None:
        """Start the reject file over (the import restarts from the first record)."""
        self.discard()
        self.size = 0
        self.row_known = False
        self.path.unlink(missing_ok=True)

    def flush(self) -> int:
        """Write what is pending to disk (durably: the checkpoint will count these bytes)."""
        if self.pending:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as handle:
                for piece in self.pending:
                    handle.write(piece)
                handle.flush()
                os.fsync(handle.fileno())
                self.size = handle.tell()
            self.pending.clear()
        return self.size

    def discard(self) -> None:
        self.pending.clear()
        self.counted = 0

    async def ensure_row(self, conn: AsyncConnection) -> None:
        if self.size == 0 or self.row_known:
            return
        found = (await conn.execute(select(File.id).where(File.id == self.file_id))).first()
        if found is None:
            now = utcnow()
            await conn.execute(
                insert(File).values(
                    id=self.file_id,
                    owner=self.owner,
                    origin="rejects",
                    filename=f"{self.table}-rejects.csv",
                    content_type="text/csv",
                    metadata_={},
                    state="writing",
                    offset=0,
                    task_id=self.task_id,
                    created_at=now,
                    updated_at=now,
                )
            )
        self.row_known = True

    async def complete(self, conn: AsyncConnection) -> None:
        if self.size == 0:
            return
        await self.ensure_row(conn)
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        now = utcnow()
        await conn.execute(
            update(File)
            .where(File.id == self.file_id)
            .values(
                state="complete", length=self.size, offset=self.size, sha256=digest, completed_at=now, updated_at=now
            )
        )


async def remove_rejects(conn: AsyncConnection, settings: Settings, task_id: str) -> None:
    file_id = str(uuid.uuid5(REJECTS_NAMESPACE, task_id))
    await conn.execute(delete(File).where(File.id == file_id))
    file_path(settings, file_id).unlink(missing_ok=True)

"""The reject CSV of an import with ``on_error=skip``: line, column, error and the raw record.

One ``files`` row (origin "rejects") per import task, its id derived from the task id so a
resumed run finds it again. Its bytes go to the configured store through the same resumable
result writer as an export's (app/services/files/results.py)::

    loader:    add(record) … seal() ─▶ reject_bytes    (advance(): no I/O, any thread)
               keep(state)          ─▶ the sealed bytes kept; state["reject_multipart"] = the mark
               (PostgreSQL: in the batch's checkpoint transaction; SQLite: in its worker thread,
               before the tables file commits the state)
    publish:   complete(conn)       ─▶ the writer finishes the file, the row becomes "complete"
    resume:    open(reject_bytes, reject_multipart) ─▶ exactly the committed bytes, nothing after

So the checkpoint's ``reject_bytes`` (and, on S3, its part and tail list) always names bytes the
store holds, committed with the rows whose rejects they are.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import File, utcnow
from app.services.files.results import ResultLost, ResultWriter

if TYPE_CHECKING:
    from app.services.files.store import ByteStore

REJECTS_NAMESPACE = uuid.UUID("5b0f4f64-3c57-4d3e-9a43-3c1a4f0e7a11")


def rejects_file_id(task_id: str) -> str:
    return str(uuid.uuid5(REJECTS_NAMESPACE, task_id))


class Rejects:
    """The reject file of one import run, continued from the checkpoint's size and mark."""

    def __init__(self, store: ByteStore, task_id: str, owner: str, table: str, size: int) -> None:
        self.store = store
        self.file_id = rejects_file_id(task_id)
        self.owner, self.task_id, self.table = owner, task_id, table
        self.size = size  # bytes sealed: what the next checkpoint's reject_bytes says
        self.pending: list[bytes] = []  # added since the last seal
        self.sealed: list[bytes] = []  # sealed, not yet kept by the store
        self.counted = 0  # records rejected since the last seal
        self.row_known = False
        self.writer: ResultWriter | None = None
        self.multipart: dict[str, Any] | None = None  # the writer's mark as last kept
        self.finished = False  # complete in the store already (a run died before committing that)
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(
        cls, store: ByteStore, task_id: str, owner: str, table: str, size: int, multipart: dict[str, Any] | None
    ) -> Rejects:
        rejects = cls(store, task_id, owner, table, size)
        if size == 0:  # nothing counted yet: whatever an earlier run stored is nobody's
            await store.purge(rejects.file_id)
            return rejects
        try:
            rejects.writer = await store.open_result(rejects.file_id, {"offset": size, "multipart": multipart})
            rejects.multipart = multipart
        except ResultLost:
            found = await store.stat(rejects.file_id)
            if found is None or found.size != size:
                raise
            rejects.finished = True  # completed by a run that died before its final commit
        return rejects

    def add(self, line: int, column: str | None, reason: str, record: str) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        if self.size == 0 and not self.pending:
            writer.writerow(["line", "column", "error", "record"])
        writer.writerow([line, column or "", reason, record.rstrip("\r\n")])
        self.pending.append(out.getvalue().encode())
        self.counted += 1

    async def reset(self) -> None:
        """Start the reject file over (the import restarts from the first record)."""
        self.discard()
        self.sealed.clear()
        self.size = 0
        self.row_known = False
        self.close()
        self.writer, self.multipart, self.finished = None, None, False
        await self.store.purge(self.file_id)

    def seal(self) -> int:
        """The records added so far belong to the batch being committed; returns reject_bytes."""
        if self.pending:
            self.sealed += self.pending
            self.size += sum(len(piece) for piece in self.pending)
            self.pending.clear()
        return self.size

    async def keep(self, state: dict[str, Any] | Any) -> None:
        """Make the sealed bytes durable in the store; ``state`` gets the writer's mark."""
        if self.sealed:
            if self.writer is None:
                self.writer = await self.store.open_result(self.file_id, None)
            durable = await self.writer.hand_off(*self.sealed)
            mark = await durable
            self.sealed.clear()
            self.multipart = mark["multipart"]
            if mark["offset"] != self.size:
                raise RuntimeError(f"the reject file holds {mark['offset']} bytes, not {self.size}")
        state["reject_bytes"] = self.size
        state["reject_multipart"] = self.multipart

    def keep_blocking(self, state: dict[str, Any] | Any) -> None:
        """:meth:`keep` from a worker thread (SQLite's batch), on the run's event loop."""
        asyncio.run_coroutine_threadsafe(self.keep(state), self.loop).result()

    def discard(self) -> None:
        self.pending.clear()
        self.counted = 0

    def close(self) -> None:
        """Let go of the writer's file (local); nothing may be in flight."""
        if self.writer is not None:
            self.writer.close()

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
        """In the final checkpoint: the file made whole (again, if a run died after that)."""
        if self.size == 0:
            return
        await self.ensure_row(conn)
        if not self.finished:
            if self.writer is None:
                raise RuntimeError(f"the reject file of task {self.task_id} was never opened")
            await self.writer.finish()
            self.finished = True
        digest = await self.store.sha256(self.file_id)
        now = utcnow()
        await conn.execute(
            update(File)
            .where(File.id == self.file_id)
            .values(
                state="complete", length=self.size, offset=self.size, sha256=digest, completed_at=now, updated_at=now
            )
        )

    async def settle(self) -> None:
        """After the final commit: drop what only the writing needed (S3: the tail segments)."""
        if self.writer is not None:
            await self.writer.settle()


async def remove_rejects(conn: AsyncConnection, store: ByteStore, task_id: str) -> None:
    file_id = rejects_file_id(task_id)
    await conn.execute(delete(File).where(File.id == file_id))
    await store.purge(file_id)

"""PostgreSQL: raw CSV bytes streamed into ``COPY ... FROM STDIN`` inside the checkpoint's transaction.

    ctx.checkpoint(state, work=copy)          one transaction, fenced by the lease token:
        COPY staging FROM STDIN (csv)  ← the batch; a pause cancels it (rolled back, redone)
        UPDATE tasks SET checkpoint = {offset, rows, ...} WHERE id = ... AND lease_token = ...
    COMMIT

Both commit or neither does, so a crash at any instant never duplicates or loses a row: the
next run starts from the checkpoint's byte offset. With ``on_error=skip`` the batch runs
under a savepoint; if it fails it is split in halves (each under its own savepoint) until
the failing records are isolated and written to the reject file.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics import ROWS_IMPORTED
from app.services.csv_import import scan as csv_scan
from app.services.csv_import.errors import ImportFailed, TypeFallback
from app.services.csv_import.loader import Commit, ImportCheckpoint, advance
from app.services.csv_import.rejects import Rejects
from app.services.csv_import.source import Batch, decode
from app.services.owners.namespaces import quote as q
from app.services.runtime.context import LeaseLost, TaskContext, TaskInterrupt, Work

# Errors that one record causes ("row is too big" is a limit): it goes to the rejects
ROW_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError)
WHERE_RE = re.compile(r"line (\d+)(?:, column ([^:]+))?")
VALUE_RE = re.compile(r'line (\d+), column ([^:]+): "(.*)"\s*$', re.DOTALL)
# A value that is not of the column's type (text representation, range, datetime): an
# inferred column is widened for it, an explicit one rejects the record or fails the import
TYPE_SQLSTATES = frozenset({"22P02", "22003", "22007", "22008"})
PASS_THROUGH = frozenset({"utf-8", "utf-8-sig", "ascii"})
COPY_PIECE_BYTES = 1024 * 1024
# A pause cancels the running COPY, so long batches (few commits) cost a pause nothing
BATCH_SECONDS = 1.0


async def raw_connection(conn: AsyncConnection) -> asyncpg.Connection:
    await conn.execute(text("SELECT 1"))  # SQLAlchemy begins its transaction lazily: start it now
    raw = await conn.get_raw_connection()
    apg = raw.driver_connection
    assert isinstance(apg, asyncpg.Connection), "the PostgreSQL pool lends asyncpg connections"
    assert apg.is_in_transaction(), "COPY must run inside the checkpoint's transaction"
    return apg


class PgLoader:
    """The Loader for PostgreSQL: staging in the owner's schema, every write in a checkpoint."""

    split_batches = False
    batch_seconds = BATCH_SECONDS

    def __init__(self, ctx: TaskContext, params: Any, schema: str, staging: str, encoding: str) -> None:
        self.ctx, self.params = ctx, params
        self.schema = schema
        self.staging, self.encoding = staging, encoding
        # Set when one of several parallel batches failed: the others stop as for a pause.
        self.halt = asyncio.Event()

    @property
    def quote_byte(self) -> int:
        return ord(self.params.quote)

    def close(self) -> None:
        pass  # connections are the service pool's, lent per transaction

    def column_type(self, kind: str) -> str:
        return csv_scan.sql_type(kind, True)

    async def resume_state(self, checkpoint: ImportCheckpoint | None) -> ImportCheckpoint | None:
        return checkpoint  # committed with the rows: the truth

    # -- the steps, each inside a checkpoint ----------------------------------------------
    async def stage(self, columns: list[tuple[str, str]], state: ImportCheckpoint) -> Work:
        async def create(conn: AsyncConnection) -> None:
            await self.create_staging(conn, columns)

        return create

    async def load(self, batch: Batch, state: ImportCheckpoint, rejects: Rejects | None, commit: Commit) -> None:
        rows = 0

        async def copy(conn: AsyncConnection) -> None:
            nonlocal rows
            rows, used, lines = await self.copy_batch(
                conn, batch, state["line"], state["columns"], rejects, state.get("inferred")
            )
            advance(state, used, lines, rows, rejects)

        try:
            await commit(copy)
        except LeaseLost:
            raise
        except TaskInterrupt:
            ROWS_IMPORTED.inc(rows)  # committed; the interrupt came after the commit
            raise
        ROWS_IMPORTED.inc(rows)

    def catch_up(self, rejects: Rejects | None) -> None:
        return None  # a published import's checkpoint was committed with the publish

    async def publish(self, table: str, mode: str, columns: list[str], done: ImportCheckpoint) -> Work:
        async def swap(conn: AsyncConnection) -> None:
            await self.swap(conn, table, mode, columns)

        return swap

    async def drop(self, conn: AsyncConnection) -> None:
        await self.drop_staging(conn)

    # -- tables -------------------------------------------------------------------------
    async def target_columns(self, table: str) -> list[tuple[str, str]] | None:
        async with self.ctx.begin() as conn:
            return await self._columns(conn, table)

    async def _columns(self, conn: AsyncConnection, table: str) -> list[tuple[str, str]] | None:
        rows = (
            await conn.execute(
                text(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND c.relname = :t AND a.attnum > 0 AND NOT a.attisdropped "
                    "ORDER BY a.attnum"
                ),
                {"s": self.schema, "t": table},
            )
        ).all()
        return [(r[0], r[1]) for r in rows] or None

    async def exists(self, conn: AsyncConnection, table: str) -> bool:
        found = await conn.execute(
            text("SELECT 1 FROM pg_tables WHERE schemaname = :s AND tablename = :t"), {"s": self.schema, "t": table}
        )
        return found.first() is not None

    def qualified(self, table: str) -> str:
        return f"{q(self.schema)}.{q(table)}"

    async def create_staging(self, conn: AsyncConnection, columns: list[tuple[str, str]]) -> None:
        await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {q(self.schema)}"))
        await conn.execute(text(f"DROP TABLE IF EXISTS {self.qualified(self.staging)}"))
        body = ", ".join(f"{q(name)} {sql}" for name, sql in columns)
        await conn.execute(text(f"CREATE TABLE {self.qualified(self.staging)} ({body})"))

    async def drop_staging(self, conn: AsyncConnection) -> None:
        await conn.execute(text(f"DROP TABLE IF EXISTS {self.qualified(self.staging)}"))

    async def swap(self, conn: AsyncConnection, table: str, mode: str, columns: list[str]) -> None:
        """Staging becomes the target: in the caller's transaction, so all or nothing."""
        target, staging = self.qualified(table), self.qualified(self.staging)
        if mode == "append" and await self.exists(conn, table):
            names = ", ".join(q(c) for c in columns)
            await conn.execute(text(f"INSERT INTO {target} ({names}) SELECT {names} FROM {staging} ORDER BY ctid"))
            await conn.execute(text(f"DROP TABLE {staging}"))
            return
        if mode == "replace":
            await conn.execute(text(f"DROP TABLE IF EXISTS {target}"))
        elif await self.exists(conn, table):
            raise ImportFailed(f"table {table!r} was created by someone else while this import ran")
        await conn.execute(text(f"ALTER TABLE {staging} RENAME TO {q(table)}"))

    # -- batches ------------------------------------------------------------------------
    def _prepare(self, chunk: bytes, first_line: int, marker: bool = True) -> bytes:
        if self.encoding not in PASS_THROUGH:
            chunk = decode(chunk, self.encoding, first_line).encode()
        return csv_scan.quote_copy_end_markers(chunk, self.quote_byte) if marker else chunk

    async def _copy(self, apg: asyncpg.Connection, pieces: AsyncIterator[Any], columns: list[str]) -> int:
        if apg.get_settings().standard_conforming_strings != "on":
            # asyncpg writes the delimiter, quote and null into COPY as '...' literals, which
            # only mean what they say (a backslash is a backslash) with this on
            await apg.execute("SET LOCAL standard_conforming_strings = on")
        status = await apg.copy_to_table(
            self.staging,
            source=pieces,
            schema_name=self.schema,
            columns=columns,
            format="csv",
            delimiter=self.params.delimiter,
            quote=self.params.quote,
            null=self.params.null,
        )
        return int(status.split()[-1])

    async def copy_batch(
        self,
        conn: AsyncConnection,
        batch: Batch,
        first_line: int,
        columns: list[str],
        rejects: Rejects | None,
        inferred: list[bool] | None = None,
    ) -> tuple[int, int, int]:
        """COPY the whole batch; returns (rows loaded, bytes consumed, lines consumed).

        A pause (or shutdown) does not wait for the batch: the COPY is cancelled on the server
        and TaskInterrupt rolls the batch back with its transaction; the next run redoes it
        from the previous checkpoint. So batches can be long (few commits) and pauses quick.
        """
        if self.ctx.stop_requested or self.halt.is_set():
            raise TaskInterrupt  # nothing sent yet, nothing to lose
        apg = await raw_connection(conn)
        whole = batch.chunks[0] if len(batch.chunks) == 1 else b"".join(batch.chunks)
        try:
            prepared = memoryview(self._prepare(whole, first_line, len(batch.chunks) > 1 or batch.has_end_marker))
        except csv_scan.CsvError as exc:  # not decodable in the declared encoding
            if rejects is None:
                raise ImportFailed(str(exc)) from None
            records = self._records([whole], first_line)
            rows = await self._unless_stopped(self._isolate(apg, records, columns, rejects, inferred))
            return rows, len(whole), batch.lines

        async def pieces() -> AsyncIterator[memoryview]:
            # COPY data may be split anywhere: zero-copy slices, record boundaries don't matter
            for start in range(0, len(prepared), COPY_PIECE_BYTES):
                yield prepared[start : start + COPY_PIECE_BYTES]

        if rejects is not None:
            await apg.execute("SAVEPOINT tsm_batch")
        try:
            rows = await self._unless_stopped(self._copy(apg, pieces(), columns))
        except ROW_ERRORS as exc:
            self._widen_for(exc, columns, inferred, lambda: self._records([whole], first_line))
            if rejects is None:
                raise ImportFailed(self._locate(exc, [whole], first_line)) from None
            await apg.execute("ROLLBACK TO SAVEPOINT tsm_batch")
            records = self._records([whole], first_line)
            rows = await self._unless_stopped(self._isolate(apg, records, columns, rejects, inferred))
        else:
            if rejects is not None:
                await apg.execute("RELEASE SAVEPOINT tsm_batch")
        return rows, len(whole), batch.lines

    async def _unless_stopped(self, work: Coroutine[Any, Any, int]) -> int:
        """Run ``work``; if a stop is requested first, cancel it (asyncpg cancels the server
        side too) and raise TaskInterrupt so the batch's transaction rolls back."""
        job = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.ctx.stop_event.wait())
        halt = asyncio.ensure_future(self.halt.wait())
        try:
            await asyncio.wait({job, stop, halt}, return_when=asyncio.FIRST_COMPLETED)
            if job.done():
                return job.result()
            raise TaskInterrupt
        finally:  # also when this task itself is cancelled: never leave a COPY running
            stop.cancel()
            halt.cancel()
            if not job.done():
                job.cancel()
                with contextlib.suppress(BaseException):
                    await job

    def _records(self, chunks: list[bytes], first_line: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        line = first_line
        for chunk in chunks:
            for record in csv_scan.split_records(chunk, self.quote_byte):
                out.append((line, record))
                line += record.count(b"\n")
        return out

    def _locate(self, exc: Exception, chunks: list[bytes], first_line: int) -> str:
        if isinstance(exc, csv_scan.CsvError):
            return str(exc)
        where = WHERE_RE.search(getattr(exc, "context", None) or "")
        reason = getattr(exc, "message", str(exc))
        if where is None:
            return f"lines {first_line}-: {reason}"
        records = self._records(chunks, first_line)
        value = VALUE_RE.search(getattr(exc, "context", None) or "")
        record = record_at(records, int(where.group(1)), value.group(3) if value else None)
        line = record[0] if record is not None else first_line
        column = f", column {where.group(2)}" if where.group(2) else ""
        return f"line {line}{column}: {reason}"

    def _widen_for(self, exc: Exception, columns: list[str], inferred: list[bool] | None, records: Any) -> None:
        """Raise TypeFallback if ``exc`` is a value that does not fit an inferred column's type."""
        if not inferred or getattr(exc, "sqlstate", None) not in TYPE_SQLSTATES:
            return
        found = VALUE_RE.search(getattr(exc, "context", None) or "")
        if found is None or found.group(2) not in columns:
            return
        index = columns.index(found.group(2))
        if not inferred[index]:
            return
        record = record_at(records(), int(found.group(1)), found.group(3))
        line = record[0] if record is not None else 0
        reason = getattr(exc, "message", str(exc))
        raise TypeFallback(columns[index], "", line, found.group(3), reason)

    async def _isolate(
        self,
        apg: asyncpg.Connection,
        records: list[tuple[int, bytes]],
        columns: list[str],
        rejects: Rejects,
        inferred: list[bool] | None = None,
    ) -> int:
        """Load ``records`` under savepoints, halving failing groups down to single bad records."""
        if not records:
            return 0
        if len(records) == 1:
            line, record = records[0]
            try:
                data = self._prepare(record, line)
            except csv_scan.CsvError as exc:
                rejects.add(line, None, exc.message, record.decode(self.encoding, "replace"))
                return 0
        else:
            data = b""
        await apg.execute("SAVEPOINT tsm_part")
        try:
            if len(records) == 1:
                rows = await self._copy(apg, _once(data), columns)
            else:
                joined = b"".join(self._prepare_or_fail(r) for r in records)
                rows = await self._copy(apg, _once(joined), columns)
        except (*ROW_ERRORS, csv_scan.CsvError) as exc:
            await apg.execute("ROLLBACK TO SAVEPOINT tsm_part")
            await apg.execute("RELEASE SAVEPOINT tsm_part")
            if len(records) == 1:
                line, record = records[0]
                self._widen_for(exc, columns, inferred, lambda: records)
                where = WHERE_RE.search(getattr(exc, "context", None) or "")
                column = where.group(2) if where and where.group(2) else None
                reason = getattr(exc, "message", str(exc))
                rejects.add(line, column, reason, record.decode(self.encoding, "replace"))
                return 0
            middle = len(records) // 2
            return await self._isolate(apg, records[:middle], columns, rejects, inferred) + await self._isolate(
                apg, records[middle:], columns, rejects, inferred
            )
        await apg.execute("RELEASE SAVEPOINT tsm_part")
        return rows

    def _prepare_or_fail(self, record: tuple[int, bytes]) -> bytes:
        return self._prepare(record[1], record[0])


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def record_at(records: list[tuple[int, bytes]], copy_line: int, value: str | None) -> tuple[int, bytes] | None:
    """The record a COPY error's "line N" means. In CSV, PostgreSQL counts newlines inside
    quoted fields too, except in the first record; where that and the plain record count
    disagree, the record holding the offending value decides."""
    candidates: list[int] = []
    line = 1
    for index, (_, record) in enumerate(records):
        if line == copy_line:
            candidates.append(index)
            break
        line += 1 + (record.count(b"\n") - 1 if index > 0 else 0)
    candidates.append(copy_line - 1)
    found = [records[i] for i in candidates if 0 <= i < len(records)]
    for candidate in found:
        if value is None or value.encode() in candidate[1]:
            return candidate
    return found[0] if found else None

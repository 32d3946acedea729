"""SQLite: parse in Python, insert in batches into the owner's tables file, exactly once.

The service's checkpoint lives in the service database, the rows in the owner's tables file
(``storage/tables/<owner>.sqlite3``). An ATTACHed database would share one transaction, but
SQLite documents that in WAL mode a commit across attached databases is atomic per file
only, not as a set. So the import keeps its *own* checkpoint inside the tables file:

    tables file:  BEGIN IMMEDIATE
                    INSERT INTO staging ...            (the batch)
                    UPSERT tsm_import_state(task_id)   (offset, line, rows, rejects)
                  COMMIT                               ← the truth
    service db:   ctx.checkpoint(same state)           ← a mirror for the API, and the pause point

A crash between the two commits leaves the mirror one batch behind, never ahead of the rows;
on resume the state in the tables file wins. Batch and state commit together or not at all,
so no row is lost or doubled. SQLite runs as one process (see TaskEngine.start), so there is
no second runner whose writes would need fencing by the lease token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics import ROWS_IMPORTED
from app.services.csv_import import scan as csv_scan
from app.services.csv_import.errors import ImportFailed, TypeFallback
from app.services.csv_import.loader import Commit, ImportCheckpoint, advance
from app.services.csv_import.rejects import Rejects
from app.services.csv_import.scan import CsvError
from app.services.csv_import.source import Batch, decode
from app.services.owners.namespaces import quote as q
from app.services.runtime.context import TaskContext, Work

STATE_DDL = "CREATE TABLE IF NOT EXISTS tsm_import_state (task_id TEXT PRIMARY KEY, state TEXT NOT NULL)"
# A pause waits for the current sub-chunk of a batch: keep batches short
BATCH_SECONDS = 0.15


class SqliteLoader:
    """The Loader for SQLite: staging and its own state in the owner's tables file, in threads."""

    schema = None
    split_batches = True
    batch_seconds = BATCH_SECONDS

    def __init__(self, ctx: TaskContext, params: Any, path: Path, staging: str, encoding: str) -> None:
        self.ctx, self.params = ctx, params
        self.path, self.staging, self.encoding = path, staging, encoding
        self.db: sqlite3.Connection | None = None

    def column_type(self, kind: str) -> str:
        return csv_scan.sql_type(kind, False)

    async def resume_state(self, checkpoint: ImportCheckpoint | None) -> ImportCheckpoint | None:
        return await asyncio.to_thread(self._load_state)  # the tables file's copy is the truth

    async def target_columns(self, table: str) -> list[tuple[str, str]] | None:
        return await asyncio.to_thread(self._target_columns, table)

    # -- the steps: the tables file commits first, the service's checkpoint mirrors it ----
    async def stage(self, columns: list[tuple[str, str]], state: ImportCheckpoint) -> None:
        await asyncio.to_thread(self._create_staging, columns, state)

    async def load(self, batch: Batch, state: ImportCheckpoint, rejects: Rejects | None, commit: Commit) -> None:
        rows = await asyncio.to_thread(self._write_batch, batch, state, rejects)
        ROWS_IMPORTED.inc(rows)
        await commit(None)

    def catch_up(self, rejects: Rejects | None) -> Work | None:
        # a crash may have come between the tables file's publish and the service's checkpoint
        return rejects.complete if rejects is not None else None

    async def publish(self, table: str, mode: str, columns: list[str], done: ImportCheckpoint) -> None:
        await asyncio.to_thread(self._publish, table, mode, columns, done)

    async def drop(self, conn: AsyncConnection) -> None:
        if self.path.exists():  # no tables file yet: nothing was staged
            await asyncio.to_thread(self._drop)

    def _connect(self) -> sqlite3.Connection:
        if self.db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(STATE_DDL)
            self.db = db
        return self.db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the tables file, taken at once (no upgrade from a read lock)."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):  # a cancelled run's thread may still hold it
                self.db.close()
            self.db = None

    # -- state and tables ---------------------------------------------------------------
    def _load_state(self) -> ImportCheckpoint | None:
        query = "SELECT state FROM tsm_import_state WHERE task_id = ?"
        row = self._connect().execute(query, (self.ctx.task_id,)).fetchone()
        return cast("ImportCheckpoint", json.loads(row[0])) if row else None

    def _save_state(self, db: sqlite3.Connection, state: ImportCheckpoint) -> None:
        db.execute(
            "INSERT INTO tsm_import_state (task_id, state) VALUES (?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state",
            (self.ctx.task_id, json.dumps(state)),
        )

    def exists(self, table: str) -> bool:
        found = self._connect().execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (table,)
        )
        return found.fetchone() is not None

    def _target_columns(self, table: str) -> list[tuple[str, str]] | None:
        if not self.exists(table):
            return None
        rows = self._connect().execute(f"PRAGMA table_info({q(table)})").fetchall()
        return [(r[1], r[2] or "") for r in rows]

    def _create_staging(self, columns: list[tuple[str, str]], state: ImportCheckpoint) -> None:
        with self._transaction() as db:
            db.execute(f"DROP TABLE IF EXISTS {q(self.staging)}")
            db.execute(f"CREATE TABLE {q(self.staging)} ({', '.join(f'{q(n)} {t}' for n, t in columns)})")
            self._save_state(db, state)

    def _publish(self, table: str, mode: str, columns: list[str], state: ImportCheckpoint) -> None:
        with self._transaction() as db:
            if mode == "append" and self.exists(table):
                names = ", ".join(q(c) for c in columns)
                db.execute(f"INSERT INTO {q(table)} ({names}) SELECT {names} FROM {q(self.staging)} ORDER BY rowid")
                db.execute(f"DROP TABLE {q(self.staging)}")
            else:
                if mode == "replace":
                    db.execute(f"DROP TABLE IF EXISTS {q(table)}")
                elif self.exists(table):
                    raise ImportFailed(f"table {table!r} was created by someone else while this import ran")
                db.execute(f"ALTER TABLE {q(self.staging)} RENAME TO {q(table)}")
            self._save_state(db, state)

    def _drop(self) -> None:
        """Cancel or permanent failure: no staging table and no state row remain."""
        with self._transaction() as db:
            db.execute(f"DROP TABLE IF EXISTS {q(self.staging)}")
            db.execute("DELETE FROM tsm_import_state WHERE task_id = ?", (self.ctx.task_id,))

    # -- batches ------------------------------------------------------------------------
    def _write_batch(self, batch: Batch, state: ImportCheckpoint, rejects: Rejects | None) -> int:
        """Insert the batch and save ``state`` (advanced here) in one transaction.

        Stops after any sub-chunk once a pause is pending. Returns the rows inserted.
        """
        first_line, columns, types = state["line"], state["columns"], state["types"]
        inferred = state.get("inferred") or [False] * len(columns)
        names, marks = ", ".join(q(c) for c in columns), ", ".join("?" * len(columns))
        insert = f"INSERT INTO {q(self.staging)} ({names}) VALUES ({marks})"
        rows = used_bytes = used_lines = 0
        try:
            with self._transaction() as db:
                for chunk in batch.chunks:
                    if used_bytes and self.ctx.stop_requested:
                        break
                    with csv_scan.paused_gc():
                        values = self._rows(chunk, first_line + used_lines, columns, types, inferred, rejects)
                    db.executemany(insert, values)
                    rows += len(values)
                    used_bytes += len(chunk)
                    used_lines += chunk.count(b"\n")
                advance(state, used_bytes, used_lines, rows, rejects)
                self._save_state(db, state)
        except BaseException:
            if rejects is not None:
                rejects.discard()
            raise
        return rows

    def _rows(
        self,
        chunk: bytes,
        first_line: int,
        columns: list[str],
        types: list[str],
        inferred: list[bool],
        rejects: Rejects | None,
    ) -> list[Any]:
        """Parse and convert a chunk column by column (fast); bad records → error or rejects."""
        p = self.params
        try:
            text = decode(chunk, self.encoding, first_line)
            rows, mapped = csv_scan.fast_rows(text, p.delimiter, p.quote, p.null)
        except CsvError:
            if rejects is None:
                raise
            return self._rows_one_by_one(chunk, first_line, columns, types, inferred, rejects)
        width = len(columns)
        lines: list[int] = []

        def line_of(index: int) -> int:
            if not lines:
                lines.extend(csv_scan.line_numbers(text, p.delimiter, p.quote))
            return first_line + lines[index]

        kept: list[list[str | None]] = []
        where: list[int] = []  # index in `rows` of each kept row
        errors: list[tuple[int, int, CsvError]] = []  # (line, index in rows, error)
        for index, values in enumerate(rows):
            if len(values) == width or (not values and width == 1):
                kept.append(values or [None])
                where.append(index)
            else:
                line = line_of(index)
                errors.append((line, index, CsvError(f"expected {width} fields, found {len(values)}", line)))
        cols = [list(c) for c in zip(*kept, strict=True)] if kept else []
        null = p.null
        bad: set[int] = set()
        for ci, kind in enumerate(types):
            if not kept:
                break
            if not mapped:
                cols[ci] = [None if v == null else v for v in cols[ci]]
            if kind == "text":
                continue
            try:
                cols[ci] = csv_scan.convert_column(cols[ci], kind)
            except (ValueError, OverflowError, KeyError):
                fixed: list[Any] = []
                for ri, value in enumerate(cols[ci]):
                    try:
                        fixed.append(None if value is None or ri in bad else csv_scan.convert(value, kind))
                    except ValueError as exc:
                        if inferred[ci]:  # a guessed type: widen the column rather than lose the row
                            line = line_of(where[ri])
                            raise TypeFallback(columns[ci], kind, line, value, str(exc)) from None
                        bad.add(ri)
                        fixed.append(None)
                        line = line_of(where[ri])
                        errors.append((line, where[ri], CsvError(str(exc), line, columns[ci])))
                cols[ci] = fixed
        if errors:
            errors.sort(key=lambda e: e[:2])
            if rejects is None:
                raise ImportFailed(str(errors[0][2]))
            records = csv_scan.split_records(chunk, ord(p.quote))
            for line, index, error in errors:
                raw = records[index] if len(records) == len(rows) else b""
                rejects.add(line, error.column, error.message, raw.decode(self.encoding, "replace"))
        out = list(zip(*cols, strict=True)) if cols else []
        return [r for i, r in enumerate(out) if i not in bad] if bad else out

    def _rows_one_by_one(
        self,
        chunk: bytes,
        first_line: int,
        columns: list[str],
        types: list[str],
        inferred: list[bool],
        rejects: Rejects,
    ) -> list[list[Any]]:
        p = self.params
        out: list[list[Any]] = []
        line = first_line
        for record in csv_scan.split_records(chunk, ord(p.quote)):
            try:
                parsed = csv_scan.parse_rows(decode(record, self.encoding, line), p.delimiter, p.quote, p.null)
                for _, values in parsed:
                    out.append(self._convert(values, columns, types, inferred, line))
            except CsvError as exc:
                rejects.add(line, exc.column, exc.message, record.decode(self.encoding, "replace"))
            line += record.count(b"\n")
        return out

    @staticmethod
    def _convert(
        values: list[str | None], columns: list[str], types: list[str], inferred: list[bool], line: int
    ) -> list[Any]:
        if len(values) != len(columns):
            if not values and len(columns) == 1:
                return [None]
            raise CsvError(f"expected {len(columns)} fields, found {len(values)}", line)
        row: list[Any] = values
        for index, kind in enumerate(types):
            value = values[index]
            if kind != "text" and value is not None:
                if row is values:
                    row = list(values)
                try:
                    row[index] = csv_scan.convert(value, kind)
                except ValueError as exc:
                    if inferred[index]:
                        raise TypeFallback(columns[index], kind, line, value, str(exc)) from None
                    raise CsvError(str(exc), line, columns[index]) from None
        return row

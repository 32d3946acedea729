"""Task kind ``import_csv``: a CSV file → a table, at COPY speed, pausable, exactly once.

    plan     header → column names, a sample → types, the file's fingerprint
    stage    CREATE TABLE tsm_import_<task> (same columns)         ┐ with the first checkpoint
    load     batch after batch, each with its checkpoint            │ PostgreSQL: COPY in the
             (byte offset, line, rows, rejects) in ONE transaction  │ checkpoint's transaction;
             pause: PG cancels the running batch (rolled back),     │ SQLite: see loader_sqlite
             SQLite stops it after the current sub-chunk
    publish  staging → target in one transaction: RENAME (create, replace) or INSERT ... SELECT
             (append); the user sees all rows or none
    cancel   DROP the staging table, delete the reject file: nothing remains

A resumed run checks the file's fingerprint and goes on from the checkpoint's byte offset.
An uploaded file is read from the configured ByteStore (on S3: ranged GETs, reader.py), a
``path=`` source from the local storage directory; the offsets mean the same either way.
A data error is permanent (no retry): the task fails with line, column and reason and its
staging table is dropped, so the target is untouched; with ``on_error=skip`` bad records go
to a reject CSV instead (a ``files`` row, downloadable at ``GET /files/{id}``). A database or
storage error is told in words, never as SQL: permanent if retrying cannot help (a name or a
limit the database refuses), retried from the checkpoint otherwise (connection, lock, disk).

Tables live in the owner's namespace (app.services.owners.namespaces), never beside the service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from typing import TYPE_CHECKING, Any, NoReturn, cast

import asyncpg
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.config import Settings
from app.errors import Conflict, TSMError, Unprocessable
from app.services.csv_import import scan as csv_scan
from app.services.csv_import.dialect import Dialect
from app.services.csv_import.errors import ImportFailed, TypeFallback
from app.services.csv_import.loader import CHECKPOINT_VERSION, Commit, ImportCheckpoint, Loader, as_json
from app.services.csv_import.loader_pg import PgLoader
from app.services.csv_import.loader_sqlite import SqliteLoader
from app.services.csv_import.parallel import ParallelLoad, loaded_bytes
from app.services.csv_import.params import ImportParams, append_columns, check_encoding, staging_name, target_columns
from app.services.csv_import.reader import Source
from app.services.csv_import.rejects import Rejects, remove_rejects
from app.services.csv_import.source import (
    BatchReader,
    Plan,
    RecordError,
    fingerprint,
    make_plan,
    resolve_source,
)
from app.services.files.stores import open_store
from app.services.owners.keys import Principal
from app.services.owners.namespaces import owner_schema, sqlite_tables_path
from app.services.runtime.context import TaskContext, Work
from app.services.runtime.kinds import TaskKind, task_kind

if TYPE_CHECKING:
    from app.services.files.store import ByteStore

FIRST_BATCH_BYTES = 1024 * 1024
MIN_BATCH_BYTES = 64 * 1024
# SQLSTATE classes that retrying cannot cure: feature, data, integrity, names, limits
PERMANENT_SQLSTATES = ("0A", "22", "23", "42", "54")
# SQLite primary result codes that retrying can cure: busy, locked, memory, I/O, full, open
TRANSIENT_SQLITE_CODES = frozenset({5, 6, 7, 10, 13, 14, 15})
STORAGE_ERRORS = (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error, OSError)

logger = logging.getLogger("tsm.imports")
# The loaders' words for a record with the wrong number of fields (SQLite's, PostgreSQL's)
FIELD_COUNT_RE = re.compile(r"expected \d+ fields, found \d+|extra data after last expected column|missing data for")


class ImportRetry(Exception):
    """The database or the storage failed; the next attempt goes on from the checkpoint."""


@task_kind("import_csv")
class ImportCsv(TaskKind[ImportParams]):
    params_model = ImportParams
    description = (
        "Load a CSV file (an upload or a storage path) into a table: COPY speed on PostgreSQL, "
        "batch by batch with its checkpoint, so pause/resume/cancel/crash lose and duplicate nothing."
    )

    async def prepare(
        self, params: ImportParams, principal: Principal, session: AsyncSession, settings: Settings
    ) -> None:
        await self.prepare_with_store(params, principal, session, settings, None)

    async def prepare_with_store(
        self,
        params: ImportParams,
        principal: Principal,
        session: AsyncSession,
        settings: Settings,
        store: ByteStore | None,
    ) -> None:
        plan = None  # a dry run before the upload has no file yet: the table is what it can check
        if params.file_id is not None or params.path is not None:
            plan = await self._first_record(params, principal, session, settings, store)
        target = await target_columns(session, settings, principal.owner, params.table)
        if target is not None and params.mode == "create":
            raise Conflict(f"table {params.table!r} already exists; use mode replace or append")
        if plan is not None and target is not None and params.mode == "append":
            try:
                append_columns(plan.names, target, plan.dialect.header)
            except ImportFailed as exc:
                raise Unprocessable(f"cannot append to {params.table!r}: {exc}") from None

    async def _first_record(
        self,
        params: ImportParams,
        principal: Principal,
        session: AsyncSession,
        settings: Settings,
        store: ByteStore | None,
    ) -> Plan:
        """The file's names from a tiny sample, read from ``store``. Called without one (plain
        prepare()) on a service whose uploads are on S3, it opens a client of its own."""
        async with contextlib.AsyncExitStack() as stack:
            if store is None and params.file_id is not None and settings.storage_url:
                store = await stack.enter_async_context(open_store(settings))
            source = await resolve_source(session, settings, principal, params.file_id, params.path, store)
            try:
                return await asyncio.to_thread(make_plan, source, params, 1)
            except csv_scan.CsvError as exc:
                raise Unprocessable(f"cannot read the file's first record: {exc}") from None

    # -- running --------------------------------------------------------------------------
    async def run(self, params: ImportParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        job = _Job(self, params, ctx)
        try:
            return await job.run(checkpoint)
        except (ImportFailed, csv_scan.CsvError, TSMError, UnicodeError) as exc:
            await job.give_up(job.hinted(exc.detail if isinstance(exc, TSMError) else str(exc)))
        except STORAGE_ERRORS as exc:
            message, permanent = describe_error(exc)
            if permanent:
                await job.give_up(message)
            raise ImportRetry(message) from None
        finally:
            job.close()

    async def cleanup(self, params: ImportParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> None:
        job = _Job(self, params, ctx)
        try:
            await job.discard()
        finally:
            job.close()


def open_loader(ctx: TaskContext, params: ImportParams, settings: Settings) -> Loader:
    """The one place that asks which database this is."""
    staging, encoding = staging_name(ctx.task_id), check_encoding(params.encoding)
    if ctx.is_postgres:
        schema = owner_schema(settings, ctx.owner)
        return PgLoader(ctx, params, schema, staging, encoding)
    return SqliteLoader(ctx, params, sqlite_tables_path(settings, ctx.owner), staging, encoding)


class _Job:
    """One run of one import task."""

    def __init__(self, kind: ImportCsv, params: ImportParams, ctx: TaskContext) -> None:
        self.params, self.ctx = params, ctx
        self.settings = ctx.settings
        self.loader = open_loader(ctx, params, self.settings)
        self.clock = time.monotonic()
        self.dialect: Dialect | None = None
        self.rejects: Rejects | None = None
        self.streams = 1  # COPY streams this run loaded with

    def use_dialect(self, state: ImportCheckpoint) -> None:
        """Parse with the dialect the import started with (a checkpoint from before sniffing
        existed has none: its params' values, or the old defaults, were what it used)."""
        params = self.params
        legacy = {
            "delimiter": params.delimiter or ",",
            "quote": params.quote or '"',
            "header": True if params.header is None else params.header,
        }
        self.dialect = Dialect.from_json(state.get("dialect") or legacy)
        dialect = {"delimiter": self.dialect.delimiter, "quote": self.dialect.quote, "header": self.dialect.header}
        self.params = params.model_copy(update=dialect)
        self.loader.params = self.params

    def hinted(self, message: str) -> str:
        """A field-count error says which delimiter the file seems to use instead."""
        if self.dialect is None or not FIELD_COUNT_RE.search(message):
            return message
        return message + self.dialect.hint()

    def close(self) -> None:
        self.loader.close()
        if self.rejects is not None:
            self.rejects.close()

    def tick(self, state: ImportCheckpoint) -> None:
        now = time.monotonic()
        state["seconds"] = round(state.get("seconds", 0.0) + now - self.clock, 3)
        self.clock = now
        state["rows_per_second"] = round(state["rows"] / state["seconds"]) if state["seconds"] > 0 else None
        self.ctx.progress(loaded_bytes(state), state["source"]["size"], "bytes")

    async def give_up(self, message: str) -> NoReturn:
        """A permanent failure: no retry, nothing left behind, the reason as the task's error."""
        self.ctx.attempts = self.ctx.max_attempts
        try:
            await self.discard()
        except STORAGE_ERRORS:
            logger.warning("could not remove the failed import's staging table and rejects", exc_info=True)
        raise ImportFailed(message) from None

    async def discard(self) -> None:
        """Idempotent: also when nothing was staged yet, or it was already removed."""
        async with self.ctx.begin() as conn:
            await self.loader.drop(conn)
            await remove_rejects(conn, self.ctx.store, self.ctx.task_id)

    async def run(self, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
        params = self.params
        async with self.ctx.session() as session:
            path = await resolve_source(session, self.settings, None, params.file_id, params.path, self.ctx.store)
        state = await self.loader.resume_state(cast("ImportCheckpoint | None", checkpoint))
        if state is None or state.get("v") != CHECKPOINT_VERSION:
            state = await self.start(path)
        elif await asyncio.to_thread(fingerprint, path) != state["source"]:
            raise ImportFailed("the source file changed since the import started; start a new import")
        self.use_dialect(state)
        rejects = None
        if params.on_error == "skip":
            size, mark = state["reject_bytes"], state.get("reject_multipart")
            rejects = await Rejects.open(self.ctx.store, self.ctx.task_id, self.ctx.owner, params.table, size, mark)
            self.rejects = rejects
        if state["phase"] == "load":
            while True:
                try:
                    await self.load(path, state, rejects)
                    break
                except TypeFallback as fallback:
                    await self.widen(state, fallback, rejects)
            self.check_error_limit(state, final=True)
            await self.publish(state, rejects)
        elif (work := self.loader.catch_up(rejects)) is not None:
            await self.ctx.checkpoint(as_json(state), work=work)
        return self.result(state, rejects)

    async def start(self, path: Source) -> ImportCheckpoint:
        params = self.params
        source = await asyncio.to_thread(fingerprint, path)
        sample = params.sample_records or self.settings.import_sample_records
        plan = await asyncio.to_thread(make_plan, path, params, sample)
        target = await self.loader.target_columns(params.table)
        if target is not None and params.mode == "create":
            raise ImportFailed(f"table {params.table!r} already exists; use mode replace or append")
        if target is not None and params.mode == "append":
            columns = append_columns(plan.names, target, plan.dialect.header)
            staging = target
            declared = dict(target)
            types = [csv_scan.converter_for(declared[c]) for c in columns]
            inferred = [False] * len(columns)  # the table's types are the law
        else:
            columns, types = plan.names, plan.types
            staging = [(n, self.loader.column_type(t)) for n, t in zip(columns, types, strict=True)]
            explicit = [c.type is not None for c in params.columns] if params.columns else [False] * len(columns)
            inferred = [params.infer_types and not given for given in explicit]
        state: ImportCheckpoint = {
            "v": CHECKPOINT_VERSION,
            "phase": "load",
            "offset": plan.data_start,
            "end": plan.data_end,
            "line": plan.first_line,
            "rows": 0,
            "rejects": 0,
            "reject_bytes": 0,
            "columns": columns,
            "types": types,
            "renamed": plan.renamed,
            "source": source,
            "seconds": 0.0,
            "rows_per_second": None,
            "dialect": plan.dialect.as_json(),
            "inferred": inferred,
            "start": plan.data_start,
            "first_line": plan.first_line,
            "fallbacks": [],
        }
        logger.info(
            "import %s: dialect %s, types from %d sampled records", self.ctx.task_id, plan.dialect, plan.sampled
        )
        self.tick(state)
        await self.ctx.checkpoint(as_json(state), work=await self.loader.stage(staging, state))
        return state

    async def load(self, path: Source, state: ImportCheckpoint, rejects: Rejects | None) -> None:
        """Batch after batch, the next one read while the current one is written.

        Batch sizes adapt to take about the loader's batch_seconds (up to import_batch_bytes):
        on PostgreSQL a pause cancels the running batch, so long batches cost nothing there; on
        SQLite a batch stops after its current sub-chunk, so they must stay short.
        """
        most = self.settings.import_batch_bytes
        size = min(most, FIRST_BATCH_BYTES)
        split = self.loader.split_batches
        reader = BatchReader(path, state["end"], most, ord(self.params.quote or '"'), split=split)
        streams = self.settings.import_streams
        if isinstance(self.loader, PgLoader) and rejects is None and (streams > 1 or state.get("loaded")):
            sizes = (size, min(most, MIN_BATCH_BYTES), most)
            self.streams = streams
            await ParallelLoad(self.ctx, self.loader, reader, state, streams, self.tick, sizes).run()
            return
        pending = asyncio.ensure_future(asyncio.to_thread(reader.read, state["offset"], size))
        try:
            while True:
                try:
                    batch = await pending
                except RecordError as exc:
                    raise ImportFailed(f"line {state['line'] + exc.lines}: {exc.message}") from None
                if batch is None:
                    return
                pending = asyncio.ensure_future(asyncio.to_thread(reader.read, batch.end, size))
                began, offset = time.perf_counter(), state["offset"]
                await self.loader.load(batch, state, rejects, self.committer(state, rejects))
                self.check_error_limit(state)
                elapsed = time.perf_counter() - began
                if state["offset"] == batch.end and elapsed > 0:
                    rate = (state["offset"] - offset) / elapsed
                    target = self.loader.batch_seconds
                    size = int(max(min(most, MIN_BATCH_BYTES), min(most, rate * target)))
                if state["offset"] != batch.end:  # stopped early, then the pause was withdrawn
                    await asyncio.wait([pending])
                    pending = asyncio.ensure_future(asyncio.to_thread(reader.read, state["offset"], size))
        finally:
            # A prefetch may still be reading: don't make a pause wait for it; close after it.
            def finish(read: asyncio.Future[Any]) -> None:
                if not read.cancelled():
                    read.exception()  # retrieved: an error of a read nobody needs is not news
                reader.close()

            if pending.done():
                finish(pending)
            else:
                pending.add_done_callback(finish)

    async def widen(self, state: ImportCheckpoint, fallback: TypeFallback, rejects: Rejects | None) -> None:
        """An inferred type met a value it cannot hold: widen that column and start over, in one
        checkpoint with a new empty staging table, so rows and their state still commit together."""
        index = state["columns"].index(fallback.column)
        old = state["types"][index]
        new = csv_scan.merge_type(old, csv_scan.value_type(fallback.value))
        new = "text" if new == old else new  # always wider: every column widens at most three times
        state["types"][index] = new
        note = (
            f"column {fallback.column}: inferred {old}, but line {fallback.line} has {fallback.value[:80]!r} "
            f"({fallback.reason}); widened to {new} and the import restarted from the first record"
        )
        state.setdefault("fallbacks", []).append(
            {"column": fallback.column, "from": old, "to": new, "line": fallback.line, "message": note}
        )
        logger.info("import %s: %s", self.ctx.task_id, note)
        state["offset"], state["line"] = state["start"], state["first_line"]
        state["rows"] = state["rejects"] = state["reject_bytes"] = 0
        state["loaded"] = []
        staging = [(n, self.loader.column_type(t)) for n, t in zip(state["columns"], state["types"], strict=True)]
        if rejects is not None:
            await rejects.reset()
        stage = await self.loader.stage(staging, state)

        async def restart(conn: AsyncConnection) -> None:
            if stage is not None:
                await stage(conn)
            await remove_rejects(conn, self.ctx.store, self.ctx.task_id)

        self.tick(state)
        await self.ctx.checkpoint(as_json(state), work=restart)

    def check_error_limit(self, state: ImportCheckpoint, final: bool = False) -> None:
        """Past ``max_errors`` the import fails (and give_up leaves nothing behind). A count is
        checked after every batch; a fraction once all records are read."""
        limit = self.params.max_errors
        if limit is None:
            return
        rejected, records = state["rejects"], state["rows"] + state["rejects"]
        if isinstance(limit, float):
            if final and rejected > limit * records:
                raise ImportFailed(
                    f"{rejected:,} of {records:,} records rejected, more than max_errors {limit:g} "
                    f"({limit:.2%}); nothing was imported"
                )
        elif rejected > limit:
            raise ImportFailed(f"more than max_errors {limit:,} records rejected; nothing was imported")

    def committer(self, state: ImportCheckpoint, rejects: Rejects | None) -> Commit:
        """A batch's checkpoint: the loader's work, the reject file's row, then the clock."""

        async def commit(work: Work | None) -> None:
            async def batch(conn: AsyncConnection) -> None:
                if work is not None:
                    await work(conn)
                if rejects is not None:
                    await rejects.keep(state)  # PostgreSQL: sealed by the batch's work just now
                    await rejects.ensure_row(conn)
                self.tick(state)

            await self.ctx.checkpoint(as_json(state), work=batch)

        return commit

    async def publish(self, state: ImportCheckpoint, rejects: Rejects | None) -> None:
        params = self.params
        done: ImportCheckpoint = {**state, "phase": "done"}
        self.tick(done)
        swap = await self.loader.publish(params.table, params.mode, state["columns"], done)

        async def final(conn: AsyncConnection) -> None:
            if swap is not None:
                await swap(conn)
            if rejects is not None:
                await rejects.complete(conn)

        await self.ctx.checkpoint(as_json(done), work=final, final=True)  # published: the task has finished
        state.update(done)
        if rejects is not None:
            await rejects.settle()

    def result(self, state: ImportCheckpoint, rejects: Rejects | None) -> dict[str, Any]:
        return {
            "table": self.params.table,
            "schema": self.loader.schema,
            "mode": self.params.mode,
            "rows": state["rows"],
            "rejected": state["rejects"],
            "reject_file_id": rejects.file_id if rejects is not None and state["rejects"] else None,
            "columns": [{"name": n, "type": t} for n, t in zip(state["columns"], state["types"], strict=True)],
            "renamed": state.get("renamed", []),
            "bytes": state["source"]["size"],
            "seconds": state.get("seconds"),
            "rows_per_second": state.get("rows_per_second"),
            "dialect": {k: v for k, v in (state.get("dialect") or {}).items() if k != "looks"} or None,
            "fallbacks": state.get("fallbacks", []),
            "streams": self.streams,
        }


def describe_error(exc: BaseException) -> tuple[str, bool]:
    """(what to tell the owner, whether retrying cannot help) for a database or storage error:
    the database's own message, never the statement or a stack trace."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig.__cause__ if isinstance(exc.orig.__cause__, asyncpg.PostgresError) else exc.orig
        return describe_error(cause)
    if isinstance(exc, asyncpg.PostgresError):
        message = str(getattr(exc, "message", "") or type(exc).__name__)
        return f"database error: {message}", str(exc.sqlstate or "").startswith(PERMANENT_SQLSTATES)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return f"database error: {exc}", code is not None and code & 0xFF not in TRANSIENT_SQLITE_CODES
    if isinstance(exc, OSError):
        return f"storage error: {exc.strerror or type(exc).__name__}", False
    return f"database unavailable: {type(exc).__name__}", False

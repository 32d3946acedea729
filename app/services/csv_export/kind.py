"""Built-in kind ``export_csv``: a table of the owner's data namespace → a CSV file in the store.

    create: check table / columns / key / filters ─▶ 201 (or 404 / 422)
    run:    files row (state "writing") + first checkpoint, in one transaction
            repeat: page → hand to the result writer → kept → checkpoint(position, byte offset,
                    rows, the writer's mark), the files row's offset and multipart with it
            done:   the writer makes the file whole, files row "complete" (GET /files/{id})
    resume: the writer continues from the checkpoint's mark (local: the file cut back to its
            offset; S3: the same multipart upload, its listed parts and tail), from its position
    cancel, or a final failure: purge the file's bytes and delete its row (the engine runs the cleanup)
    quota:  every checkpoint counts the file toward the owner's storage quota; past it the task
            fails ("storage quota exceeded: …") and so its file is removed

So a resumed export, after a pause or a crash, writes exactly the bytes an uninterrupted one
would. On PostgreSQL the pages are read ``export_parallel`` at a time, all of one run in one
snapshot, and handed to the writer in order (source_pg.py); a resumed run reads the rest in a new
snapshot, so rows changed while the export was paused may or may not appear in it. SQLite reads
page by page, each page consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

from pydantic import Field, field_validator, model_validator
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.errors import NotFound, Unprocessable
from app.metrics import ROWS_EXPORTED
from app.models import File, new_id, utcnow
from app.services.csv_export.plan import ExportPlan, FilterSpec, Source, csv_line
from app.services.csv_export.source_pg import PgSource
from app.services.csv_export.source_sqlite import SqliteSource
from app.services.files.results import Mark, ResultLost, ResultWriter
from app.services.owners.keys import OWNER_PATTERN
from app.services.owners.limits import QuotaExceeded, check_storage
from app.services.owners.namespaces import owner_schema, sqlite_tables_path, validate_identifier
from app.services.runtime.bus import asyncpg_dsn
from app.services.runtime.kinds import KindParams, TaskContext, TaskKind, Work, task_kind

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.services.owners.keys import Principal

logger = logging.getLogger("tsm.exports")

Scalar = str | bool | int | float
Operator = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "like", "not_like", "is_null", "not_null"]
MAX_IN_VALUES = 1000


class _ExportProgress(TypedDict):
    """The keys every export checkpoint has; ExportCheckpoint adds the final one."""

    file_id: str  # the files row being written (state "writing", then "complete")
    filename: str
    key: list[str]  # the order key pages follow; a resume refuses a table whose key changed
    position: Any  # the source's opaque JSON: where the next page starts (None: the beginning)
    offset: int  # the file's durable length, in bytes
    rows: int  # rows written so far
    total: int  # the rows expected, from the source's estimate
    exact: bool  # whether ``total`` is an exact count
    session: dict[str, Any]  # the source's settings that shape the text, for a resume to match


class ExportCheckpoint(_ExportProgress, total=False):
    """An export task's checkpoint (the JSON in ``tasks.checkpoint``)."""

    finished: bool  # set by the final checkpoint: the file is complete
    # The result writer's state at ``offset`` (S3's upload, parts and tail; None on the local
    # directory). Optional: a checkpoint from before the store had none, and was local.
    multipart: dict[str, Any] | None


def _as_json(state: ExportCheckpoint) -> dict[str, Any]:
    """The checkpoint as the task runtime stores it (a plain JSON object)."""
    return cast("dict[str, Any]", state)  # a TypedDict is a dict at run time


def _no_nul(text: str, what: str) -> str:
    if "\x00" in text:
        raise ValueError(f"{what} must not contain NUL characters")
    return text


class ExportFilter(KindParams):
    """One condition; all conditions must hold. Comparisons never match NULL: use is_null."""

    column: str = Field(min_length=1, max_length=255)
    op: Operator = Field(description="eq ne lt le gt ge in not_in like not_like is_null not_null")
    value: Scalar | list[Scalar] | None = Field(
        None, description="A scalar; a list for in/not_in; a pattern (% and _) for like; none for *_null."
    )

    @model_validator(mode="after")
    def _value_fits_op(self) -> ExportFilter:
        op, value = self.op, self.value
        if op in ("is_null", "not_null"):
            if value is not None:
                raise ValueError(f"op {op!r} takes no value")
        elif op in ("in", "not_in"):
            if not isinstance(value, list) or not value or len(value) > MAX_IN_VALUES:
                raise ValueError(f"op {op!r} needs a list of 1 to {MAX_IN_VALUES} values")
        elif value is None or isinstance(value, list):
            raise ValueError(f"op {op!r} needs one value (use is_null / not_null for NULL)")
        elif op in ("like", "not_like") and not isinstance(value, str):
            raise ValueError(f"op {op!r} needs a text pattern")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                _no_nul(item, "a filter value")
        return self


class ExportParams(KindParams):
    table: str = Field(description="A table in your data namespace (where imports put them).", examples=["sales"])
    owner: str | None = Field(None, description="Admins only: export from this owner's namespace.")
    columns: list[str] | None = Field(
        None, min_length=1, max_length=1600, description="Columns to write, in this order (default: all)."
    )
    order_by: list[str] | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="A unique NOT NULL key to page by (default: primary key, else a unique "
        "NOT NULL column, else the physical row order).",
    )
    filters: list[ExportFilter] = Field(default_factory=list, max_length=32)
    header: bool = Field(True, description="Write a header line with the column names.")
    delimiter: str = Field(",", min_length=1, max_length=1)
    null: str = Field("", max_length=64, description="How NULL is written (an empty text is then quoted).")
    quoting: Literal["minimal", "all"] = Field(
        "minimal", description="minimal: quotes only where needed; all: every value but NULL in quotes."
    )
    filename: str | None = Field(None, min_length=1, max_length=255, description="Default: <table>.csv")

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        try:
            return validate_identifier(value, "table")
        except Unprocessable as exc:
            raise ValueError(exc.detail) from None

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        if value is not None and not OWNER_PATTERN.fullmatch(value):
            raise ValueError("owner must be 1-32 lowercase letters, digits and _, starting with a letter")
        return value

    @field_validator("order_by", mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("columns", "order_by")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if not name or len(name) > 255:
                raise ValueError("a column name has 1 to 255 characters")
            _no_nul(name, "a column name")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a column is named twice")
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if (value != "\t" and not (" " <= value <= "~")) or value in '"\r\n':
            raise ValueError("the delimiter must be one printable ASCII character (or a tab), not a quote")
        return value

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str | None) -> str | None:
        if value is not None and (
            value in (".", "..") or any(c in value for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in value)
        ):
            raise ValueError("a file name has no path separators or control characters")
        return value

    @model_validator(mode="after")
    def _null_string(self) -> ExportParams:
        if any(c in self.null for c in '\r\n"\x00') or self.delimiter in self.null:
            raise ValueError("the null string must not contain the delimiter, a quote, a line break or NUL")
        return self

    def plan(self) -> ExportPlan:
        return ExportPlan(
            table=self.table,
            columns=self.columns,
            order_by=self.order_by,
            filters=[FilterSpec(f.column, f.op, f.value) for f in self.filters],
            delimiter=self.delimiter,
            null=self.null,
            quoting=self.quoting,
        )


def _source_owner(params: ExportParams, principal: Principal) -> str:
    if params.owner is None or params.owner == principal.owner:
        return principal.owner
    if principal.is_admin:
        return params.owner
    raise NotFound(f"no table {params.table!r}")  # the same answer as for a table that is not there


async def open_source(
    settings: Settings, url: str, owner: str, params: ExportParams, session: dict[str, Any] | None = None
) -> Source:
    if url.startswith("sqlite"):
        return await SqliteSource.open(sqlite_tables_path(settings, owner), params.plan())
    schema = owner_schema(settings, owner)
    return await PgSource.open(
        asyncpg_dsn(url), schema, params.plan(), settings.export_page_rows, session, settings.export_streams
    )


def _files_work(ctx: TaskContext, file_id: str, size: int, **values: Any) -> Work:
    """The checkpoint's update of the export's file row, now ``size`` bytes: within the quota."""

    async def work(conn: AsyncConnection) -> None:
        await check_storage(conn, ctx.settings, ctx.owner, size, what="this export", exclude=file_id)
        # The row names the multipart upload too, so whatever deletes the row can abort it.
        result = await conn.execute(
            update(File).where(File.id == file_id).values(updated_at=utcnow(), offset=size, **values)
        )
        if result.rowcount == 0:  # rolls the checkpoint back with it
            raise RuntimeError(f"the export's file {file_id} was deleted")

    return work


async def remove_export(ctx: TaskContext, checkpoint: dict[str, Any] | None) -> None:
    """Delete every file this task made (bytes first, then the row)."""
    async with ctx.session() as session, session.begin():
        mine = select(File.id).where(File.task_id == ctx.task_id, File.origin == "export")
        ids = set((await session.execute(mine)).scalars())
        if checkpoint and checkpoint.get("file_id"):
            ids.add(checkpoint["file_id"])
        for file_id in ids:
            await ctx.store.purge(file_id)  # on S3 also the multipart upload and its tail segments
        await session.execute(delete(File).where(File.id.in_(ids)))


def _result(state: ExportCheckpoint) -> dict[str, Any]:
    return {
        "file_id": state["file_id"],
        "filename": state["filename"],
        "rows": state["rows"],
        "bytes": state["offset"],
        "order_key": state["key"],
        "download": f"/files/{state['file_id']}",
    }


@task_kind("export_csv")
class ExportCsv(TaskKind[ExportParams]):
    params_model = ExportParams
    description = (
        "Write a table of your data namespace to a CSV file (then `GET /files/{id}`), page by page; "
        "pause, resume or crash at any point and the file is byte-identical to an uninterrupted run."
    )

    async def prepare(
        self, params: ExportParams, principal: Principal, session: AsyncSession, settings: Settings
    ) -> None:
        owner = _source_owner(params, principal)
        source = await open_source(settings, settings.effective_database_url, owner, params)
        await source.close()

    async def run(self, params: ExportParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        saved = cast("ExportCheckpoint | None", checkpoint)
        if saved and saved.get("finished"):
            return _result(saved)
        settings = ctx.settings
        owner = params.owner or ctx.owner
        session = saved.get("session") if saved else None
        source: Source | None = None
        try:
            source = await open_source(settings, ctx.database_url, owner, params, session)
            return await self._export(params, saved, source, ctx)
        except QuotaExceeded:
            ctx.attempts = ctx.max_attempts  # a retry would only fill the quota again
            raise
        finally:
            if source is not None:
                await source.close()

    async def cleanup(self, params: ExportParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> None:
        await remove_export(ctx, checkpoint)

    async def _start(self, params: ExportParams, source: Source, ctx: TaskContext) -> ExportCheckpoint:
        total, exact = await source.estimate()
        file_id = new_id()
        state: ExportCheckpoint = {
            "file_id": file_id,
            "filename": params.filename or f"{params.table}.csv",
            "key": source.key,
            "position": None,
            "offset": 0,
            "multipart": None,
            "rows": 0,
            "total": total,
            "exact": exact,
            "session": source.session_state(),
        }

        async def create_file(conn: AsyncConnection) -> None:
            await check_storage(conn, ctx.settings, ctx.owner, 0, what="this export")
            now = utcnow()
            await conn.execute(
                insert(File).values(
                    id=file_id,
                    owner=ctx.owner,
                    origin="export",
                    filename=state["filename"],
                    content_type="text/csv",
                    metadata_={"table": params.table, "owner": params.owner or ctx.owner},
                    offset=0,
                    state="writing",
                    task_id=ctx.task_id,
                    created_at=now,
                    updated_at=now,
                )
            )

        await ctx.checkpoint(_as_json(state), done=0, total=total, unit="rows", work=create_file)
        return state

    async def _export(
        self, params: ExportParams, checkpoint: ExportCheckpoint | None, source: Source, ctx: TaskContext
    ) -> dict[str, Any]:
        state = checkpoint.copy() if checkpoint else await self._start(params, source, ctx)
        if state["key"] != source.key:
            raise RuntimeError(
                f"table {params.table!r} changed since the export started: its order key is now "
                f"{source.key}, not {state['key']}"
            )
        writer, state = await _open_writer(ctx, state, resumed=checkpoint is not None)
        try:
            if state["offset"] == 0 and params.header:
                await writer.write(csv_line(source.columns, params.delimiter, params.null).encode())
            ctx.progress(state["rows"], state["total"], "rows")
            limit = ctx.settings.export_page_rows
            # Page N is kept and checkpointed in the background while page N+1 is fetched; it
            # must be committed (the lease still ours, no pause asked) before N+1 is written.
            commit: asyncio.Task[None] | None = None
            try:
                async with contextlib.aclosing(source.pages(state["position"], limit)) as pages:
                    async for page in pages:
                        if commit is not None:
                            await commit  # in order; and where a pause or cancel stops the export
                        durable = await writer.hand_off(*page.chunks)
                        rows = state["rows"] + page.rows
                        state = {**state, "position": page.position, "offset": writer.offset, "rows": rows}
                        commit = asyncio.create_task(_commit(ctx, state, durable, page.rows))
                if commit is not None:
                    await commit
            finally:
                if commit is not None and not commit.done():
                    await asyncio.wait([commit])
            length = await writer.finish()
        finally:
            await writer.aclose()
        state = {**state, "offset": length, "multipart": None, "finished": True}
        done = _files_work(
            ctx, state["file_id"], length, length=length, state="complete", completed_at=utcnow(), multipart=None
        )
        await ctx.checkpoint(
            _as_json(state), done=state["rows"], total=state["rows"], unit="rows", work=done, final=True
        )
        await writer.settle()
        return _result(state)


async def _open_writer(
    ctx: TaskContext, state: ExportCheckpoint, *, resumed: bool
) -> tuple[ResultWriter, ExportCheckpoint]:
    """The result writer where the checkpoint left it; a file lost under the task starts over."""
    store, file_id = ctx.store, state["file_id"]
    mark: Mark | None = {"offset": state["offset"], "multipart": state.get("multipart")}
    if state["offset"] == 0 and not state.get("multipart"):
        mark = None
        if resumed:  # a run that died before its first page may have begun a multipart upload
            await store.purge(file_id)
    try:
        return await store.open_result(file_id, mark), state
    except ResultLost as exc:
        logger.warning("export %s: %s; starting over", ctx.task_id, exc)
    await store.purge(file_id)
    state = {**state, "position": None, "offset": 0, "multipart": None, "rows": 0}
    return await store.open_result(file_id, None), state


async def _commit(ctx: TaskContext, state: ExportCheckpoint, durable: asyncio.Future[Mark], rows: int) -> None:
    mark = await durable
    state["multipart"] = mark["multipart"]  # what the store holds: exactly ``offset`` bytes
    try:
        await ctx.checkpoint(
            _as_json(state),
            done=state["rows"],
            total=max(state["total"], state["rows"]),
            unit="rows",
            work=_files_work(ctx, state["file_id"], state["offset"], multipart=mark["multipart"]),
        )
    finally:
        if ctx.checkpoint_state is state:  # counted once it is committed
            ROWS_EXPORTED.inc(rows)

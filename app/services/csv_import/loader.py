"""What both loaders share: the import's checkpoint and the contract the job drives them by.

One loader per database, chosen once when a run starts; the job never asks which one it has::

    resume_state(checkpoint) ─▶ the state to go on from (or None: start over)
    target_columns(table)    ─▶ an existing target's columns, for create / replace / append
    stage(columns, state)    ─▶ work for the first checkpoint  ┐ each loader's part of a commit:
    load(batch, state, …)    ─▶ commit(work) once per batch     │ PostgreSQL writes inside the
    publish(…, done)         ─▶ work for the final checkpoint   │ checkpoint's transaction,
    catch_up(rejects)        ─▶ work to re-mirror a publish     │ SQLite in its own tables file
    drop(conn)               ─▶ staging and private state gone  ┘ first (see loader_sqlite)

Whatever a loader commits on its side, it commits with the same ``ImportCheckpoint`` the
service stores, so rows and their checkpoint are never apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, cast

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from app.services.csv_import.rejects import Rejects
    from app.services.csv_import.source import Batch, SourceFingerprint
    from app.services.runtime.context import Work

# The checkpoint's layout version; a run that finds another one starts over.
CHECKPOINT_VERSION = 1


class _ImportProgress(TypedDict):
    """The keys every import checkpoint has; ImportCheckpoint adds the later ones."""

    v: int  # CHECKPOINT_VERSION
    phase: Literal["load", "done"]  # done: published into the target
    offset: int  # the source's byte offset loaded up to
    end: int  # the byte offset where the data ends
    line: int  # the source line at ``offset`` (for error messages)
    rows: int  # rows loaded so far; the runtime's watch stream shows it as live progress
    rejects: int  # records sent to the reject file so far
    reject_bytes: int  # the reject file's durable size at this checkpoint
    columns: list[str]  # the staging table's column names, in file order
    types: list[str]  # their converter kinds (scan.converter_for / infer_types)
    renamed: list[dict[str, str]]  # header → column name, where they differ
    source: SourceFingerprint  # the file as first seen: a resume refuses one that changed
    seconds: float  # time spent loading, over all runs
    rows_per_second: int | None  # rows / seconds, once seconds > 0


class ImportCheckpoint(_ImportProgress, total=False):
    """An import task's checkpoint (the JSON in ``tasks.checkpoint``; SQLite keeps a copy too).

    The optional keys came later: a checkpoint without them is from a run that neither sniffed
    its dialect nor could widen a column, and resumes as such."""

    dialect: dict[str, Any]  # Dialect.as_json(): what the whole import parses with
    inferred: list[bool]  # per column: its type was guessed, so it may be widened
    start: int  # the first data record's byte offset and line, for a restart
    first_line: int
    fallbacks: list[dict[str, Any]]  # columns widened during the load, and why
    reject_multipart: dict[str, Any] | None  # the reject file's writer mark at reject_bytes (S3)
    loaded: list[list[int]]  # parallel loads: [start, end, lines] committed beyond ``offset``


# One checkpoint: the caller commits ``state`` with ``work`` (if any) in one transaction.
Commit = Callable[["Work | None"], Awaitable[None]]


class Loader(Protocol):
    """A database's way to stage, load and publish one import; idempotent to redo after a crash."""

    params: Any  # the import's params with the dialect resolved (set before load)

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema tables land in; None where there is none (SQLite: a file)."""
        ...

    @property
    def split_batches(self) -> bool:
        """Read batches in sub-chunks, so that a pause can stop one between them."""
        ...

    @property
    def batch_seconds(self) -> float:
        """How long one batch should take to write (a pause may have to wait for it)."""
        ...

    def column_type(self, kind: str) -> str:
        """The staging column's SQL type for an inferred converter kind."""
        ...

    async def resume_state(self, checkpoint: ImportCheckpoint | None) -> ImportCheckpoint | None:
        """The state committed with the rows: the service's checkpoint or the loader's own copy."""
        ...

    async def target_columns(self, table: str) -> list[tuple[str, str]] | None:
        """(name, SQL type) of the target table's columns, or None if it does not exist."""
        ...

    async def stage(self, columns: list[tuple[str, str]], state: ImportCheckpoint) -> Work | None:
        """Create the empty staging table; the returned work runs in the first checkpoint."""
        ...

    async def load(self, batch: Batch, state: ImportCheckpoint, rejects: Rejects | None, commit: Commit) -> None:
        """Write one batch, advance ``state`` past it and ``commit`` once, rows with their state.

        A pause may cut the batch short (``state`` then ends where the rows do) or roll it back.
        Imported rows are counted in the metrics once they are committed.
        """
        ...

    def catch_up(self, rejects: Rejects | None) -> Work | None:
        """On a run that finds the import published: work the service's mirror may still lack."""
        ...

    async def publish(self, table: str, mode: str, columns: list[str], done: ImportCheckpoint) -> Work | None:
        """Staging becomes the target (all rows or none); the work runs in the final checkpoint."""
        ...

    async def drop(self, conn: AsyncConnection) -> None:
        """Cancel or permanent failure: remove staging and private state, within or beside ``conn``'s
        transaction on the service database. Idempotent, also when nothing was staged."""
        ...

    def close(self) -> None: ...


def advance(state: ImportCheckpoint, used: int, lines: int, rows: int, rejects: Rejects | None) -> None:
    """Move ``state`` past a written batch part, with the rejects it produced sealed (the
    caller has them kept, Rejects.keep, before the state commits)."""
    state["offset"] += used
    state["line"] += lines
    state["rows"] += rows
    if rejects is not None:
        state["reject_bytes"] = rejects.seal()
        state["rejects"] += rejects.counted
        rejects.counted = 0


def as_json(state: ImportCheckpoint) -> dict[str, Any]:
    """The checkpoint as the task runtime stores it (a plain JSON object)."""
    return cast("dict[str, Any]", state)  # a TypedDict is a dict at run time

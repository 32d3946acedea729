"""What both export sources share: the plan, the order-key rule, CSV quoting and the file sink.

An export walks a table in keyset pages::

    pages(position, limit) ─▶ Page(next position, rows, CSV bytes) ─▶ append ─▶ fsync ─▶ checkpoint
                          └── ends once nothing is left after ``position``

``position`` is opaque JSON owned by the source (the last key's values, or the next heap
block for PostgreSQL's physical order); the checkpoint stores it with the file's byte offset.

Both databases write each type the same way, so a table imported into SQLite and into
PostgreSQL from one file exports to the same bytes::

    boolean      true / false
    timestamptz  2024-01-02T03:04:05.500000+00:00   (ISO 8601, in UTC, the fraction only if any)
    timestamp    2024-01-02T03:04:05                 (ISO 8601, no offset: it has none)
    date         2024-01-02
    numeric      1.5, 1000, 0.000001                 (no exponent, no trailing zeros)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.errors import Unprocessable

# How comparisons read in SQL; "in"/"like"/"null" forms are spelled out by each source.
COMPARISONS = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}

# Bytes gathered before one write + fdatasync in a worker thread.
FLUSH_BYTES = 4 * 1024 * 1024
MAX_LISTED = 40


@dataclass(frozen=True)
class FilterSpec:
    column: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class ExportPlan:
    """What to export, as validated by the params model (names still unchecked against the table)."""

    table: str
    columns: list[str] | None = None
    order_by: list[str] | None = None
    filters: list[FilterSpec] = field(default_factory=list)
    delimiter: str = ","
    null: str = ""
    quoting: str = "minimal"  # or "all": every value but NULL in quotes (COPY's FORCE_QUOTE *)


@dataclass(frozen=True)
class KeyCandidate:
    """A primary key or unique index: usable for keyset pages only if every column is NOT NULL."""

    columns: tuple[str, ...]
    primary: bool
    not_null: bool


@dataclass(frozen=True)
class Page:
    position: Any  # where the next page starts
    rows: int
    chunks: list[bytes]  # the page's CSV bytes


class Source(Protocol):
    """A table being exported, on connections of its own (never the service's pool)."""

    table: str
    columns: list[str]
    key: list[str]  # the order key in use; ["ctid"] / ["rowid"] for physical order

    async def estimate(self) -> tuple[int, bool]:
        """Rows that will be exported, and whether that count is exact."""
        ...

    def pages(self, position: Any, limit: int) -> AsyncGenerator[Page, None]:
        """The pages after ``position``, in order, until no row is left."""
        ...

    def session_state(self) -> dict[str, Any]:
        """Settings that shape the output's text, kept in the checkpoint so a resume matches."""
        ...

    async def close(self) -> None: ...


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", … ({len(names)} in all)" if len(names) > MAX_LISTED else "")


def check_columns(table: str, available: Sequence[str], plan: ExportPlan) -> list[str]:
    """The output columns: the plan's subset (in its order) or all; every name must exist."""
    known = set(available)
    wanted = list(plan.columns) if plan.columns else list(available)
    named = [("columns", name) for name in wanted]
    named += [("filters", f.column) for f in plan.filters]
    named += [("order_by", name) for name in plan.order_by or ()]
    for where, name in named:
        if name not in known:
            raise Unprocessable(
                f"{where}: table {table!r} has no column {name!r}; its columns are: {_listing(list(available))}"
            )
    if not wanted:
        raise Unprocessable(f"table {table!r} has no columns to export")
    return wanted


def choose_key(
    table: str,
    candidates: Sequence[KeyCandidate],
    requested: list[str] | None,
    physical: str | None,
    no_physical_reason: str,
) -> list[str]:
    """The keyset order: ``requested`` if it is a usable key, else the primary key, else the
    narrowest unique NOT NULL key, else the physical row order (``physical``), else 422."""
    usable = [c for c in candidates if c.not_null]
    if requested:
        for candidate in usable:
            if set(candidate.columns) == set(requested) and len(candidate.columns) == len(requested):
                return list(requested)
        keys = "; ".join("(" + ", ".join(c.columns) + ")" for c in usable) or "none"
        raise Unprocessable(
            f"order_by ({', '.join(requested)}) is not a usable key of table {table!r}: paging needs the "
            f"primary key or the columns of a unique index, all NOT NULL, or rows could be skipped or "
            f"repeated between pages. Usable keys: {keys}; or leave order_by out"
        )
    primary = [c for c in usable if c.primary]
    if primary:
        return list(primary[0].columns)
    if usable:
        return list(min(usable, key=lambda c: len(c.columns)).columns)
    if physical is not None:
        return [physical]
    raise Unprocessable(
        f"table {table!r} has no usable order key to page through it: no primary key, no unique "
        f"index on NOT NULL columns, and {no_physical_reason}"
    )


def csv_field(value: str, delimiter: str, null: str, single: bool, quote_all: bool = False) -> str:
    """PostgreSQL's COPY CSV quoting, so both databases write the same bytes for the same text."""
    if (
        quote_all
        or value == null
        or (single and value == "\\.")
        or delimiter in value
        or '"' in value
        or "\n" in value
        or "\r" in value
    ):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(values: Sequence[str | None], delimiter: str, null: str) -> str:
    single = len(values) == 1
    return delimiter.join(null if v is None else csv_field(v, delimiter, null, single) for v in values) + "\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FileSink:
    """Appends to the export file from a byte ``offset`` (anything after it is cut off first).

    Bytes are gathered in memory and handed, a block at a time, to a worker thread that writes
    and fdatasyncs them while the database streams the next block; ``sync()`` then only waits
    for the tail. ``offset`` counts bytes handed over; it is durable once ``sync()`` returns.
    """

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.ftruncate(self.fd, offset)
            os.lseek(self.fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(self.fd)
            raise
        self.offset = offset
        self._chunks: list[bytes] = []
        self._pending = 0
        self._writing: asyncio.Future[None] | None = None

    async def write(self, *chunks: bytes) -> None:
        for data in chunks:
            self._chunks.append(data)
            self._pending += len(data)
            if self._pending >= FLUSH_BYTES:
                await self.drain()

    async def _settle(self) -> None:
        job, self._writing = self._writing, None
        if job is not None:
            await job  # a failed write fails the page

    async def drain(self) -> None:
        if not self._chunks:
            return
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._pending = 0
        await self._settle()  # one block in flight: memory stays at about two blocks
        self._writing = asyncio.ensure_future(asyncio.to_thread(_write_and_sync, self.fd, data))
        self.offset += len(data)

    async def hand_off(self, *chunks: bytes) -> asyncio.Future[None]:
        """Queue ``chunks``; the returned future is done once they (and all before) are on disk."""
        await self.write(*chunks)
        await self.drain()
        if self._writing is not None:
            return self._writing
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def sync(self) -> int:
        """Everything handed over so far is on disk; returns the offset to checkpoint."""
        await self.drain()
        await self._settle()
        return self.offset

    async def finish(self) -> int:
        """Sync and cut the file at the current offset (drops bytes a stale runner may have left)."""
        await self.sync()
        os.ftruncate(self.fd, self.offset)
        await asyncio.to_thread(os.fsync, self.fd)
        return self.offset

    async def aclose(self) -> None:
        """Close the file, but never under a write still running in a worker thread."""
        job, self._writing = self._writing, None
        if job is None or job.done():
            self._close(job)
            return
        job.add_done_callback(self._close)
        await asyncio.wait([job])

    def _close(self, job: asyncio.Future[None] | None = None) -> None:
        if job is not None and not job.cancelled():
            job.exception()  # seen here; the page that needed it has already failed
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _write_and_sync(fd: int, data: bytes) -> None:
    _write_all(fd, data)
    os.fdatasync(fd)


def fsync_dir(path: Path) -> None:
    """Make a new file's directory entry durable too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

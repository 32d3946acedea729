"""The import's input: the source file and its batches (the reject file: rejects.py).

Reading a source (a local file or an object in the ByteStore: reader.py)::

    source file ── fingerprint (size, mtime, sha256 of head and tail) ── checked on every resume
        │
        ├─ plan: BOM, header → column names, a sample → column types
        └─ batches: [offset, offset + batch_bytes) cut back to a record boundary, then split
                    into sub-chunks, each also ending on a record boundary, so a pause can stop
                    a batch after any sub-chunk and still commit whole records only.
"""

from __future__ import annotations

import asyncio
import hashlib
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypedDict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, NotFound, Unprocessable
from app.models import File
from app.services.csv_import import dialect as dialect_module
from app.services.csv_import import scan as csv_scan
from app.services.csv_import.dialect import Dialect
from app.services.csv_import.params import usable_dialect
from app.services.csv_import.reader import LocalSource, Source, SourceReader, StoreSource
from app.services.csv_import.scan import BOM, MAX_RECORD_BYTES, CsvError
from app.services.files.catalog import get_file
from app.services.files.storage import file_path, linked_to_service, managed_by_service
from app.services.owners.keys import Principal
from app.services.owners.namespaces import MAX_COLUMNS

if TYPE_CHECKING:
    from app.services.files.store import ByteStore

FINGERPRINT_BYTES = 64 * 1024
SAMPLE_BYTES = 1024 * 1024
DEFAULT_SAMPLE_RECORDS = 20_000
HEAD_SAMPLE_CAP = 16 * 1024 * 1024  # bytes per sample region, whatever the records' size
SUB_CHUNK_BYTES = 256 * 1024


# -- where the bytes are ------------------------------------------------------------------


def resolve_storage_path(settings: Settings, relative: str) -> Path:
    """A regular file inside storage/ that the service does not manage itself (422 otherwise).

    Decided by resolved location and ``stat`` before anything opens the file (see
    app.services.files.storage): opening the service's own database to find out would already
    have dropped its locks.
    """
    pure = PurePosixPath(relative)
    if not relative or "\\" in relative or "\x00" in relative or pure.is_absolute():
        raise Unprocessable(f"path {relative!r} must be relative to the storage directory")
    if ".." in pure.parts:
        raise Unprocessable(f"path {relative!r} must not contain '..'")
    root = settings.storage_dir.resolve()
    try:
        resolved = (root / pure).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        raise Unprocessable(f"path {relative!r} cannot be resolved (a symlink loop?)") from None
    if not resolved.is_relative_to(root) or resolved == root:
        raise Unprocessable(f"path {relative!r} leads outside the storage directory")
    if (managed := managed_by_service(settings, resolved)) is not None:
        raise Unprocessable(f"path {relative!r} is {managed}")
    try:
        found = resolved.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"no file at storage path {relative!r}") from None
    except OSError as exc:
        raise Unprocessable(f"storage path {relative!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(found.st_mode):
        raise Unprocessable(f"storage path {relative!r} is not a regular file")
    if (managed := linked_to_service(settings, found)) is not None:
        raise Unprocessable(f"path {relative!r} is a hard link: {managed}")
    return resolved


async def resolve_source(
    session: AsyncSession,
    settings: Settings,
    principal: Principal | None,
    file_id: str | None,
    path: str | None,
    store: ByteStore | None = None,
) -> Source:
    """The bytes to import. ``principal`` None = the runner, after creation checked access.

    A ``path`` is always a local file; an upload is wherever ``store`` keeps it (None: the
    local directory)."""
    if path is not None:  # off the event loop: a hard link's check may list a large directory
        return LocalSource(await asyncio.to_thread(resolve_storage_path, settings, path))
    assert file_id is not None
    location = file_path(settings, file_id)  # 404 for anything that is not a UUID
    row: File | None
    if principal is not None:
        row = await get_file(session, principal, file_id)
    else:
        row = (await session.execute(select(File).where(File.id == file_id))).scalar_one_or_none()
        if row is None or row.state in ("deleted", "expired"):
            raise NotFound(f"file {file_id} is gone")
    if row.state != "complete":
        raise Conflict(f"file {file_id} is still {row.state}; import it once it is complete", file_state=row.state)
    if store is not None and not store.local:
        if (found := await store.stat(file_id)) is None:
            raise NotFound(f"the bytes of file {file_id} are gone")
        return StoreSource(store, file_id, asyncio.get_running_loop(), found)
    if not location.is_file():
        raise NotFound(f"the bytes of file {file_id} are gone")
    return LocalSource(location)


class SourceFingerprint(TypedDict):
    """What identifies the source file's content, cheaply: a resume refuses a file that changed.

    On S3, size and mtime are the object's (Content-Length, Last-Modified: whole seconds) and
    head and tail come from ranged GETs."""

    size: int
    mtime_ns: int
    sha256_head_tail: str


def fingerprint(source: Source) -> SourceFingerprint:
    """Blocking (a worker thread): stat, then the first and last FINGERPRINT_BYTES."""
    with source.open() as handle:
        head = handle.read(FINGERPRINT_BYTES)
        handle.seek(max(0, handle.size - FINGERPRINT_BYTES))
        tail = handle.read(FINGERPRINT_BYTES)
    digest = hashlib.sha256(head + b"|" + tail).hexdigest()
    return {"size": handle.size, "mtime_ns": handle.mtime_ns, "sha256_head_tail": digest}


# -- what is in it ------------------------------------------------------------------------


@dataclass
class Plan:
    names: list[str]  # sanitised CSV column names, in file order
    types: list[str]
    data_start: int  # byte offset of the first data record
    data_end: int  # byte offset where data ends (trailing blank lines excluded)
    first_line: int  # 1-based line number of the first data record
    renamed: list[dict[str, str]] = field(default_factory=list)  # header → column, where they differ
    dialect: Dialect = field(default_factory=lambda: Dialect(",", '"', True))  # as sniffed or given
    sampled: int = 0  # records the types were inferred from


def decode(data: bytes, encoding: str, first_line: int) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        raise CsvError(f"invalid byte sequence for encoding {encoding} (byte 0x{data[exc.start]:02x})", line) from None


def sniff_dialect(head: bytes, params: Any) -> Dialect:
    """The params' dialect, with what they leave unset sniffed from the head of the file."""
    text = dialect_module.sample_text(head.removeprefix(BOM), params.encoding)
    return dialect_module.sniff(
        text, params.delimiter, params.quote, params.header, params.null, usable_dialect(params)
    )


def make_plan(
    source: Source, params: Any, sample_records: int = DEFAULT_SAMPLE_RECORDS, known: Dialect | None = None
) -> Plan:
    """Read the head of the file: BOM, dialect, header names; then a sample for the column types.

    ``known``: the dialect a previous run decided on (a resume must not guess again).
    """
    with source.open() as handle:
        size = handle.size
        head = handle.read(SAMPLE_BYTES)
        dialect = known or sniff_dialect(head, params)
        quote = ord(dialect.quote)
        while last_cut(head, quote) is None and len(head) < min(size, MAX_RECORD_BYTES):
            head += handle.read(SAMPLE_BYTES)
        handle.seek(max(0, size - FINGERPRINT_BYTES))
        end = csv_scan.data_end(handle.read(FINGERPRINT_BYTES), size)
        if size == 0 or end == 0:
            raise Unprocessable("the file is empty")
        if b"\x00" in head[:FINGERPRINT_BYTES]:
            raise Unprocessable("the file looks binary (it contains NUL bytes), not like CSV text")
        start = len(BOM) if head.startswith(BOM) and params.encoding.replace("_", "-").lower().startswith("utf") else 0
        line = 1
        names: list[str] = []
        headers: list[str] = []
        if dialect.header:
            cut = first_cut(head, start, quote) or (len(head) if len(head) >= end else None)
            if cut is None:
                raise Unprocessable("the header line does not end within the first 64 MiB")
            header = decode(head[start:cut], params.encoding, 1)
            rows = csv_scan.parse_rows(header, dialect.delimiter, dialect.quote, "\x00")
            headers = [v or "" for v in rows[0][1]] if rows else []
            names = csv_scan.sanitize_names(headers)
            line += head.count(b"\n", start, cut)
            start = cut
        sampler = Sampler(handle, head, start, max(end, start), line, dialect, params)
        sample_rows = sampler.head(max(1, sample_records // 3))
        width = len(names) or max((len(r) for r in sample_rows), default=0)
        if width > MAX_COLUMNS:
            raise Unprocessable(f"the file has {width} columns; a table can have at most {MAX_COLUMNS}")
        if params.infer_types and width:
            sample_rows += sampler.spread(max(1, sample_records // 3), width)
    if not sample_rows and not dialect.header and not sampler.complete_first:
        raise Unprocessable("the first record does not end within the first 64 MiB")
    if not names:
        if width == 0:
            raise Unprocessable("no columns found: the file has no header and no data")
        names = [f"column_{i}" for i in range(1, width + 1)]
    renamed = (
        [{"header": h[:100], "column": n} for h, n in zip(headers, names, strict=True) if h != n] if headers else []
    )
    if params.columns:
        if len(params.columns) != len(names):
            raise Unprocessable(f"params.columns names {len(params.columns)} columns but the file has {len(names)}")
        names, renamed = [c.name for c in params.columns], []
    inferred = csv_scan.infer_types(sample_rows, len(names)) if params.infer_types else ["text"] * len(names)
    if params.columns:
        inferred = [c.type or t for c, t in zip(params.columns, inferred, strict=True)]
    return Plan(names, inferred, start, max(end, start), line, renamed, dialect, len(sample_rows))


class Sampler:
    """Records for type inference from the head, the middle and the tail of the data.

    The head is read from a record start; the middle and the tail are entered at a byte offset,
    so the sampler skips to the next line end and keeps only records of the header's width
    (a jump into a quoted multi-line field could otherwise misread a few values).
    """

    def __init__(
        self, handle: SourceReader, head: bytes, start: int, end: int, line: int, dialect: Dialect, params: Any
    ) -> None:
        self.handle, self.buffer, self.start, self.end, self.line = handle, head, start, end, line
        self.dialect, self.params = dialect, params
        self.quote = ord(dialect.quote)
        self.head_end = start  # where the head sample stopped
        self.complete_first = False

    def _parse(self, data: bytes, first_line: int) -> list[list[str | None]]:
        try:
            text = decode(data, self.params.encoding, first_line)
            parsed = csv_scan.parse_rows(text, self.dialect.delimiter, self.dialect.quote, self.params.null)
        except CsvError:
            return []  # the load reports the exact line; inference just has fewer values
        return [row for _, row in parsed]

    def head(self, count: int) -> list[list[str | None]]:
        """Up to ``count`` records from the start of the data (at least the first, however long)."""
        buf, start = self.buffer, self.start
        while True:
            if len(buf) >= self.end:
                cut: int | None = self.end
            else:
                cut = last_cut(buf, self.quote, start)
            records = csv_scan.split_records(buf[start:cut], self.quote) if cut and cut > start else []
            if len(records) >= count or len(buf) >= self.end or len(buf) >= HEAD_SAMPLE_CAP:
                break
            self.handle.seek(len(buf))  # the plan has read the tail since
            more = self.handle.read(max(SAMPLE_BYTES, len(buf)))
            if not more:
                break
            buf += more
        records = records[:count]
        used = sum(len(r) for r in records)
        self.complete_first = bool(records)
        self.head_end = start + used
        self.record_bytes = used / len(records) if records else 0.0
        return self._parse(b"".join(records), self.line) if records else []

    def spread(self, count: int, width: int) -> list[list[str | None]]:
        """About ``count`` records from around the middle and as many from the tail."""
        if self.head_end >= self.end or not self.record_bytes:
            return []  # the head sample was the whole file
        span = min(HEAD_SAMPLE_CAP, int(self.record_bytes * count * 1.1) + 4096)
        rows: list[list[str | None]] = []
        middle = (self.head_end + self.end) // 2 - span // 2
        for offset in (max(self.head_end, middle), max(self.head_end, self.end - span)):
            rows += self._region(offset, min(span, self.end - offset), width)
            if offset + span >= self.end:
                break  # the middle region already reached the end
        return rows

    def _region(self, offset: int, length: int, width: int) -> list[list[str | None]]:
        self.handle.seek(offset)
        data = self.handle.read(length)
        if offset > self.head_end:  # entered mid-record: start after the next line end
            newline = data.find(b"\n")
            data = data[newline + 1 :] if newline >= 0 else b""
        if offset + length < self.end:
            data = data[: last_cut(data, self.quote) or 0]
        rows = [row for row in self._parse(data, 0) if len(row) == width]
        return rows


def first_cut(data: bytes, start: int, quote: int) -> int | None:
    q = bytes([quote])
    pos, quotes = start, 0
    while (newline := data.find(b"\n", pos)) >= 0:
        quotes += data.count(q, pos, newline)
        pos = newline + 1
        if quotes % 2 == 0:
            return pos
    return None


def last_cut(data: bytes, quote: int, start: int = 0) -> int | None:
    return csv_scan.last_boundary(data, start, len(data), quote)


# -- batches ------------------------------------------------------------------------------


@dataclass
class Batch:
    offset: int
    chunks: list[bytes] = field(default_factory=list)
    lines: int = 0  # newlines in the batch (counted in the reader's thread, off the event loop)
    has_end_marker: bool = False  # contains b"\\." (rare; COPY must not see it bare)

    @property
    def end(self) -> int:
        return self.offset + sum(len(c) for c in self.chunks)


class BatchReader:
    """Reads whole-record batches from ``offset``; ``read`` is blocking (run it in a thread).

    The source is opened by the first read, in its thread: an object store's stat must not
    block the event loop."""

    def __init__(self, source: Source, end: int, batch_bytes: int, quote: int, *, split: bool = True) -> None:
        self.source = source
        self.opened: SourceReader | None = None
        self.end = end
        self.batch_bytes = batch_bytes
        self.sub_bytes = min(SUB_CHUNK_BYTES, batch_bytes)
        self.quote = quote
        self.split = split  # False: one chunk per batch (COPY needs no record-aligned pieces)

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()

    def read(self, offset: int, size: int | None = None, stop: int | None = None) -> Batch | None:
        """The batch at ``offset``: about ``size`` bytes, never past ``stop`` (a record
        boundary before the end: where a range loaded earlier begins)."""
        stop = self.end if stop is None else min(stop, self.end)
        if offset >= stop:
            return None
        if self.opened is None:
            self.opened = self.source.open(ahead=self.batch_bytes)
        handle = self.opened
        handle.seek(offset)
        want = min(size or self.batch_bytes, stop - offset)
        buf = handle.read(want)
        cut: int | None
        while True:
            if offset + len(buf) >= stop < self.end:  # up to a known boundary: all of it
                cut = len(buf)
                break
            if offset + len(buf) >= self.end:  # the last batch: everything that is left
                if csv_scan.count_byte(buf, bytes([self.quote])) % 2:
                    opened = last_cut(buf, self.quote) or 0  # the record that never closes starts here
                    raise RecordError("unterminated quoted field", buf.count(b"\n", 0, opened))
                cut = len(buf)
                break
            cut = last_cut(buf, self.quote)
            if cut is not None:
                break
            if len(buf) >= MAX_RECORD_BYTES:
                raise RecordError("a record is longer than 64 MiB (no line end outside quotes)", 0)
            more = handle.read(min(len(buf), stop - offset - len(buf)))
            buf += more
        batch = Batch(offset)
        if not self.split:
            whole = buf if cut == len(buf) else buf[:cut]
            batch.chunks.append(whole)
            batch.lines = csv_scan.count_byte(whole, b"\n")
            batch.has_end_marker = csv_scan.contains(whole, b"\\.")
            return batch
        pos = 0
        while pos < cut:
            limit = pos + self.sub_bytes
            piece = last_cut_between(buf, pos, min(limit, cut), self.quote) if limit < cut else cut
            while piece is None:
                limit *= 2
                piece = last_cut_between(buf, pos, min(limit, cut), self.quote) if limit < cut else cut
            batch.chunks.append(buf[pos:piece])
            pos = piece
        batch.lines = buf.count(b"\n", 0, cut)
        batch.has_end_marker = b"\\." in buf
        return batch


def last_cut_between(data: bytes, start: int, limit: int, quote: int) -> int | None:
    return csv_scan.last_boundary(data, start, limit, quote)


class RecordError(Exception):
    """A record that cannot be cut out of the file, ``lines`` lines into the batch."""

    def __init__(self, message: str, lines: int) -> None:
        self.message, self.lines = message, lines
        super().__init__(message)

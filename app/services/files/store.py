"""One interface for a file's bytes, two places to keep them.

    ByteStore            uploads:  create · prepare · receive (append durably) · finish · discard
                                   abandon · settled · concatenate (a tus final from its partials)
                         reading:  stat · read_range · presigned_url · sha256
                         tasks' files (exports, rejects): open_result → ResultWriter (results.py)
                         removing: delete · purge
      LocalStore         storage/files/<id> through aiofiles and writer.py (fsync rules there)
      S3Store            s3://bucket/prefix/files/<id> (app/services/files/s3store.py)

``open_store(settings)`` (stores.py) picks one from ``TSM_STORAGE_URL`` for the app's lifetime. Every
upload keeps what the store needs to continue it in its row (``File.multipart``: None on the
local directory), so any replica can pick up an upload another one began.

Every file lives in that one store, whatever made it: uploads, export results and reject
files alike (the latter two written by their tasks through a resumable ResultWriter, its
state in the task's checkpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiofiles
import aiofiles.os

from app.config import Settings
from app.errors import NotFound
from app.metrics import BYTES_DOWNLOADED
from app.models import File
from app.services.files import writer
from app.services.files.results import Mark, ResultWriter, open_local_result
from app.services.files.storage import file_path

READ_BYTES = 1 << 20
COPY_BYTES = 1 << 30  # per copy_file_range call


@dataclass(frozen=True)
class Stat:
    size: int
    mtime_ns: int


class ByteStore(Protocol):
    """What uploads, downloads and the sweeper need of the place bytes live."""

    local: bool
    name: str  # what /readyz reports: "local" or "s3"

    @property
    def where(self) -> str:
        """For people: "the local directory", "S3 bucket <name>"."""
        ...

    async def check(self) -> None:
        """Raise if the store cannot be reached right now (/readyz)."""
        ...

    async def create(self, file_id: str, *, empty: bool) -> dict[str, Any] | None:
        """Room for a new upload (``empty``: already complete); returns its ``File.multipart``."""
        ...

    async def prepare(self, row: File) -> int | None:
        """Before a PATCH or at start-up: drop bytes past ``row.offset``. Returns the bytes that
        really exist when that is fewer than the offset (the caller lowers it), else None."""
        ...

    async def receive(
        self,
        row: File,
        state: writer.WriteState,
        chunks: AsyncIterator[bytes],
        *,
        limit: int,
        limit_message: str,
        expected: int | None,
        length: int | None,
    ) -> bool:
        """Append ``chunks`` at ``row.offset``, moving ``state.durable`` (and ``state.multipart``)
        only past bytes the store acknowledged (:meth:`finish` follows once ``length`` is
        reached). False if the body was cut short. Raises PayloadTooLarge and writer.LockLost."""
        ...

    async def finish(self, file_id: str, multipart: dict[str, Any] | None) -> None:
        """Every byte is there (and verified): make the file one whole, downloadable thing."""
        ...

    async def discard(self, row: File, state: writer.WriteState) -> None:
        """Undo a PATCH that must not count (a failed checksum): back to ``row.offset``."""
        ...

    async def abandon(self, row: File, state: writer.WriteState) -> None:
        """A PATCH lost its lock, so its outcome never reached the row: remove what only it wrote
        and nobody names, never touching what the row (now another writer's) may name."""
        ...

    async def settled(self, before: File, state: writer.WriteState) -> None:
        """The row now holds ``state``'s outcome: drop what it superseded (best effort)."""
        ...

    async def concatenate(self, file_id: str, multipart: dict[str, Any] | None, sources: list[tuple[str, int]]) -> None:
        """Fill the room ``create`` made for ``file_id`` with the complete files ``sources``
        ((id, size), in order), one after the other, and make it one whole, durable file."""
        ...

    async def stat(self, file_id: str) -> Stat | None: ...

    async def presigned_url(self, file_id: str, *, filename: str, content_type: str) -> str | None:
        """A URL that serves the file's bytes without the service (None: the store has none)."""
        ...

    def read_range(self, file_id: str, first: int, last: int) -> AsyncIterator[bytes]:
        """Bytes ``first..last`` (inclusive) of a complete file, the next block read ahead."""
        ...

    def local_path(self, file_id: str) -> Path | None:
        """The file on this machine's disk, for a server that can send it itself (None: not local)."""
        ...

    async def sha256(self, file_id: str) -> str: ...

    async def delete(self, file_id: str, multipart: dict[str, Any] | None) -> None:
        """Remove the bytes of a file in any state (an unfinished upload's pieces too)."""
        ...

    async def open_result(self, file_id: str, mark: Mark | None) -> ResultWriter:
        """A file a task writes, continued from its checkpoint's ``mark`` (None: a new one).
        Raises ResultLost when the store no longer holds what the mark names."""
        ...

    async def purge(self, file_id: str) -> None:
        """Remove everything stored under the file's name, whether a row names it or not
        (a task's file on cancel or failure: pieces a killed run left too)."""
        ...


class LocalStore:
    """Today's storage: storage/files/<id>, written by writer.py, read with aiofiles."""

    local = True
    name = "local"
    where = "the local directory"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def check(self) -> None:
        return None  # the directory is checked at start-up; a full disk shows on writes

    async def create(self, file_id: str, *, empty: bool) -> dict[str, Any] | None:
        async with aiofiles.open(file_path(self.settings, file_id), "wb"):
            pass
        return None

    async def prepare(self, row: File) -> int | None:
        path = file_path(self.settings, row.id)
        size = await writer.file_size(path)
        if size is None:
            async with aiofiles.open(path, "wb"):
                return 0 if row.offset else None
        if size < row.offset:
            return size
        if size > row.offset:
            await writer.truncate(path, row.offset)
        return None

    async def receive(
        self,
        row: File,
        state: writer.WriteState,
        chunks: AsyncIterator[bytes],
        *,
        limit: int,
        limit_message: str,
        expected: int | None,
        length: int | None,
    ) -> bool:
        path = file_path(self.settings, row.id)
        return await writer.receive(path, state, chunks, limit=limit, limit_message=limit_message, expected=expected)

    async def finish(self, file_id: str, multipart: dict[str, Any] | None) -> None:
        return None

    async def discard(self, row: File, state: writer.WriteState) -> None:
        await writer.truncate(file_path(self.settings, row.id), row.offset)

    async def abandon(self, row: File, state: writer.WriteState) -> None:
        return None  # the file is the new lock holder's now: its next PATCH trims past its offset

    async def settled(self, before: File, state: writer.WriteState) -> None:
        return None

    async def concatenate(self, file_id: str, multipart: dict[str, Any] | None, sources: list[tuple[str, int]]) -> None:
        paths = [(file_path(self.settings, source), size) for source, size in sources]
        try:
            await asyncio.to_thread(_concatenate, file_path(self.settings, file_id), paths)
        except FileNotFoundError as exc:  # the bytes under a row vanished: as a download would say
            raise missing(Path(str(exc.filename)).name) from None

    async def stat(self, file_id: str) -> Stat | None:
        try:
            found = await aiofiles.os.stat(file_path(self.settings, file_id))
        except FileNotFoundError:
            return None
        return Stat(found.st_size, found.st_mtime_ns)

    async def presigned_url(self, file_id: str, *, filename: str, content_type: str) -> str | None:
        return None

    def local_path(self, file_id: str) -> Path | None:
        return file_path(self.settings, file_id)

    async def read_range(self, file_id: str, first: int, last: int) -> AsyncIterator[bytes]:
        async with aiofiles.open(file_path(self.settings, file_id), "rb", buffering=0) as handle:
            await handle.seek(first)
            async for block in read_ahead(handle.read, last - first + 1):
                yield block

    async def sha256(self, file_id: str) -> str:
        return await asyncio.to_thread(_hash_file, file_path(self.settings, file_id))

    async def delete(self, file_id: str, multipart: dict[str, Any] | None) -> None:
        await asyncio.to_thread(file_path(self.settings, file_id).unlink, missing_ok=True)

    async def open_result(self, file_id: str, mark: Mark | None) -> ResultWriter:
        return await open_local_result(file_path(self.settings, file_id), mark)

    async def purge(self, file_id: str) -> None:
        await self.delete(file_id, None)


def _concatenate(target: Path, sources: list[tuple[Path, int]]) -> None:
    """Copy in the kernel (copy_file_range: no bytes through user space, a reflink where the
    filesystem can), then fsync the file and its directory: durable before anyone is told."""
    with target.open("r+b") as out:
        out.truncate(0)
        for path, size in sources:
            with path.open("rb") as source:
                _copy(source.fileno(), out.fileno(), size, path)
        os.fsync(out.fileno())
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _copy(source: int, target: int, size: int, path: Path) -> None:
    copied = 0
    while copied < size:
        try:
            moved = os.copy_file_range(source, target, min(size - copied, COPY_BYTES))
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            moved = _read_write(source, target, min(size - copied, READ_BYTES))
        if moved == 0:  # fewer bytes than the row says: as good as missing
            raise FileNotFoundError(errno.ENOENT, "shorter than its length", path)
        copied += moved


def _read_write(source: int, target: int, size: int) -> int:
    """The plain copy, for filesystems without copy_file_range."""
    data = os.read(source, size)
    view = memoryview(data)
    while view:
        view = view[os.write(target, view) :]
    return len(data)


def _hash_file(path: Any) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def read_ahead(read: Any, remaining: int) -> AsyncIterator[bytes]:
    """``remaining`` bytes from ``read(n)``, 1 MiB at a time, each read overlapping the send of
    the block before. A short read (the bytes shrank under us) ends the body early."""
    pending: asyncio.Future[bytes] | None = asyncio.ensure_future(read(min(READ_BYTES, remaining)))
    try:
        while pending is not None:
            block = await pending
            pending = None
            if not block:
                return  # the short body makes the client retry
            remaining -= len(block)
            if remaining > 0:
                pending = asyncio.ensure_future(read(min(READ_BYTES, remaining)))
            BYTES_DOWNLOADED.inc(len(block))
            yield block
    finally:
        if pending is not None:  # the client went away mid-read: let the read finish before closing
            with contextlib.suppress(Exception):
                await pending


def missing(file_id: str) -> NotFound:
    return NotFound(f"the bytes of file {file_id} are missing")

"""Where an import's bytes come from: a local file or an object in the ByteStore, read alike.

    Source                         what resolve_source() found; open() gives a reader
      LocalSource(path)            a ``path=`` source (always local) or an upload on the local
                                   store: os-level reads, O_NOFOLLOW
      StoreSource(store, id)       an upload on S3: stat for size and mtime, ranged GETs

    SourceReader                   file-like (seek, read, size, mtime_ns), blocking: the plan,
                                   the sampler and the batch reader run in worker threads

An object reader lives in a worker thread but the S3 client lives on the event loop, so each
read is handed to the loop (``run_coroutine_threadsafe``) and the thread waits for its bytes.
A read of ``n`` bytes is ``n`` bytes of ranged GETs, PIECE_BYTES each, up to PIECES_IN_FLIGHT
at once, each streamed by ``ByteStore.read_range`` with its own read-ahead. Nothing is
buffered past the read: memory stays one batch, as on disk. The batch-level read-ahead is
the import's own (kind.py reads batch N+1 while batch N loads), which on S3 means batch
N+1's GETs are in flight while batch N is written.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self, TypeVar

from app.errors import NotFound

if TYPE_CHECKING:
    from app.services.files.store import ByteStore

T = TypeVar("T")
MISSING = ("404", "NoSuchKey", "NotFound")

PIECE_BYTES = 8 << 20  # one ranged GET
PIECES_IN_FLIGHT = 4  # GETs of one read at once: a 32 MiB batch in four parallel requests
READ_SECONDS = 300.0  # a read the loop never answers (it is shutting down) must not hang the thread


class SourceReader(Protocol):
    """A source open for reading: seek/read as on a binary file, plus what stat knows."""

    size: int
    mtime_ns: int

    def seek(self, offset: int) -> int: ...

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> SourceReader: ...

    def __exit__(self, *exc: object) -> None: ...


class Source(Protocol):
    """What resolve_source() returns: where an import's bytes are, not yet open."""

    def open(self) -> SourceReader:
        """Blocking: call it in a worker thread (an object store's stat goes through the loop)."""
        ...


class _Closing:
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class LocalSource:
    """A regular file on this machine, checked by resolve_source() (no symlinks left in its path)."""

    path: Path

    def open(self) -> SourceReader:
        return LocalReader(self.path)


class LocalReader(_Closing):
    """O_NOFOLLOW only refuses a symlink put in the checked file's place since the check."""

    def __init__(self, path: Path) -> None:
        self.handle: BinaryIO = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
        info = os.fstat(self.handle.fileno())
        self.size, self.mtime_ns = info.st_size, info.st_mtime_ns

    def seek(self, offset: int) -> int:
        return self.handle.seek(offset)

    def read(self, size: int) -> bytes:
        return self.handle.read(size)

    def close(self) -> None:
        self.handle.close()


@dataclass(frozen=True)
class StoreSource:
    """A complete upload in a ByteStore that is not the local directory (S3)."""

    store: ByteStore
    file_id: str
    loop: asyncio.AbstractEventLoop  # the one the store's client lives on

    def open(self) -> SourceReader:
        return StoreReader(self)


class StoreReader(_Closing):
    """Ranged GETs at a cursor, like reading a file; size and mtime from the store's stat."""

    def __init__(self, source: StoreSource) -> None:
        self.source = source
        found = self._wait(source.store.stat(source.file_id))
        if found is None:
            raise NotFound(f"the bytes of file {source.file_id} are gone")
        self.size, self.mtime_ns = found.size, found.mtime_ns
        self.position = 0

    def seek(self, offset: int) -> int:
        self.position = offset
        return offset

    def read(self, size: int) -> bytes:
        first = self.position
        last = min(first + size, self.size) - 1
        if size <= 0 or last < first:
            return b""
        data = self._wait(fetch(self.source.store, self.source.file_id, first, last))
        self.position += len(data)
        return data

    def close(self) -> None:
        return None  # each GET's body is closed when it is read

    def _wait(self, work: Coroutine[Any, Any, T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError  # the s3 extra: there is an S3 store

        if _on_loop(self.source.loop):
            raise RuntimeError("a blocking object-store read on the event loop would never finish")
        try:
            return asyncio.run_coroutine_threadsafe(work, self.source.loop).result(READ_SECONDS)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in MISSING:
                raise NotFound(f"the bytes of file {self.source.file_id} are gone") from None
            raise ObjectStoreError(f"object store error: {code}") from None
        except BotoCoreError as exc:  # a connection lost, a timeout: retried from the checkpoint
            raise ObjectStoreError(f"object store unavailable: {type(exc).__name__}") from None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class ObjectStoreError(OSError):
    """The object store failed a read; as with a disk error, the import retries from its checkpoint."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.strerror = message


async def fetch(store: ByteStore, file_id: str, first: int, last: int) -> bytes:
    """Bytes ``first..last`` (inclusive): PIECE_BYTES ranged GETs, PIECES_IN_FLIGHT at a time."""
    pieces = [(start, min(start + PIECE_BYTES, last + 1) - 1) for start in range(first, last + 1, PIECE_BYTES)]
    limit = asyncio.Semaphore(PIECES_IN_FLIGHT)

    async def piece(a: int, b: int) -> bytes:
        async with limit:
            return b"".join([block async for block in store.read_range(file_id, a, b)])

    parts = await asyncio.gather(*(piece(a, b) for a, b in pieces))
    return b"".join(parts)

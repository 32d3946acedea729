"""Where an import's bytes come from: a local file or an object in the ByteStore, read alike.

    Source                         what resolve_source() found; open() gives a reader
      LocalSource(path)            a ``path=`` source (always local) or an upload on the local
                                   store: os-level reads, O_NOFOLLOW
      StoreSource(store, id)       an upload on S3: stat for size and mtime, ranged GETs

    SourceReader                   file-like (seek, read, size, mtime_ns), blocking: the plan,
                                   the sampler and the batch reader run in worker threads

An object reader lives in a worker thread but the S3 client lives on the event loop, so each
read is handed to the loop (``run_coroutine_threadsafe``) and the thread waits for its bytes,
which come from ranged GETs streamed by ``ByteStore.read_range``.

    samples, fingerprint   each read is its own GETs (PIECE_BYTES each, PIECES_IN_FLIGHT at once)
    batches (ahead=N)      a window of GETs runs N bytes (one batch) past the last read, so
                           while batch N is written, batch N+1's bytes are already arriving;
                           chunks behind the cursor are dropped: memory stays about two batches
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, Self, TypeVar

from app.errors import NotFound

if TYPE_CHECKING:
    from app.services.files.store import ByteStore, Stat

T = TypeVar("T")
MISSING = ("404", "NoSuchKey", "NotFound")

PIECE_BYTES = 8 << 20  # one ranged GET
PIECES_IN_FLIGHT = 2  # GETs of one read at once (more only adds CPU on a loaded host)
MIN_CHUNK_BYTES = 64 << 10  # the read-ahead window's smallest GET (tiny test batches)
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

    def open(self, ahead: int = 0) -> SourceReader:
        """Blocking: call it in a worker thread (an object store's stat goes through the loop).
        ``ahead``: the reader will read on sequentially, so fetch that many bytes in advance."""
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

    def open(self, ahead: int = 0) -> SourceReader:
        return LocalReader(self.path)  # the kernel reads ahead


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
    stat: Stat  # as resolve_source() found it, just before: readers need not ask again

    def open(self, ahead: int = 0) -> SourceReader:
        return StoreReader(self, ahead)


class StoreReader(_Closing):
    """Ranged GETs at a cursor, like reading a file; size and mtime from the store's stat.

    With ``ahead`` (a sequential reader: the batches) the bytes after each read are fetched
    before they are asked for: a window of CHUNK-sized GETs runs up to ``ahead`` bytes past the
    end of the last read, and chunks behind the cursor are dropped. A read elsewhere (a resume
    that seeks) starts the window over. Without it, each read is its own GETs (the samples)."""

    def __init__(self, source: StoreSource, ahead: int = 0) -> None:
        self.source = source
        self.size, self.mtime_ns = source.stat.size, source.stat.mtime_ns
        self.position = 0
        self.ahead = ahead
        self.chunk = min(PIECE_BYTES, max(MIN_CHUNK_BYTES, ahead // 4))
        self.window: deque[tuple[int, int, Future[bytes]]] = deque()  # (first, end, bytes), in order

    def seek(self, offset: int) -> int:
        self.position = offset
        return offset

    def read(self, size: int) -> bytes:
        first = self.position
        end = min(first + size, self.size)
        if size <= 0 or end <= first:
            return b""
        data = self._from_window(first, end) if self.ahead else self._wait(self._fetch(first, end))
        self.position += len(data)
        return data

    def _fetch(self, first: int, end: int) -> Future[bytes]:
        work = fetch(self.source.store, self.source.file_id, first, end - 1)
        return asyncio.run_coroutine_threadsafe(work, self.source.loop)

    def _from_window(self, first: int, end: int) -> bytes:
        while self.window and self.window[0][1] <= first:  # behind the cursor: never read again
            self.window.popleft()[2].cancel()
        if not self.window or self.window[0][0] > first:
            self.close()  # not where the window is: start it over here
        following = self.window[-1][1] if self.window else first
        while following < min(end + self.ahead, self.size):  # keep ``ahead`` bytes in flight
            stop = min(following + self.chunk, self.size)
            self.window.append((following, stop, self._fetch(following, stop)))
            following = stop
        pieces = []
        for start, _, future in self.window:
            if start >= end:
                break
            data = self._wait(future)
            pieces.append(data[max(0, first - start) : end - start])
        return b"".join(pieces)

    def close(self) -> None:
        while self.window:
            self.window.popleft()[2].cancel()

    def _wait(self, future: Future[T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError  # the s3 extra: there is an S3 store

        if _on_loop(self.source.loop):
            future.cancel()
            raise RuntimeError("a blocking object-store read on the event loop would never finish")
        try:
            return future.result(READ_SECONDS)
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

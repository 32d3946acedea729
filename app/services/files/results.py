"""Files a task writes (export results, reject files): appended page by page, resumable.

    writer = await store.open_result(file_id, mark)     mark: the last checkpoint's, or None (new)
    await writer.write(*chunks)                         gathers (nothing is durable yet)
    durable = await writer.hand_off(*chunks)            a future: once done, every byte so far is
                                                        kept and its result is the mark to commit
    ... checkpoint(mark) in the batch's transaction ...
    length = await writer.finish()                      the whole file, in one piece
    await writer.settle()                               after the final commit: drop the scraps

A mark is JSON: ``{"offset": bytes kept, "multipart": …}``. It is the whole truth: a resume
keeps exactly what it names and nothing a run wrote after it, so a resumed file is
byte-identical to an uninterrupted one.

    local   storage/files/<id>: append + fdatasync (FileSink); a resume cuts the file back to
            the mark's offset; "multipart" is None
    S3      one multipart upload (s3store.S3Result): parts of at least a part size; the bytes
            that do not fill one yet are kept as tail segments beside it; the mark lists the
            upload id, the parts (number, ETag, size) and the segments (key, size)

``open_result`` raises :class:`ResultLost` when the store no longer holds what the mark names
(the file was removed under the task): the task starts the file over.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Protocol

# Bytes gathered before one write + fdatasync in a worker thread.
FLUSH_BYTES = 4 * 1024 * 1024

Mark = dict[str, Any]


class ResultLost(Exception):
    """The store no longer holds the bytes a checkpoint's mark names."""


class ResultWriter(Protocol):
    offset: int  # bytes handed over so far (durable once the last hand_off's future is done)

    async def write(self, *chunks: bytes) -> None: ...

    async def hand_off(self, *chunks: bytes) -> asyncio.Future[Mark]:
        """Queue ``chunks``; the future is done once they (and all before) are kept: its result
        is the mark that says so."""
        ...

    async def sync(self) -> Mark:
        """Everything handed over so far is kept; the mark to commit."""
        ...

    async def finish(self) -> int:
        """Make the file whole and downloadable; returns its length. Redone after a crash, it
        gives the same file."""
        ...

    async def settle(self) -> None:
        """After the final commit: remove what only the writing needed (best effort)."""
        ...

    async def aclose(self) -> None: ...

    def close(self) -> None:
        """Let go at once (nothing may be in flight)."""
        ...


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FileSink:
    """Appends to a local file from a byte ``offset`` (anything after it is cut off first).

    Bytes are gathered in memory and handed, a block at a time, to a worker thread that writes
    and fdatasyncs them while the caller produces the next block; ``sync()`` then only waits
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

    def mark(self) -> Mark:
        return {"offset": self.offset, "multipart": None}

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

    async def hand_off(self, *chunks: bytes) -> asyncio.Future[Mark]:
        await self.write(*chunks)
        await self.drain()
        mark = self.mark()
        writing = self._writing
        if writing is None:
            done: asyncio.Future[Mark] = asyncio.get_running_loop().create_future()
            done.set_result(mark)
            return done

        async def durable() -> Mark:
            await writing
            return mark

        return asyncio.ensure_future(durable())

    async def sync(self) -> Mark:
        await self.drain()
        await self._settle()
        return self.mark()

    async def finish(self) -> int:
        """Sync and cut the file at the current offset (drops bytes a stale runner may have left)."""
        await self.sync()
        os.ftruncate(self.fd, self.offset)
        await asyncio.to_thread(os.fsync, self.fd)
        return self.offset

    async def settle(self) -> None:
        return None

    async def aclose(self) -> None:
        """Close the file, but never under a write still running in a worker thread."""
        job, self._writing = self._writing, None
        if job is None or job.done():
            self._close(job)
            return
        job.add_done_callback(self._close)
        await asyncio.wait([job])

    def close(self) -> None:
        self._close()

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


async def open_local_result(path: Path, mark: Mark | None) -> FileSink:
    """The local file from ``mark``'s offset (a new, empty one without a mark)."""
    offset = int(mark["offset"]) if mark else 0

    def _open() -> FileSink:
        if offset > 0:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise ResultLost(f"{path.name} is gone") from None
            if size < offset:
                raise ResultLost(f"{path.name} holds {size} bytes, fewer than the checkpoint's {offset}")
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = FileSink(path, offset)
        if offset == 0:
            fsync_dir(path.parent)
        return sink

    return await asyncio.to_thread(_open)

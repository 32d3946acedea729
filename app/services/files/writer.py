"""Streaming a PATCH body onto the end of an upload file, durably.

    body chunks ──▶ copied into two page-aligned buffers (reused between requests)
                ──▶ whatever has gathered (up to 4 MiB) is written as soon as the previous write
                    returned, in a worker thread (aiofiles.os), with the hash updates,
                    while the next bytes are received
                every 4-64 MiB, or when the body pauses: fdatasync in the background → `durable`
    end / disconnect: last block, fdatasync → `durable` == bytes on disk

A body of up to 64 MiB is written O_DIRECT: it must be on the disk before the answer anyway,
and skipping the copy into the page cache saves a third of a core at these rates on a small
machine. Longer (or unsized) bodies go through the page cache, whose writeback keeps many
writes in flight. Unaligned heads and tails, and filesystems without O_DIRECT, take the
buffered path too; the kernel keeps both coherent, and fdatasync covers both.

`durable` is the only offset anyone may report: it never runs ahead of bytes on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import mmap
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles.os

from app.errors import PayloadTooLarge
from app.metrics import BYTES_UPLOADED

BLOCK_BYTES = 4 << 20  # at most this much gathers per write
ALIGN = 4096  # O_DIRECT wants page-aligned offsets, lengths and memory
MAX_POOLED_BUFFERS = 8
# Start writeback early (one fdatasync in flight at a time), so the last one before answering is short.
SYNC_EVERY_BYTES = 4 << 20
SYNC_MAX_BYTES = 64 << 20
# A short body must be on the disk before the answer anyway: the page cache would only cost a
# copy. A long one gains from the kernel's writeback, which keeps many writes in flight.
DIRECT_MAX_BYTES = 64 << 20
STALL_SECONDS = 0.05  # a body silent this long gets what it sent synced at once


class BodyInterrupted(Exception):
    """The client went away before the whole body arrived."""


class LockLost(Exception):
    """Another request took over the upload's lock while this one was writing."""


@dataclass
class WriteState:
    start: int
    durable: int
    received: int = 0
    lock_lost: bool = False
    hashers: list[Any] = field(default_factory=list)
    # What the store needs to continue the upload, as of ``durable`` (object storage only).
    multipart: dict[str, Any] | None = None


async def truncate(path: Path, size: int) -> None:
    def _truncate() -> None:
        with path.open("r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    await asyncio.to_thread(_truncate)


async def file_size(path: Path) -> int | None:
    try:
        return (await asyncio.to_thread(path.stat)).st_size
    except FileNotFoundError:
        return None


_fdatasync = aiofiles.os.wrap(os.fdatasync)


def _open_direct(path: Path) -> int | None:
    """A second descriptor that bypasses the page cache, or None where the filesystem refuses it."""
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None


def _open_both(path: Path, direct: bool) -> tuple[int, int | None]:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    return fd, _open_direct(path) if direct else None


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _write_aligned(direct_fd: int | None, fd: int, data: memoryview, offset: int, hashers: list[Any]) -> None:
    """One block: O_DIRECT when given ``direct_fd`` (the block is page-aligned then), else and for
    any rest the kernel did not take directly, through the page cache; then the hashes."""
    written = 0
    if direct_fd is not None:
        try:
            written = os.pwrite(direct_fd, data, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # a filesystem that opens O_DIRECT but refuses this write
                raise
    _write_all(fd, data[written:], offset + written)
    for hasher in hashers:
        hasher.update(data)


_write_aligned_async = aiofiles.os.wrap(_write_aligned)
_buffers: list[mmap.mmap] = []  # reused page-aligned blocks (anonymous mmaps are page-aligned)


def _take_buffer() -> mmap.mmap:
    return _buffers.pop() if _buffers else mmap.mmap(-1, BLOCK_BYTES)


def _give_back(buffer: mmap.mmap) -> None:
    if len(_buffers) < MAX_POOLED_BUFFERS:
        _buffers.append(buffer)


class _Pipeline:
    """Received bytes gather in one buffer while a writer task writes the other one out.

    The writer takes whatever has gathered (up to a page boundary) as soon as its last write
    returned, so the disk never waits for a fixed block size and a body that stalls still
    reaches the disk (and `durable`, through the background fdatasync).
    """

    def __init__(self, state: WriteState, fd: int, direct_fd: int | None) -> None:
        self.state, self.fd, self.direct_fd = state, fd, direct_fd
        self.buffers = [_take_buffer(), _take_buffer()]
        self.current = memoryview(self.buffers[0])
        self.filled = 0
        self.position = self.settled = self.synced_at = state.start  # settled: all before it is written
        self.ended = False
        self.wake = asyncio.Event()  # bytes arrived, or the body ended
        self.room = asyncio.Event()  # the writer took the gathered bytes
        self.syncing: asyncio.Task[None] | None = None
        self.task = asyncio.create_task(self._write_loop())

    async def add(self, chunk: bytes) -> None:
        data = memoryview(chunk)
        while data:
            while self.filled == BLOCK_BYTES:  # both buffers busy: wait for the disk
                self.room.clear()
                self.wake.set()
                waiter = asyncio.ensure_future(self.room.wait())
                try:
                    await asyncio.wait((waiter, self.task), return_when="FIRST_COMPLETED")
                finally:
                    waiter.cancel()
                if self.task.done():
                    self.task.result()  # the writer failed: its error is this request's
                    raise RuntimeError("the upload writer stopped")
            take = min(len(data), BLOCK_BYTES - self.filled)
            self.current[self.filled : self.filled + take] = data[:take]
            self.filled += take
            data = data[take:]
        self.wake.set()

    async def _write_loop(self) -> None:
        while True:
            ended = self.ended
            size = self.filled if ended else self.filled - (self.position + self.filled) % ALIGN
            if size <= 0:
                if ended:
                    return
                self.wake.clear()
                try:
                    async with asyncio.timeout(STALL_SECONDS):
                        await self.wake.wait()
                except TimeoutError:  # the body paused: make what it sent durable (progress shows)
                    self._sync_if(self.settled > self.synced_at)
                    await self.wake.wait()
                continue
            start, block = self.position, self.current[:size]
            self.buffers.reverse()  # keep receiving into the other buffer while this one is written
            following, rest = memoryview(self.buffers[0]), self.filled - size
            following[:rest] = self.current[size : self.filled]
            self.current, self.filled, self.position = following, rest, start + size
            self.room.set()
            direct = self.direct_fd if start % ALIGN == 0 and size % ALIGN == 0 else None
            await _write_aligned_async(direct, self.fd, block, start, self.state.hashers)
            BYTES_UPLOADED.inc(size)
            self.settled = start + size
            # Sync early in short PATCHes (short final wait), rarely in long ones (fewer flushes).
            every = min(SYNC_MAX_BYTES, max(SYNC_EVERY_BYTES, (self.settled - self.state.start) // 4))
            self._sync_if(self.settled - self.synced_at >= every)

    def _sync_if(self, due: bool) -> None:
        if due and (self.syncing is None or self.syncing.done()):
            self.syncing = asyncio.create_task(self._background_sync(self.settled))

    async def _background_sync(self, target: int) -> None:
        await _fdatasync(self.fd)
        self.state.durable = max(self.state.durable, target)
        self.synced_at = target

    async def finish(self) -> int:
        """Write what is left, wait for every write and sync; returns the end of the written bytes."""
        self.ended = True
        self.wake.set()
        try:
            await self.task
        finally:
            if self.syncing is not None:
                with contextlib.suppress(OSError):
                    await self.syncing
            for buffer in self.buffers:
                _give_back(buffer)
        return self.position


async def receive(
    path: Path,
    state: WriteState,
    chunks: AsyncIterator[bytes],
    *,
    limit: int,
    limit_message: str,
    expected: int | None = None,
) -> bool:
    """Append ``chunks`` at ``state.start``; returns False if the body was cut short.

    ``expected`` (the Content-Length, if any) picks the path: a body up to DIRECT_MAX_BYTES
    goes out O_DIRECT, a longer or unknown one through the page cache.

    Raises PayloadTooLarge past ``limit`` bytes and LockLost when the lease went to someone
    else; in both cases the caller decides what to keep of what this request wrote.
    """
    complete = True
    short = expected is not None and expected <= DIRECT_MAX_BYTES
    fd, direct_fd = await asyncio.to_thread(_open_both, path, short)  # one hop for both descriptors
    try:
        pipeline = _Pipeline(state, fd, direct_fd)
        try:
            async for chunk in accepted(state, chunks, limit=limit, limit_message=limit_message):
                await pipeline.add(chunk)
        except BodyInterrupted:
            complete = False
        finally:
            # Whatever happened, leave the file consistent with what was written before anyone looks.
            position = await pipeline.finish()
            await _fdatasync(fd)
            state.durable = position
    finally:
        for descriptor in (fd, direct_fd):
            if descriptor is not None:
                os.close(descriptor)  # a plain close: the fdatasync above already flushed
    return complete


async def accepted(
    state: WriteState, chunks: AsyncIterator[bytes], *, limit: int, limit_message: str
) -> AsyncIterator[bytes]:
    """A body's non-empty chunks, each counted in ``state.received``: PayloadTooLarge past
    ``limit``, LockLost once the lease went to someone else. Every store receives through it."""
    async for chunk in chunks:
        if not chunk:
            continue
        state.received += len(chunk)
        if state.received > limit:
            raise PayloadTooLarge(limit_message)
        if state.lock_lost:
            raise LockLost()
        yield chunk


def new_hasher(algorithm: str) -> Any:
    return hashlib.new(algorithm)

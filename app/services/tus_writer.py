"""Streaming a PATCH body onto the end of an upload file, durably.

    body chunks ──▶ 1 MiB blocks ──▶ pwritev + hash updates in a worker thread (aiofiles.os),
                                     while the next block is received
                     every 4-64 MiB: fdatasync in the background → `durable` moves on
    end / disconnect: last block, fdatasync → `durable` == bytes on disk

`durable` is the only offset anyone may report: it never runs ahead of bytes on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from app.errors import PayloadTooLarge
from app.metrics import BYTES_UPLOADED

BLOCK_BYTES = 1 << 20
MAX_PARTS = 256  # well under IOV_MAX, however small the client's chunks are
# Start writeback early (one fdatasync in flight at a time), so the last one before answering is short.
SYNC_EVERY_BYTES = 4 << 20
SYNC_MAX_BYTES = 64 << 20


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


def _write_block(fd: int, parts: list[bytes], offset: int, hashers: list[Any]) -> None:
    """One block: a positional vectored write (no joining copy, no seek), then the hashes."""
    todo: list[Any] = list(parts)
    while todo:
        written = os.pwritev(fd, todo, offset)
        offset += written
        while todo and written >= len(todo[0]):
            written -= len(todo[0])
            todo.pop(0)
        if written:
            todo[0] = memoryview(todo[0])[written:]
    for hasher in hashers:
        for part in parts:
            hasher.update(part)


_write_block_async = aiofiles.os.wrap(_write_block)
_fdatasync = aiofiles.os.wrap(os.fdatasync)


async def receive(
    path: Path,
    state: WriteState,
    chunks: AsyncIterator[bytes],
    *,
    limit: int,
    limit_message: str,
) -> bool:
    """Append ``chunks`` at ``state.start``; returns False if the body was cut short.

    Raises PayloadTooLarge past ``limit`` bytes and LockLost when the lease went to someone
    else; in both cases the caller decides what to keep of what this request wrote.
    """
    complete = True
    pending: asyncio.Future[Any] | None = None
    syncing: asyncio.Task[None] | None = None
    parts: list[bytes] = []
    buffered = 0
    async with aiofiles.open(path, "r+b", buffering=0) as file:
        fd = file.fileno()
        position = synced_at = state.start

        async def flush_block() -> None:
            nonlocal pending, parts, buffered, position
            if pending is not None:
                await pending
                pending = None
            if not parts:
                return
            pending = asyncio.ensure_future(_write_block_async(fd, parts, position, state.hashers))
            position += buffered
            BYTES_UPLOADED.inc(buffered)
            parts, buffered = [], 0

        async def background_sync() -> None:
            nonlocal synced_at
            target = position
            await _fdatasync(fd)
            state.durable = max(state.durable, target)
            synced_at = target

        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                state.received += len(chunk)
                if state.received > limit:
                    raise PayloadTooLarge(limit_message)
                if state.lock_lost:
                    raise LockLost()
                parts.append(chunk)
                buffered += len(chunk)
                if buffered >= BLOCK_BYTES or len(parts) >= MAX_PARTS:
                    await flush_block()
                    # Sync early in short PATCHes (short final wait), rarely in long ones (fewer flushes).
                    every = min(SYNC_MAX_BYTES, max(SYNC_EVERY_BYTES, (position - state.start) // 4))
                    if position - synced_at >= every and (syncing is None or syncing.done()):
                        await pending  # type: ignore[misc]
                        pending = None
                        syncing = asyncio.create_task(background_sync())
        except BodyInterrupted:
            complete = False
        finally:
            # Whatever happened, leave the file consistent with `position` before anyone looks.
            await flush_block()
            if pending is not None:
                await pending
            if syncing is not None:
                await syncing
            await _fdatasync(fd)
            state.durable = position
    return complete


def new_hasher(algorithm: str) -> Any:
    return hashlib.new(algorithm)

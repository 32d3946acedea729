"""Streaming a PATCH body onto the end of an upload file, durably.

    body chunks ──▶ 1 MiB blocks ──▶ aiofiles write (thread) ─┐   (the next block is received
                                 └─▶ hash updates (thread) ───┘    while this one is written)
                     every 4 MiB: flush + fdatasync in the background → `durable` moves on
    end / disconnect: last block, flush, fdatasync → `durable` == bytes on disk

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

from app.errors import PayloadTooLarge
from app.metrics import BYTES_UPLOADED

BLOCK_BYTES = 1 << 20
# Start writeback early (one fdatasync in flight at a time), so the last one before answering is short.
SYNC_EVERY_BYTES = 4 << 20


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


def _update_all(hashers: list[Any], data: bytes) -> None:
    for hasher in hashers:
        hasher.update(data)


async def _sync(file: Any) -> None:
    await file.flush()
    await asyncio.to_thread(os.fdatasync, file.fileno())


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
    else; in both cases the caller discards what this request wrote.
    """
    complete = True
    pending: asyncio.Future[Any] | None = None
    syncing: asyncio.Task[None] | None = None
    synced_at = state.start
    buffer = bytearray()
    async with aiofiles.open(path, "r+b") as file:
        await file.seek(state.start)
        position = state.start

        async def flush_block() -> None:
            nonlocal pending, buffer, position
            if pending is not None:
                await pending
                pending = None
            if not buffer:
                return
            data, buffer = buffer, bytearray()  # hand the block over without copying it
            jobs = [file.write(data)]
            if state.hashers:
                jobs.append(asyncio.to_thread(_update_all, state.hashers, data))
            pending = asyncio.gather(*jobs)
            position += len(data)
            BYTES_UPLOADED.inc(len(data))

        async def background_sync() -> None:
            nonlocal synced_at
            target = position
            await _sync(file)
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
                buffer += chunk
                if len(buffer) >= BLOCK_BYTES:
                    await flush_block()
                    if position - synced_at >= SYNC_EVERY_BYTES and (syncing is None or syncing.done()):
                        if syncing is not None:
                            await syncing
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
            await _sync(file)
            state.durable = position
    return complete


def new_hasher(algorithm: str) -> Any:
    return hashlib.new(algorithm)

"""Downloads' file access: which stored file a download sends, and its bytes, read ahead.

    stored_file(row)   complete? bytes present? → StoredFile (id, size, mtime, name, type)
    read_range(a, b)   aiofiles reads of 1 MiB, the next read overlapping the current send

The HTTP side (validators, Range, multipart) is app/http/ranges.py; it sees only StoredFile
and a ``read_range``, so another byte store can plug in here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from app.config import Settings
from app.errors import Conflict, NotFound
from app.metrics import BYTES_DOWNLOADED
from app.models import File
from app.services.files.catalog import COMPLETE
from app.services.files.storage import file_path

READ_BYTES = 1 << 20


@dataclass(frozen=True)
class StoredFile:
    """A complete file's bytes as a download sees them."""

    id: str
    path: Path
    size: int
    mtime_ns: int
    filename: str | None
    content_type: str | None

    async def read_range(self, first: int, last: int) -> AsyncIterator[bytes]:
        """Bytes ``first..last`` (inclusive), each read overlapping the send of the one before."""
        async with aiofiles.open(self.path, "rb", buffering=0) as handle:
            async for block in _read_range(handle, first, last):
                yield block


async def stored_file(settings: Settings, row: File) -> StoredFile:
    """The bytes of a complete file; 409 while it is not complete, 404 if its bytes are gone."""
    if row.state != COMPLETE:
        raise Conflict(
            f"file {row.id} is not complete yet (state {row.state!r}); it can be downloaded once complete",
            current_state=row.state,
        )
    path = file_path(settings, row.id)
    try:
        stat = await aiofiles.os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"the bytes of file {row.id} are missing") from None
    return StoredFile(row.id, path, stat.st_size, stat.st_mtime_ns, row.filename, row.content_type)


async def _read_range(handle: Any, first: int, last: int) -> AsyncIterator[bytes]:
    await handle.seek(first)
    remaining = last - first + 1
    pending: asyncio.Future[bytes] | None = asyncio.ensure_future(handle.read(min(READ_BYTES, remaining)))
    try:
        while pending is not None:
            block = await pending
            pending = None
            if not block:
                return  # the file shrank under us; the short body makes the client retry
            remaining -= len(block)
            if remaining > 0:  # read the next block while this one is being sent
                pending = asyncio.ensure_future(handle.read(min(READ_BYTES, remaining)))
            BYTES_DOWNLOADED.inc(len(block))
            yield block
    finally:
        if pending is not None:  # the client went away mid-read: let the read finish before closing
            with contextlib.suppress(Exception):
                await pending

"""Downloads' file access: which stored file a download sends, and its bytes, read ahead.

    stored_file(row)   complete? bytes present (store.stat)? → StoredFile (id, size, mtime, name, type)
    read_range(a, b)   the store's ranged reads (aiofiles or ranged GETs), the next block read
                       while the current one is sent
    open_local()       the local file itself, for a server that sends it with sendfile

The HTTP side (validators, Range, multipart) is app/http/ranges.py; it sees only StoredFile
and its ``read_range``, whichever ByteStore the bytes are in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

from app.config import Settings
from app.errors import Conflict
from app.models import File
from app.services.files.catalog import COMPLETE
from app.services.files.store import ByteStore, missing


@dataclass(frozen=True)
class StoredFile:
    """A complete file's bytes as a download sees them."""

    id: str
    size: int
    mtime_ns: int
    filename: str | None
    content_type: str | None
    store: ByteStore

    def read_range(self, first: int, last: int) -> AsyncIterator[bytes]:
        """Bytes ``first..last`` (inclusive), each read overlapping the send of the one before."""
        return self.store.read_range(self.id, first, last)

    async def open_local(self) -> BinaryIO | None:
        """The file itself, opened, when it is on this machine and unchanged since ``stored_file``
        (for a server that sends it straight from the page cache); else None."""
        path = self.store.local_path(self.id)
        if path is None:
            return None
        try:
            handle = await asyncio.to_thread(path.open, "rb", buffering=0)
        except FileNotFoundError:
            raise missing(self.id) from None
        found = os.fstat(handle.fileno())
        if (found.st_size, found.st_mtime_ns) != (self.size, self.mtime_ns):
            handle.close()
            return None
        return handle


async def stored_file(store: ByteStore, settings: Settings, row: File) -> StoredFile:
    """The bytes of a complete file; 409 while it is not complete, 404 if its bytes are gone."""
    if row.state != COMPLETE:
        raise Conflict(
            f"file {row.id} is not complete yet (state {row.state!r}); it can be downloaded once complete",
            current_state=row.state,
        )
    holder = store  # uploads, exports and rejects alike
    stat = await holder.stat(row.id)
    if stat is None:
        raise missing(row.id)
    return StoredFile(row.id, stat.size, stat.mtime_ns, row.filename, row.content_type, holder)

"""Downloads with HTTP Range (RFC 9110 §13-14): validators, preconditions, ranges, streaming.

    conditional request?  If-Match / If-Unmodified-Since fail → 412
                          If-None-Match / If-Modified-Since match → 304
    Range on GET?         If-Range stale → full 200;  none satisfiable → 416 bytes */size
                          one range → 206 + Content-Range;  several → 206 multipart/byteranges
    body                  aiofiles reads of 1 MiB, the next read overlapping the current send

Files are immutable once complete, so the strong ETag is built from id, size and mtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiofiles
import aiofiles.os

from app.config import Settings
from app.errors import Conflict, NotFound, PreconditionFailed, RangeNotSatisfiable
from app.http.tus import http_date
from app.metrics import BYTES_DOWNLOADED
from app.models import File
from app.services.files.catalog import COMPLETE
from app.services.files.storage import file_path

READ_BYTES = 1 << 20
MAX_RANGES = 64
_RANGE_SPEC = re.compile(r"(\d{1,19})?-(\d{1,19})?")


@dataclass
class Download:
    """What to send: status, headers and the byte ranges of the body (empty for 304/HEAD)."""

    status: int
    headers: dict[str, str]
    path: Path
    ranges: list[tuple[int, int]] = field(default_factory=list)  # inclusive (first, last)
    boundary: str | None = None
    content_type: str = "application/octet-stream"
    part_type: str = "application/octet-stream"
    size: int = 0


def content_disposition(filename: str | None, file_id: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name as filename*."""
    name = filename or file_id
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _etag_list(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def _weak_match(candidates: list[str], etag: str) -> bool:
    bare = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == bare for tag in candidates)


def _http_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """``bytes=`` range-set → satisfiable ranges (maybe empty); None when the header must be ignored."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > MAX_RANGES or not all(parts):
        return None
    ranges: list[tuple[int, int]] = []
    for part in parts:
        match = _RANGE_SPEC.fullmatch(part)
        if match is None or (match.group(1) is None and match.group(2) is None):
            return None
        first, last = match.group(1), match.group(2)
        if first is None:  # suffix: the last n bytes
            n = int(last)  # type: ignore[arg-type]
            if n > 0 and size > 0:
                ranges.append((max(0, size - n), size - 1))
            continue
        start = int(first)
        end = size - 1 if last is None else int(last)
        if last is not None and end < start:
            return None  # syntactically invalid: the whole header is ignored
        if start < size:
            ranges.append((start, min(end, size - 1)))
    return ranges


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge overlapping or touching ranges (RFC 9110 allows it; it stops amplification)."""
    ordered = sorted(ranges)
    if all(b[0] > a[1] + 1 for a, b in itertools.pairwise(ordered)):
        return ranges
    merged = [ordered[0]]
    for first, last in ordered[1:]:
        if first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


async def plan_download(settings: Settings, row: File, method: str, headers: dict[str, str]) -> Download:
    """Decide status, headers and ranges for GET/HEAD of a complete file; raises 409/412/416."""
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
    size = stat.st_size
    etag = f'"{row.id.replace("-", "")[:16]}-{size:x}-{stat.st_mtime_ns:x}"'
    modified = datetime.fromtimestamp(int(stat.st_mtime), UTC)
    content_type = row.content_type or "application/octet-stream"
    base = {
        "ETag": etag,
        "Last-Modified": http_date(modified),
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(row.filename, row.id),
        "Cache-Control": "private, no-cache",
    }
    plan = Download(200, base, path, content_type=content_type, part_type=content_type, size=size)

    if_match = headers.get("if-match")
    if if_match is not None:
        if not any(tag in ("*", etag) for tag in _etag_list(if_match)):
            raise PreconditionFailed("If-Match does not match the file's ETag", headers=base)
    elif (since := _http_time(headers.get("if-unmodified-since"))) is not None and modified > since:
        raise PreconditionFailed("the file was modified after If-Unmodified-Since", headers=base)
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if _weak_match(_etag_list(if_none_match), etag):
            plan.status = 304 if method in ("GET", "HEAD") else 412
            return plan
    elif (since := _http_time(headers.get("if-modified-since"))) is not None and modified <= since:
        plan.status = 304
        return plan

    range_header = headers.get("range")
    if method != "GET" or range_header is None or not _if_range_holds(headers.get("if-range"), etag, modified):
        plan.ranges = [(0, size - 1)] if size else []
        base["Content-Length"] = str(size)
        return plan
    ranges = parse_ranges(range_header, size)
    if ranges is None:
        plan.ranges = [(0, size - 1)] if size else []
        base["Content-Length"] = str(size)
        return plan
    if not ranges:
        raise RangeNotSatisfiable(
            f"none of the requested ranges starts inside the file ({size} bytes)",
            headers={**base, "Content-Range": f"bytes */{size}"},
        )
    ranges = _coalesce(ranges)
    plan.status, plan.ranges = 206, ranges
    if len(ranges) == 1:
        first, last = ranges[0]
        base["Content-Range"] = f"bytes {first}-{last}/{size}"
        base["Content-Length"] = str(last - first + 1)
        return plan
    plan.boundary = secrets.token_hex(16)
    base["Content-Length"] = str(sum(len(h) + (b - a + 1) + 2 for h, (a, b) in _part_heads(plan)) + len(_tail(plan)))
    plan.content_type = f"multipart/byteranges; boundary={plan.boundary}"
    return plan


def _if_range_holds(value: str | None, etag: str, modified: datetime) -> bool:
    """If-Range: a strong ETag must match exactly, a date must equal Last-Modified."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    when = _http_time(value)
    return when is not None and when == modified


def _part_heads(plan: Download) -> list[tuple[bytes, tuple[int, int]]]:
    head = f"--{plan.boundary}\r\nContent-Type: {plan.part_type}\r\nContent-Range: bytes {{}}-{{}}/{plan.size}\r\n\r\n"
    return [(head.format(a, b).encode(), (a, b)) for a, b in plan.ranges]


def _tail(plan: Download) -> bytes:
    return f"--{plan.boundary}--\r\n".encode()


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


async def stream_body(plan: Download) -> AsyncIterator[bytes]:
    """The response body for ``plan``: one range as is, several as multipart/byteranges parts."""
    if not plan.ranges:
        return
    async with aiofiles.open(plan.path, "rb", buffering=0) as handle:
        if plan.boundary is None:
            first, last = plan.ranges[0]
            async for block in _read_range(handle, first, last):
                yield block
            return
        for head, (first, last) in _part_heads(plan):
            yield head
            async for block in _read_range(handle, first, last):
                yield block
            yield b"\r\n"
        yield _tail(plan)

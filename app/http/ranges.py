"""HTTP Range and conditional requests (RFC 9110 §13-14) for a stored file: no I/O here.

    conditional request?  If-Match / If-Unmodified-Since fail → 412
                          If-None-Match / If-Modified-Since match → 304
    Range on GET?         If-Range stale → full 200;  none satisfiable → 416 bytes */size
                          one range → 206 + Content-Range;  several → 206 multipart/byteranges

Files are immutable once complete, so the strong ETag is built from id, size and mtime. The
bytes come from whatever ``read_range`` the caller passes (app/services/files/downloads.py).
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from app.errors import PreconditionFailed, RangeNotSatisfiable
from app.http.tus import http_date
from app.services.files.downloads import StoredFile

ReadRange = Callable[[int, int], AsyncIterator[bytes]]
MAX_RANGES = 64
_RANGE_SPEC = re.compile(r"(\d{1,19})?-(\d{1,19})?")


@dataclass
class Download:
    """What to send: status, headers and the byte ranges of the body (empty for 304/HEAD)."""

    status: int
    headers: dict[str, str]
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
            n = int(last)
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


def plan_download(stored: StoredFile, method: str, headers: dict[str, str]) -> Download:
    """Decide status, headers and ranges for GET/HEAD of a complete file; raises 412/416."""
    size = stored.size
    etag = f'"{stored.id.replace("-", "")[:16]}-{size:x}-{stored.mtime_ns:x}"'
    modified = datetime.fromtimestamp(stored.mtime_ns // 1_000_000_000, UTC)
    content_type = stored.content_type or "application/octet-stream"
    base = {
        "ETag": etag,
        "Last-Modified": http_date(modified),
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(stored.filename, stored.id),
        "Cache-Control": "private, no-cache",
    }
    plan = Download(200, base, content_type=content_type, part_type=content_type, size=size)

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


Piece = bytes | tuple[int, int]  # literal bytes, or an inclusive range of the file


def body_pieces(plan: Download) -> list[Piece]:
    """The response body for ``plan``: one range as is, several as multipart/byteranges parts."""
    if not plan.ranges:
        return []
    if plan.boundary is None:
        return [plan.ranges[0]]
    pieces: list[Piece] = []
    for head, byte_range in _part_heads(plan):
        pieces += [head, byte_range, b"\r\n"]
    pieces.append(_tail(plan))
    return pieces


async def stream_body(plan: Download, read_range: ReadRange) -> AsyncIterator[bytes]:
    """The body's bytes, the file's ranges read through ``read_range``."""
    for piece in body_pieces(plan):
        if isinstance(piece, bytes):
            yield piece
        else:
            async for block in read_range(*piece):
                yield block

"""Files: list / info / delete, and resumable upload (tus 1.0.0).

A resume store entry maps the file's fingerprint to its tus upload URL:

    found in store? ──yes──▶ HEAD url ──▶ Upload-Offset ──┐      (404/410: forget, create anew)
          └──no──▶ OPTIONS, POST /files ──▶ Location ─────┴──▶ PATCH chunk @offset (+Upload-Checksum)
    failure (network, 423/5xx/460): back off, HEAD for the true offset, carry on from there
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import httpx

from clients._base import ByteProgress, Core, describe
from clients._core import Call, Emit, Op, Send, Sleep
from clients.errors import (
    APIError,
    ConnectionFailed,
    IntegrityError,
    NotFound,
    ProtocolError,
    raise_for_status,
)
from clients.models import FileInfo, Page, UploadResult
from clients.store import fingerprint

TUS = {"Tus-Resumable": "1.0.0"}
SLICE = 256 * 1024  # progress granularity inside one PATCH
CHECKSUM_PREFERENCE = ("sha256", "sha1", "md5")
GONE = (403, 404, 410)
RETRY = frozenset({423, 429, 460, 500, 502, 503, 504})


def file_path(file_id: str, suffix: str = "") -> str:
    return f"/files/{quote(file_id, safe='')}{suffix}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Pace:
    """Keeps a transfer at or below ``rate`` bytes per second (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.rate, self.start, self.sent = rate, time.monotonic(), 0

    def after(self, count: int) -> float:
        """Seconds to wait after ``count`` more bytes."""
        self.sent += count
        if not self.rate:
            return 0.0
        return max(0.0, self.start + self.sent / self.rate - time.monotonic())


def _slices(data: bytes, done: int, total: int, on_progress: ByteProgress | None) -> Iterator[bytes]:
    """``data`` in pieces, reporting the bytes handed to the connection as each piece goes."""
    view = memoryview(data)
    for start in range(0, len(data), SLICE):
        piece = view[start : start + SLICE]
        yield bytes(piece)
        if on_progress is not None:
            on_progress(done + start + len(piece), total)


def _digest(algorithm: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)


class FileOps(Core):
    """The file operations and the upload, as generators."""

    def list_files(self, /, *, limit: int = 50, cursor: str | None = None, **filters: str) -> Op[Page[FileInfo]]:
        """One page of your files, newest first (filters as the server accepts them, e.g. ``state``)."""
        params = {"limit": limit, **({"cursor": cursor} if cursor else {}), **filters}
        return (yield from self.request_json("GET", "/files", Page[FileInfo].model_validate, params=params))

    def iter_files(self, /, *, page_size: int = 100, **filters: str) -> Op[None]:
        """Every file (following the cursor), newest first."""
        cursor: str | None = None
        while True:
            page = yield from self.list_files(limit=page_size, cursor=cursor, **filters)
            for item in page.items:
                yield Emit(item)
            if not (cursor := page.next_cursor):
                return

    def file_info(self, file_id: str) -> Op[FileInfo]:
        """One file: name, type, length, offset, state, sha256."""
        return (yield from self.request_json("GET", file_path(file_id, "/info"), FileInfo.model_validate))

    def delete_file(self, file_id: str) -> Op[None]:
        """Delete a file, or terminate an unfinished upload (tus termination)."""
        yield from self.request("DELETE", file_path(file_id), headers=TUS)

    # ---- upload ------------------------------------------------------------------------------

    def _tus_options(self) -> Op[dict[str, str]]:
        try:
            response = yield from self.request("OPTIONS", "/files", headers=TUS)
        except APIError:
            return {}  # OPTIONS is optional for a server to answer: assume core only
        versions = [v.strip() for v in response.headers.get("tus-version", "1.0.0").split(",")]
        if "1.0.0" not in versions:
            raise ProtocolError(f"the server speaks tus {', '.join(versions)}, this client 1.0.0")
        return {k.lower(): v for k, v in response.headers.items()}

    def _tus_offset(self, url: str, size: int) -> Op[int | None]:
        """The server's offset for ``url``, or None when that upload is gone or is another file's."""
        try:
            response = yield from self.request("HEAD", url, headers=TUS)
        except APIError as exc:
            if exc.status in GONE:
                return None
            raise
        offset, length = response.headers.get("upload-offset", ""), response.headers.get("upload-length")
        if not offset.isdigit():
            raise ProtocolError(f"HEAD {url}: no valid Upload-Offset in the answer")
        if length is not None and length != str(size):
            return None
        return int(offset)

    def _tus_create(self, size: int, metadata: dict[str, str]) -> Op[str]:
        headers = {**TUS, "Upload-Length": str(size)}
        if metadata:
            headers["Upload-Metadata"] = ",".join(f"{k} {_b64(v)}" for k, v in metadata.items())
        response = yield from self.request("POST", "/files", headers=headers, idempotent=True)
        if response.status_code != 201 or not response.headers.get("location"):
            raise ProtocolError(f"POST /files answered {response.status_code} without a Location")
        return str(response.url.join(response.headers["location"]))

    def _tus_send(
        self,
        url: str,
        path: Path,
        offset: int,
        size: int,
        algorithm: str | None,
        *,
        on_progress: ByteProgress | None,
        limit_rate: float | None,
        chunk_size: int | None,
    ) -> Op[int]:
        pace = Pace(limit_rate)
        chunk_size = chunk_size or self.chunk_size
        if pace.rate:  # small chunks keep a limited rate smooth (and pauses short)
            chunk_size = max(16 * 1024, min(chunk_size, int(pace.rate / 4)))
        failures = 0
        with path.open("rb") as handle:
            while offset < size:
                data = yield Call(_read_at, (handle, offset, min(chunk_size, size - offset)))
                if len(data) != min(chunk_size, size - offset):
                    raise IntegrityError(f"{path} changed while it was being uploaded")
                headers = {
                    **TUS,
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Offset": str(offset),
                    "Content-Length": str(len(data)),
                }
                if algorithm:
                    headers["Upload-Checksum"] = f"{algorithm} {(yield Call(_digest, (algorithm, data)))}"
                body = _slices(data, offset, size, on_progress)
                response: httpx.Response | None = None
                try:
                    response = yield Send("PATCH", url, headers=headers, content=body)
                except httpx.TransportError as exc:
                    reason = describe(exc)
                else:
                    if response.status_code in (200, 204):
                        new = response.headers.get("upload-offset", "")
                        if not new.isdigit() or not offset < int(new) <= offset + len(data):
                            raise ProtocolError(f"PATCH {url}: bad Upload-Offset {new!r} in the answer")
                        if failures and self.on_retry is not None:
                            self.on_retry("")  # going again
                        offset, failures = int(new), 0
                        yield Sleep(pace.after(len(data)))
                        continue
                    if response.status_code in GONE:
                        raise_for_status(response)
                    if response.status_code not in RETRY and response.status_code != 409:
                        raise_for_status(response)
                    reason = f"{response.status_code} {response.reason_phrase}"
                if failures >= self.retries:
                    if response is not None:
                        raise_for_status(response)
                    raise ConnectionFailed(f"upload to {self.server} failed: {reason}")
                wait = self.delay(failures, response)
                if self.on_retry is not None:
                    self.on_retry(f"{reason}; retry {failures + 1}/{self.retries} in {wait:.0f}s")
                yield Sleep(wait)
                failures += 1
                # Whatever happened, the server's offset is the truth (it kept the bytes that arrived).
                current = yield from self._tus_offset(url, size)
                if current is None:
                    raise NotFound(f"the upload {url} is gone from the server", status=404)
                offset = current
                if on_progress is not None:
                    on_progress(offset, size)
        return offset

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        filename: str | None = None,
        content_type: str | None = None,
        checksum: str | None = "auto",
        chunk_size: int | None = None,
        limit_rate: float | None = None,
        resume: bool = True,
        on_progress: ByteProgress | None = None,
    ) -> Op[UploadResult]:
        """Upload a file with tus; calling it again after any interruption continues where it stopped.

        ``checksum``: "auto" (the best algorithm the server offers), a name ("sha256", "sha1",
        "md5") or None. ``limit_rate``: bytes per second. ``on_progress(done, total)`` in bytes:
        sent so far (after a retry, what the server has) of the file's size.
        """
        source = Path(path)
        size = source.stat().st_size
        key = f"{self.server}|{(yield Call(fingerprint, (source,)))}"
        options = yield from self._tus_options()
        offered = [a.strip().lower() for a in options.get("tus-checksum-algorithm", "").split(",") if a.strip()]
        if checksum == "auto":
            checksum = next((a for a in CHECKSUM_PREFERENCE if a in offered), None)
        elif checksum is not None and checksum.lower() not in offered:
            raise ProtocolError(f"the server does not accept {checksum} checksums (it offers: {offered or 'none'})")
        max_size = options.get("tus-max-size", "")
        if max_size.isdigit() and size > int(max_size):
            raise ProtocolError(f"{source} is {size} bytes; the server accepts at most {max_size}")

        entry = self.store.get("uploads", key) if resume else None
        url, offset = None, 0
        if entry and isinstance(entry.get("url"), str):
            found = yield from self._tus_offset(entry["url"], size)
            if found is None:
                self.store.put("uploads", key, None)
            else:
                url, offset = entry["url"], found
        resumed_from = offset
        if url is None:
            name = filename or source.name
            kind = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
            url = yield from self._tus_create(size, {"filename": name, "filetype": kind})
            self.store.put("uploads", key, {"url": url, "path": str(source.resolve())})
        if on_progress is not None:
            on_progress(offset, size)
        yield from self._tus_send(
            url, source, offset, size, checksum, on_progress=on_progress, limit_rate=limit_rate, chunk_size=chunk_size
        )
        self.store.put("uploads", key, None)
        file_id = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        return UploadResult(file_id=file_id, url=url, size=size, resumed_from=resumed_from, checksum=checksum)

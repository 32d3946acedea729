"""Files: list / info / delete, resumable upload (tus 1.0.0) and resumable download (RFC 9110 Range).

Upload — a resume store entry maps the file's fingerprint to its tus upload URL:

    found in store? ──yes──▶ HEAD url ──▶ Upload-Offset ──┐      (404/410: forget, create anew)
          └──no──▶ OPTIONS, POST /files ──▶ Location ─────┴──▶ PATCH chunk @offset (+Upload-Checksum)
    failure (network, 423/5xx/460): back off, HEAD for the true offset, carry on from there

Download — bytes go to ``dest.part``; its validator (ETag) is kept in the store:

    GET Range: bytes=<part size>- If-Range: <etag> ──▶ 206: append │ 200: file changed, start over
    ──▶ size (and sha256 when the server knows it) verified ──▶ fsync, rename to ``dest``
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import re
import time
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

import httpx

from clients._base import BaseClient, ProgressCallback, describe
from clients._core import Call, Chunk, Close, Emit, Op, Send, Sleep, operation, stream
from clients.errors import (
    APIError,
    ConnectionFailed,
    IntegrityError,
    NotFound,
    ProtocolError,
    raise_for_status,
)
from clients.models import DownloadResult, FileInfo, Page, UploadResult
from clients.store import fingerprint

TUS = {"Tus-Resumable": "1.0.0"}
SLICE = 256 * 1024  # progress granularity inside one PATCH
CHECKSUM_PREFERENCE = ("sha256", "sha1", "md5")
GONE = (403, 404, 410)
RETRY = frozenset({423, 429, 460, 500, 502, 503, 504})


def _file_path(file_id: str, suffix: str = "") -> str:
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


def _slices(data: bytes, done: int, total: int, on_progress: ProgressCallback | None) -> Any:
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


def _filename_from(disposition: str | None) -> str | None:
    """The file name in Content-Disposition (RFC 6266; ``filename*`` preferred), as a bare name."""
    if not disposition:
        return None
    name = None
    if match := re.search(r"filename\*\s*=\s*([\w!#$%&+^`{}~-]+)'[^']*'([^;\s]+)", disposition, re.I):
        name = unquote(match.group(2), encoding=match.group(1) or "utf-8", errors="replace")
    elif match := re.search(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"|filename\s*=\s*([^;\s]+)', disposition, re.I):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        name = re.sub(r"\\(.)", r"\1", name)
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "").strip()
    return None if name in ("", ".", "..") else name


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _finish(part: Path, dest: Path) -> None:
    with part.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(part, dest)  # atomic: ``dest`` is either absent or complete


def _total_from_range(content_range: str | None) -> tuple[int | None, int | None]:
    """``bytes a-b/total`` or ``bytes */total`` → (a, total)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", content_range or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    return start, int(match.group(2)) if match.group(2) != "*" else None


class FilesAPI(BaseClient):
    @operation
    def list_files(self, *, limit: int = 50, cursor: str | None = None, **filters: str) -> Op[Page[FileInfo]]:
        """One page of your files, newest first (filters as the server accepts them, e.g. ``state``)."""
        params = {"limit": limit, **({"cursor": cursor} if cursor else {}), **filters}
        return (yield from self._json("GET", "/files", Page[FileInfo].model_validate, params=params))

    @stream(FileInfo)
    def iter_files(self, *, page_size: int = 100, **filters: str) -> Op[None]:
        """Every file (following the cursor), newest first."""
        cursor: str | None = None
        while True:
            page = yield from FilesAPI.list_files.fn(self, limit=page_size, cursor=cursor, **filters)
            for item in page.items:
                yield Emit(item)
            if not (cursor := page.next_cursor):
                return

    @operation
    def file_info(self, file_id: str) -> Op[FileInfo]:
        """One file: name, type, length, offset, state, sha256."""
        return (yield from self._json("GET", _file_path(file_id, "/info"), FileInfo.model_validate))

    @operation
    def delete_file(self, file_id: str) -> Op[None]:
        """Delete a file, or terminate an unfinished upload (tus termination)."""
        yield from self._request("DELETE", _file_path(file_id), headers=TUS)

    # ---- upload ------------------------------------------------------------------------------

    def _tus_options(self) -> Op[dict[str, str]]:
        try:
            response = yield from self._request("OPTIONS", "/files", headers=TUS)
        except APIError:
            return {}  # OPTIONS is optional for a server to answer: assume core only
        versions = [v.strip() for v in response.headers.get("tus-version", "1.0.0").split(",")]
        if "1.0.0" not in versions:
            raise ProtocolError(f"the server speaks tus {', '.join(versions)}, this client 1.0.0")
        return {k.lower(): v for k, v in response.headers.items()}

    def _tus_offset(self, url: str, size: int) -> Op[int | None]:
        """The server's offset for ``url``, or None when that upload is gone or is another file's."""
        try:
            response = yield from self._request("HEAD", url, headers=TUS)
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
        response = yield from self._request("POST", "/files", headers=headers, idempotent=True)
        if response.status_code != 201 or not response.headers.get("location"):
            raise ProtocolError(f"POST /files answered {response.status_code} without a Location")
        return str(response.url.join(response.headers["location"]))

    def _tus_send(self, url: str, path: Path, offset: int, size: int, algorithm: str | None, **opts: Any) -> Op[int]:
        on_progress: ProgressCallback | None = opts.get("on_progress")
        pace = Pace(opts.get("limit_rate"))
        chunk_size = opts.get("chunk_size") or self.chunk_size
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
                yield Sleep(self._delay(failures, response))
                failures += 1
                # Whatever happened, the server's offset is the truth (it kept the bytes that arrived).
                current = yield from self._tus_offset(url, size)
                if current is None:
                    raise NotFound(f"the upload {url} is gone from the server", status=404)
                offset = current
                if on_progress is not None:
                    on_progress(offset, size)
        return offset

    @operation
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
        on_progress: ProgressCallback | None = None,
    ) -> Op[UploadResult]:
        """Upload a file with tus; calling it again after any interruption continues where it stopped.

        ``checksum``: "auto" (the best algorithm the server offers), a name ("sha256", "sha1",
        "md5") or None. ``limit_rate``: bytes per second. ``on_progress(done, total)``.
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

    # ---- download ----------------------------------------------------------------------------

    def _target(self, file_id: str, dest: str | os.PathLike[str] | None) -> Op[Path]:
        target = Path(dest) if dest is not None else None
        if target is not None and not target.is_dir():
            return target
        response = yield from self._request("HEAD", _file_path(file_id))
        name = _filename_from(response.headers.get("content-disposition")) or file_id
        return (target or Path.cwd()) / name

    @operation
    def download(
        self,
        file_id: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        verify: bool = True,
        overwrite: bool = False,
        limit_rate: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Op[DownloadResult]:
        """Download to ``dest`` (a path or a folder; default: the file's name in the current folder).

        Bytes stream to ``dest.part``; calling it again after any interruption continues with a
        Range request. When complete, size (and sha256, if the server knows it) are checked and
        the file is renamed to ``dest`` atomically; an existing ``dest`` is only replaced with
        ``overwrite=True``. ``on_progress(done, total)``.
        """
        target = yield from self._target(file_id, dest)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists (overwrite=True / --force replaces it)")
        part = target.with_name(target.name + ".part")
        key = f"{self.server}|{file_id}|{target.resolve()}"
        entry = self.store.get("downloads", key) or {}
        have = part.stat().st_size if part.exists() and entry.get("validator") else 0
        resumed_from, total, failures, pace = have, entry.get("length"), 0, Pace(limit_rate)
        while True:
            headers = {"Accept-Encoding": "identity"}
            if have:
                headers.update({"Range": f"bytes={have}-", "If-Range": entry["validator"]})
            response: httpx.Response | None = None
            before = have
            try:
                response = yield Send("GET", _file_path(file_id), headers=headers, stream=True, chunk_size=SLICE)
                if response.status_code == 416 and have:
                    _, total = _total_from_range(response.headers.get("content-range"))
                    if total == have:
                        break  # every byte was already here
                    have = 0
                    continue
                if response.status_code >= 400 and not (response.status_code in RETRY and failures < self.retries):
                    raise_for_status(response)
                if response.status_code == 206:
                    start, total = _total_from_range(response.headers.get("content-range"))
                    if start != have:
                        raise ProtocolError(f"asked for bytes from {have}, got {response.headers['content-range']}")
                elif response.status_code == 200:
                    have, resumed_from = 0, 0  # no resume possible (file changed, or Range ignored)
                    length = response.headers.get("content-length", "")
                    total = int(length) if length.isdigit() else None
                if response.status_code < 300:
                    validator = response.headers.get("etag", "")
                    if not validator or validator.startswith("W/"):
                        validator = response.headers.get("last-modified", "")
                    entry = {"validator": validator, "length": total}
                    self.store.put("downloads", key, entry if validator else None)
                    with part.open("ab" if have else "wb") as handle:
                        while chunk := (yield Chunk(response)):
                            yield Call(handle.write, (chunk,))
                            have += len(chunk)
                            if on_progress is not None:
                                on_progress(have, total)
                            if pace.rate:
                                yield Sleep(pace.after(len(chunk)))
                    yield Close(response)
                    if total is None or have >= total:
                        break
                    reason = f"the body ended after {have} of {total} bytes"
                else:
                    reason = f"{response.status_code} {response.reason_phrase}"
            except httpx.TransportError as exc:
                reason = describe(exc)
                if response is not None and not response.is_closed:
                    yield Close(response)
            have = part.stat().st_size if part.exists() and entry.get("validator") else 0
            if have > before:
                failures = 0  # progress was made: only consecutive failures count
            if failures >= self.retries:
                raise ConnectionFailed(f"download from {self.server} failed: {reason}")
            yield Sleep(self._delay(failures))
            failures += 1
        return (yield from self._verify(file_id, part, target, key, have, total, resumed_from, verify))

    def _verify(
        self, file_id: str, part: Path, target: Path, key: str, have: int, total: int | None, resumed: int, verify: bool
    ) -> Op[DownloadResult]:
        checked: list[str] = []
        sha256: str | None = None
        if total is not None:
            if have != total:
                raise IntegrityError(f"downloaded {have} bytes, the server announced {total}")
            checked.append("size")
        if verify:
            try:
                expected = (yield from FilesAPI.file_info.fn(self, file_id)).sha256
            except APIError:
                expected = None  # a plain HTTP server has no info endpoint: size is all we can check
            if expected:
                sha256 = yield Call(_sha256_file, (part,))
                if sha256 != expected.lower():
                    part.unlink(missing_ok=True)
                    self.store.put("downloads", key, None)
                    raise IntegrityError(f"sha256 of the download is {sha256}, the server says {expected}")
                checked.append("sha256")
        yield Call(_finish, (part, target))
        self.store.put("downloads", key, None)
        return DownloadResult(file_id, str(target), have, resumed, sha256, checked)

"""Resumable download with RFC 9110 Range requests.

Bytes go to ``dest.part``; the file's validator (ETag) is kept in the resume store:

    GET Range: bytes=<part size>- If-Range: <etag> ──▶ 206: append │ 200: file changed, start over
    ──▶ size (and sha256 when the server knows it) verified ──▶ fsync, rename to ``dest``
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote

import httpx

from clients._base import ByteProgress, describe
from clients._core import Call, Chunk, Close, Op, Send, Sleep
from clients._files import RETRY, SLICE, FileOps, Pace, file_path
from clients.errors import APIError, ConnectionFailed, IntegrityError, ProtocolError, raise_for_status
from clients.models import DownloadResult


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


def _unreported(done: int, total: int | None) -> None:
    """The progress callback of a caller that passed none."""


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


class DownloadOps(FileOps):
    """The download, as a generator, beside the file operations it builds on."""

    def _target(self, file_id: str, dest: str | os.PathLike[str] | None) -> Op[Path]:
        target = Path(dest) if dest is not None else None
        if target is not None and not target.is_dir():
            return target
        response = yield from self.request("HEAD", file_path(file_id))
        name = _filename_from(response.headers.get("content-disposition")) or file_id
        return (target or Path.cwd()) / name

    def download(
        self,
        file_id: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        verify: bool = True,
        overwrite: bool = False,
        limit_rate: float | None = None,
        on_progress: ByteProgress | None = None,
    ) -> Op[DownloadResult]:
        """Download to ``dest`` (a path or a folder; default: the file's name in the current folder).

        Bytes stream to ``dest.part``; calling it again after any interruption continues with a
        Range request. When complete, size (and sha256, if the server knows it) are checked and
        the file is renamed to ``dest`` atomically; an existing ``dest`` is only replaced with
        ``overwrite=True``. ``limit_rate``: bytes per second. ``on_progress(done, total)`` in
        bytes: in ``dest.part`` so far, of the file's size (None when the server does not say).
        """
        target = yield from self._target(file_id, dest)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists (overwrite=True / --force replaces it)")
        part = target.with_name(target.name + ".part")
        key = f"{self.server}|{file_id}|{target.resolve()}"
        entry = self.store.get("downloads", key) or {}
        have = part.stat().st_size if part.exists() and entry.get("validator") else 0
        resumed_from, total, failures, pace = have, entry.get("length"), 0, Pace(limit_rate)
        report = on_progress or _unreported
        while True:
            headers = {"Accept-Encoding": "identity"}
            if have:
                headers.update({"Range": f"bytes={have}-", "If-Range": entry["validator"]})
            response: httpx.Response | None = None
            before = have
            try:
                response = yield Send("GET", file_path(file_id), headers=headers, stream=True, chunk_size=SLICE)
                if response.status_code == 416 and have:
                    _, total = _total_from_range(response.headers.get("content-range"))
                    if total == have:
                        report(have, total)
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
                    report(have, total)  # where this request starts: a resumed download is not at 0
                    with part.open("ab" if have else "wb") as handle:
                        while chunk := (yield Chunk(response)):
                            yield Call(handle.write, (chunk,))
                            have += len(chunk)
                            report(have, total)
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
            yield Sleep(self.delay(failures))
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
                expected = (yield from self.file_info(file_id)).sha256
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

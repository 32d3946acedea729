"""The local resume store: what an interrupted transfer needs to continue after the process died.

One JSON file in the user's cache dir (``$TSM_CACHE_DIR``, else ``$XDG_CACHE_HOME/tsm``,
``~/Library/Caches/tsm`` or ``%LOCALAPPDATA%\\tsm``):

    {"uploads":   {"<server>|<size>|<mtime_ns>|<sha256 of head+tail>": {"url": …, "file_id": …}},
     "downloads": {"<server>|<file id>|<absolute dest>": {"etag": …, "length": …}}}

An upload is found again by the file's *fingerprint*, not its path, so renaming the file keeps
the resume while touching its contents starts over. Writes go to a temporary file and are
renamed over the store, under an advisory lock, so concurrent ``tsm`` processes don't lose entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SAMPLE = 64 * 1024
MAX_AGE_SECONDS = 30 * 24 * 3600  # entries older than this are dropped (servers expire uploads sooner)


def default_cache_dir() -> Path:
    if explicit := os.environ.get("TSM_CACHE_DIR"):
        return Path(explicit)
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "tsm"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "tsm"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tsm"


def fingerprint(path: Path) -> str:
    """``size|mtime_ns|sha256(first 64 KiB + last 64 KiB)``: cheap even for huge files."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(SAMPLE))
        if stat.st_size > SAMPLE:
            handle.seek(max(SAMPLE, stat.st_size - SAMPLE))
            digest.update(handle.read(SAMPLE))
    return f"{stat.st_size}|{stat.st_mtime_ns}|{digest.hexdigest()}"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: best effort, the rename below is still atomic
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ResumeStore:
    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / "resume.json"

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # missing or damaged: a resume store is only ever a hint
        return data if isinstance(data, dict) else {}

    def get(self, section: str, key: str) -> dict[str, Any] | None:
        entry = self._load().get(section, {}).get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, section: str, key: str, value: dict[str, Any] | None) -> None:
        """Set (or with ``None`` remove) one entry."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / "resume.lock"):
            data = self._load()
            entries = data.setdefault(section, {})
            now = time.time()
            for stale in [k for k, v in entries.items() if now - v.get("saved_at", now) > MAX_AGE_SECONDS]:
                del entries[stale]
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = {**value, "saved_at": now}
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".resume-", suffix=".json")
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)

"""Where bytes live on disk. Files are stored by generated id only: a client's file name
never becomes (part of) a path.

    storage/
      files/<uuid>          uploads, export results, reject files (one per `files` row)
      tables/<owner>.sqlite3  imported tables of one owner (SQLite only)
"""

from __future__ import annotations

import uuid
from pathlib import Path

from app.config import Settings
from app.errors import NotFound


def files_dir(settings: Settings) -> Path:
    return settings.storage_dir / "files"


def file_path(settings: Settings, file_id: str) -> Path:
    """The on-disk path of a file row's bytes; any id that is not a UUID is simply not found."""
    try:
        canonical = str(uuid.UUID(file_id))
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no file with id {file_id!r}") from None
    if canonical != file_id:
        raise NotFound(f"no file with id {file_id!r}")
    return files_dir(settings) / canonical


def ensure_dirs(settings: Settings) -> None:
    for folder in (settings.storage_dir, files_dir(settings), settings.storage_dir / "tables"):
        folder.mkdir(parents=True, exist_ok=True)

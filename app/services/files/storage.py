"""Where bytes live on disk. Files are stored by generated id only: a client's file name
never becomes (part of) a path.

    storage/
      files/<uuid>            uploads, export results, reject files (one per `files` row)
      tables/<owner>.sqlite3  imported tables of one owner (SQLite only)
      tsm.sqlite3             the service's own database in the zero-setup mode (with its
                              -wal, -shm, -journal), or wherever TSM_DATABASE_URL names it

Everything the service manages there is :func:`managed_by_service`; a server-side path a
client names (an import's ``path``) must never reach it. That is decided from the resolved
path and ``stat`` alone, never by opening the file: POSIX locks belong to the process, so
closing *any* descriptor of the service's SQLite database in this process drops the locks
SQLite holds on it, and the next outside opener removes the WAL under the running server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from app.config import Settings
from app.errors import NotFound

DEFAULT_DATABASE = "tsm.sqlite3"
SQLITE_SIBLINGS = ("", "-wal", "-shm", "-journal")
OWNERS_DATA = "inside owners' data; import by file_id instead"
OWN_DATABASE = "the service's own database"
METRICS_DIR = "the service's metrics directory (PROMETHEUS_MULTIPROC_DIR)"


def files_dir(settings: Settings) -> Path:
    return settings.storage_dir / "files"


def tables_dir(settings: Settings) -> Path:
    return settings.storage_dir / "tables"


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
    for folder in (settings.storage_dir, files_dir(settings), tables_dir(settings)):
        folder.mkdir(parents=True, exist_ok=True)


# -- what the service manages -------------------------------------------------------------


def sqlite_database(settings: Settings) -> Path | None:
    """The service's SQLite database file, or None (PostgreSQL, in-memory)."""
    url = make_url(settings.effective_database_url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI file name (?uri=true)
        database = urlsplit(database).path
    return Path(database) if database else None


def _database_files(settings: Settings) -> set[Path]:
    """Each database file and its siblings, under the name given and the one symlinks lead to.
    The zero-setup location counts too: `tsm-server keys create` without settings opens it."""
    bases = set()
    for database in (sqlite_database(settings), settings.storage_dir / DEFAULT_DATABASE):
        if database is not None:
            bases |= {database.parent.resolve() / database.name, database.resolve()}
    return {base.with_name(base.name + suffix) for base in bases for suffix in SQLITE_SIBLINGS}


def _managed_dirs(settings: Settings) -> Iterator[tuple[Path, str]]:
    yield files_dir(settings).resolve(), OWNERS_DATA
    yield tables_dir(settings).resolve(), OWNERS_DATA
    metrics = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics:
        yield Path(metrics).resolve(), METRICS_DIR


def managed_by_service(settings: Settings, resolved: Path) -> str | None:
    """What ``resolved`` (symlinks already followed) is, if the service manages it; by path only."""
    for folder, what in _managed_dirs(settings):
        if resolved.is_relative_to(folder):
            return what
    if resolved in _database_files(settings):
        return OWN_DATABASE
    return None


def linked_to_service(settings: Settings, found: os.stat_result) -> str | None:
    """The same check for another name of the same file (a hard link): by inode, from ``stat``
    and directory listings only."""
    inode = (found.st_dev, found.st_ino)
    for path in _database_files(settings):
        try:
            other = path.stat()
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == inode:
            return OWN_DATABASE
    if found.st_nlink < 2:
        return None
    for folder, what in _managed_dirs(settings):
        try:
            device = folder.stat().st_dev
            with os.scandir(folder) as entries:
                if device == found.st_dev and any(entry.inode() == found.st_ino for entry in entries):
                    return what
        except OSError:
            continue
    return None

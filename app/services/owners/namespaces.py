"""Identifiers and the data namespace for imported tables.

Every owner's tables live apart from the service's own tables and from each other's:
on PostgreSQL in schema ``<data_namespace>_<owner>``; on SQLite in the database file
``storage/tables/<owner>.sqlite3``. Identifiers are validated *and* quoted.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings
from app.errors import Unprocessable
from app.services.files.storage import tables_dir

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
RESERVED_PREFIXES = ("pg_", "sqlite_", "tsm_")
# Column names a table cannot use on both databases: PostgreSQL's system columns (15: tableoid,
# xmin, cmin, xmax, cmax, ctid; oid until 12) and SQLite's row id aliases, which a column of
# that name would hide from an export that pages by row id.
RESERVED_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", "oid", "rowid", "_rowid_"})
# Columns per table: PostgreSQL's limit (SQLite's default SQLITE_MAX_COLUMN is 2000).
MAX_COLUMNS = 1600


def validate_identifier(name: str, what: str = "table") -> str:
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise Unprocessable(
            f"{what} name {name!r} is not allowed: use 1-63 letters, digits and _, not starting with a digit"
        )
    if name.lower().startswith(RESERVED_PREFIXES):
        raise Unprocessable(
            f"{what} name {name!r} is not allowed: prefixes {', '.join(RESERVED_PREFIXES)} are reserved"
        )
    return name


def validate_column_name(name: str) -> str:
    validate_identifier(name, "column")
    if name.lower() in RESERVED_COLUMNS:
        raise Unprocessable(
            f"column name {name!r} is not allowed: {', '.join(sorted(RESERVED_COLUMNS))} are system column names"
        )
    return name


def quote(name: str) -> str:
    """Quote an identifier for SQL (both dialects accept double quotes)."""
    return '"' + name.replace('"', '""') + '"'


def owner_schema(settings: Settings, owner: str) -> str:
    return f"{settings.data_namespace}_{owner}"


def sqlite_tables_path(settings: Settings, owner: str) -> Path:
    return tables_dir(settings) / f"{owner}.sqlite3"

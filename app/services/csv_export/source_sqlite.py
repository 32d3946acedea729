"""SQLite export source: the owner's tables file, read in keyset pages on a worker thread.

One page is one statement (so one consistent read)::

    SELECT cols, key FROM t WHERE key > ? AND <filters> ORDER BY key LIMIT n

The last row's key is the next position. Typed values are written as PostgreSQL's export
writes them (plan.py: true/false, ISO 8601, numbers without exponent), by declared type. Rows
become CSV with the same quoting rules as
PostgreSQL's ``COPY ... (FORMAT csv)`` (a NULL is the ``null`` string unquoted; a text equal to
it, or holding the delimiter, a quote or a line break, is quoted). Filters are bound ``?``
parameters. The file is opened with ``query_only`` on: an export can never write to it.
"""

from __future__ import annotations

import asyncio
import math
import re
import sqlite3
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from app.errors import NotFound
from app.services.csv_export.plan import (
    COMPARISONS,
    ExportPlan,
    KeyCandidate,
    Page,
    check_columns,
    choose_key,
    csv_field,
)
from app.services.owners.namespaces import quote

BOOL_TRUE = frozenset({"t", "true", "y", "yes", "on", "1"})
BOOL_FALSE = frozenset({"f", "false", "n", "no", "off", "0"})
ROWID_ALIASES = ("rowid", "_rowid_", "oid")
MAX_PAGE_BYTES = 32 * 1024 * 1024
NUMBER_CHARS = "0123456789.-+eEinfa"  # what str(int) / repr(float) can print


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return "\\x" + value.hex()  # like PostgreSQL's bytea output
    if isinstance(value, float):
        return _plain_float(value)
    return str(value)


def _lossless_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def encode_key(value: Any) -> Any:
    """A key value as JSON (the checkpoint is JSON on both databases)."""
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return value


def decode_key(value: Any) -> Any:
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"]) if "hex" in value else float(value["float"])
    return value


class SqliteSource:
    def __init__(self, conn: sqlite3.Connection, plan: ExportPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.table = plan.table
        self.columns: list[str] = []
        self.key: list[str] = []
        self.where: list[str] = []
        self.args: list[Any] = []
        self.formats: list[Callable[[Any], Any] | None] = []  # per column, for typed values

    @classmethod
    async def open(cls, path: Path, plan: ExportPlan) -> SqliteSource:
        """Open the owner's tables file and check table, columns, key and filters."""
        return await asyncio.to_thread(cls._open, path, plan)

    @classmethod
    def _open(cls, path: Path, plan: ExportPlan) -> SqliteSource:
        if not path.is_file():  # no tables file yet: the owner has no tables
            raise NotFound(f"no table {plan.table!r}")
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only = ON")
            source = cls(conn, plan)
            source._describe()
        except BaseException:
            conn.close()
            raise
        return source

    async def close(self) -> None:
        self.conn.close()

    def session_state(self) -> dict[str, Any]:
        return {}

    def _describe(self) -> None:
        found = self.conn.execute(
            "SELECT type FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')", (self.table,)
        ).fetchone()
        if found is None:
            raise NotFound(f"no table {self.table!r}")
        info = self.conn.execute(
            'SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid', (self.table,)
        ).fetchall()
        names = [row[0] for row in info]
        self.columns = check_columns(self.table, names, self.plan)
        declared = {row[0]: row[1] or "" for row in info}
        self.formats = [canonical(declared[c]) for c in self.columns]
        rowid = self._rowid_alias(names) if found[0] == "table" else None
        self.key = choose_key(
            self.table,
            self._candidates(info, rowid),
            self.plan.order_by,
            rowid,
            "it is a view" if found[0] == "view" else "it is a WITHOUT ROWID table",
        )
        self._bind_filters()

    def _rowid_alias(self, names: list[str]) -> str | None:
        taken = {name.lower() for name in names}
        for alias in ROWID_ALIASES:
            if alias in taken:
                continue
            try:
                self.conn.execute(f"SELECT {alias} FROM {quote(self.table)} LIMIT 0")
            except sqlite3.OperationalError:
                return None  # WITHOUT ROWID
            return alias
        return None

    def _candidates(self, info: list[tuple[Any, ...]], rowid: str | None) -> list[KeyCandidate]:
        not_null = {row[0]: bool(row[2]) for row in info}
        primary = [row for row in sorted(info, key=lambda r: r[3]) if row[3] > 0]
        candidates: list[KeyCandidate] = []
        if primary:
            columns = tuple(row[0] for row in primary)
            # SQLite lets NULL into a primary key unless it is the rowid (INTEGER PRIMARY KEY),
            # the table is WITHOUT ROWID, or the columns say NOT NULL.
            alias = len(primary) == 1 and str(primary[0][1]).upper() == "INTEGER" and rowid is not None
            safe = alias or rowid is None or all(not_null[c] for c in columns)
            candidates.append(KeyCandidate(columns, True, safe))
        for name, unique, origin, partial in self.conn.execute(
            'SELECT name, "unique", origin, partial FROM pragma_index_list(?)', (self.table,)
        ).fetchall():
            if not unique or partial or origin == "pk":
                continue
            parts = self.conn.execute(
                "SELECT cid, name FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", (name,)
            ).fetchall()
            if any(cid < 0 for cid, _ in parts):  # an expression or the rowid itself
                continue
            columns = tuple(col for _, col in parts)
            candidates.append(KeyCandidate(columns, False, all(not_null[c] for c in columns)))
        return candidates

    def _bind_filters(self) -> None:
        for spec in self.plan.filters:
            column = quote(spec.column)
            if spec.op == "is_null":
                self.where.append(f"{column} IS NULL")
            elif spec.op == "not_null":
                self.where.append(f"{column} IS NOT NULL")
            elif spec.op in ("in", "not_in"):
                marks = ", ".join("?" for _ in spec.value)
                self.where.append(f"{column} {'IN' if spec.op == 'in' else 'NOT IN'} ({marks})")
                self.args.extend(spec.value)
            elif spec.op in ("like", "not_like"):
                self.where.append(f"{column} {'LIKE' if spec.op == 'like' else 'NOT LIKE'} ?")
                self.args.append(spec.value)
            else:
                self.where.append(f"{column} {COMPARISONS[spec.op]} ?")
                self.args.append(spec.value)

    def _filters(self) -> str:
        return " AND ".join(f"({w})" for w in self.where) or "1"

    async def estimate(self) -> tuple[int, bool]:
        query = f"SELECT count(*) FROM {quote(self.table)} WHERE {self._filters()}"
        count = await asyncio.to_thread(lambda: self.conn.execute(query, self.args).fetchone()[0])
        return int(count), True

    async def pages(self, position: list[Any] | None, limit: int) -> AsyncGenerator[Page, None]:
        cap = limit
        while (result := await asyncio.to_thread(self._page, position, cap)) is not None:
            data, position, rows = result
            # Wide rows make shorter pages, so a page never holds much more than MAX_PAGE_BYTES.
            cap = max(1, min(limit, MAX_PAGE_BYTES * rows // max(1, len(data))))
            yield Page(position, rows, [data])

    def _page(self, position: list[Any] | None, limit: int) -> tuple[bytes, list[Any], int] | None:
        # A rowid alias is only chosen when no column shadows it, so it is written bare.
        keys = [k if k in ROWID_ALIASES else quote(k) for k in self.key]
        key_list = ", ".join(keys)
        select = ", ".join([*(quote(c) for c in self.columns), *keys])
        where, args = self._filters(), list(self.args)
        if position is not None:
            bound = keys[0] if len(keys) == 1 else f"({key_list})"
            marks = "?" if len(keys) == 1 else "(" + ", ".join("?" for _ in keys) + ")"
            where = f"{bound} > {marks} AND {where}"
            args = [*(decode_key(v) for v in position), *args]
        query = f"SELECT {select} FROM {quote(self.table)} WHERE {where} ORDER BY {key_list} LIMIT ?"
        try:
            rows = self.conn.execute(query, [*args, limit]).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise
            # Text that is not valid UTF-8: from here on keep its bytes as they are (slower).
            self.conn.text_factory = _lossless_text
            rows = self.conn.execute(query, [*args, limit]).fetchall()
        if not rows:
            return None
        data = self._format(rows).encode("utf-8", "surrogateescape")
        last = [encode_key(v) for v in rows[-1][len(self.columns) :]]
        return data, last, len(rows)

    def _format(self, rows: list[tuple[Any, ...]]) -> str:
        """Rows as CSV text; the common cells (numbers, plain text) skip the quoting function."""
        width, delimiter, null = len(self.columns), self.plan.delimiter, self.plan.null
        single = width == 1
        quote_all = self.plan.quoting == "all"
        special = re.compile("[" + re.escape(delimiter + '"\r\n') + "]").search
        # Numbers need no quotes unless the delimiter or the null string could be one.
        plain_numbers = (
            delimiter not in NUMBER_CHARS and not (null and set(null) <= set(NUMBER_CHARS)) and not quote_all
        )
        formats = self.formats if any(self.formats) else None
        lines = []
        for row in rows:
            cells = []
            for index, value in enumerate(row[:width]):
                if formats is not None and value is not None and (format_value := formats[index]) is not None:
                    value = format_value(value)
                kind = type(value)
                if value is None:
                    cells.append(null)
                elif quote_all:
                    cells.append(csv_field(_text(value) or "", delimiter, null, single, True))
                elif kind is str and value != null and not special(value) and not (single and value == "\\."):
                    cells.append(value)
                elif kind is int and plain_numbers:
                    cells.append(str(value))
                elif kind is float and plain_numbers:
                    cells.append(_plain_float(value))
                else:
                    cells.append(csv_field(_text(value) or "", delimiter, null, single))
            lines.append(delimiter.join(cells))
        return "\n".join(lines) + "\n"


def _plain_float(value: float) -> str:
    """A REAL as PostgreSQL writes a numeric: no exponent, no trailing zeros (1000, 0.5)."""
    if not math.isfinite(value):
        return {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
    if value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def _boolean(value: Any) -> Any:
    if isinstance(value, int):
        return "true" if value else "false"
    word = str(value).strip().lower()
    return "true" if word in BOOL_TRUE else "false" if word in BOOL_FALSE else value


def _timestamp(value: Any) -> Any:
    try:
        return datetime.fromisoformat(value).isoformat() if isinstance(value, str) else value
    except ValueError:
        return value


def _timestamptz(value: Any) -> Any:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return value
    if parsed is None:
        return value
    if parsed.tzinfo is None:  # stored without an offset: it is UTC (as PostgreSQL's TimeZone here)
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat()


def _numeric(value: Any) -> Any:
    if isinstance(value, float):
        return _plain_float(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return value
        return format(number.normalize(), "f") if number.is_finite() else value
    return value


def canonical(declared: str) -> Callable[[Any], Any] | None:
    """How a column of this declared type is written (the types import_csv creates)."""
    upper = declared.upper()
    if "BOOL" in upper:
        return _boolean
    if upper in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"):
        return _timestamptz
    if "TIMESTAMP" in upper or "DATETIME" in upper:
        return _timestamp
    if "NUMERIC" in upper or "DECIMAL" in upper:
        return _numeric
    return None

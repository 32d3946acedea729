"""CSV bytes without a full parse: record boundaries, header names, type inference, values.

Record boundaries follow PostgreSQL's own CSV reader: every quote byte toggles "inside a
quoted field", so a newline ends a record exactly when the number of quote bytes since the
record's start is even. Counting quotes is a C-speed ``bytes.count``, which is what lets the
import cut raw bytes into batches for ``COPY`` without parsing them in Python.

    ..."a, b"\\n"c\\nd"\\n  ← the first \\n is a boundary (2 quotes), the second is not (3)

The rest helps the SQLite path and the planner: decoding header names into safe column names,
guessing a column type from a sample, and turning a text value into what SQLite stores.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.services.owners.namespaces import RESERVED_COLUMNS, RESERVED_PREFIXES

BOM = b"\xef\xbb\xbf"
MAX_RECORD_BYTES = 64 * 1024 * 1024
TYPES = ("bigint", "numeric", "boolean", "date", "timestamp", "timestamptz", "text")
BOOL_TRUE = frozenset({"t", "true", "y", "yes", "on", "1"})
BOOL_FALSE = frozenset({"f", "false", "n", "no", "off", "0"})
INT_RE = re.compile(r"\s*[+-]?\d+\s*")
NUM_RE = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")
TSTZ_RE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)")
INT64 = 2**63


class CsvError(ValueError):
    """A malformed record; ``line`` is 1-based in the file when known."""

    def __init__(self, message: str, line: int | None = None, column: str | None = None) -> None:
        self.message, self.line, self.column = message, line, column
        where = f"line {line}" if line is not None else ""
        if column:
            where += f", column {column}"
        super().__init__(f"{where}: {message}" if where else message)


# -- record boundaries --------------------------------------------------------------------

# Scans of a whole batch go a piece at a time: a C call over 32 MiB would hold the GIL for
# tens of milliseconds, and the event loop (answering a pause) waits for every one of them.
SCAN_PIECE = 1 << 20


def count_byte(data: bytes, byte: bytes, start: int = 0, end: int | None = None) -> int:
    end = len(data) if end is None else end
    return sum(data.count(byte, at, min(at + SCAN_PIECE, end)) for at in range(start, end, SCAN_PIECE))


def contains(data: bytes, needle: bytes) -> bool:
    step, overlap = SCAN_PIECE, len(needle) - 1
    return any(data.find(needle, at, at + step + overlap) >= 0 for at in range(0, len(data), step))


def last_boundary(buf: bytes | memoryview, start: int, limit: int, quote: int) -> int | None:
    """End (exclusive) of the last complete record in ``buf[start:limit]``, or None.

    ``start`` must be a record start. A record ends after a newline with even quote parity.
    """
    data = buf if isinstance(buf, bytes) else bytes(buf)
    q = bytes([quote])
    newline = data.rfind(b"\n", start, limit)
    if newline < 0:
        return None
    quotes = count_byte(data, q, start, newline)
    while quotes % 2:
        previous = data.rfind(b"\n", start, newline)
        if previous < 0:
            return None
        quotes -= data.count(q, previous, newline)
        newline = previous
    return newline + 1


def split_records(data: bytes, quote: int) -> list[bytes]:
    """All records of ``data`` (which starts at a record start), each with its line end."""
    q = bytes([quote])
    records: list[bytes] = []
    start = pos = 0
    quotes = 0
    while True:
        newline = data.find(b"\n", pos)
        if newline < 0:
            break
        quotes += data.count(q, pos, newline)
        pos = newline + 1
        if quotes % 2 == 0:
            records.append(data[start:pos])
            start, quotes = pos, 0
    if start < len(data):
        records.append(data[start:])
    return records


def data_end(tail: bytes, size: int) -> int:
    """Where the data ends: blank lines at the very end (an editor artefact) are not rows."""
    stripped = tail.rstrip(b"\r\n")
    if len(stripped) == len(tail):
        return size
    if not stripped and len(tail) == size:
        return 0
    ending = 2 if tail[len(stripped) :].startswith(b"\r\n") else 1
    return size - (len(tail) - len(stripped)) + ending


def quote_copy_end_markers(data: bytes, quote: int) -> bytes:
    r"""Quote a record that is just ``\.``: PostgreSQL's COPY would take it for end-of-data."""
    if b"\\." not in data:
        return data
    out = []
    for record in split_records(data, quote):
        if record.rstrip(b"\r\n") == b"\\.":
            q = bytes([quote])
            record = q + b"\\." + q + record[2:]
        out.append(record)
    return b"".join(out)


# -- names ------------------------------------------------------------------------------


def sanitize_names(raw: Iterable[str]) -> list[str]:
    """Header names → safe, distinct, lower-case SQL identifiers (never trusted as given).

    A name that starts with a digit or a reserved prefix, or is a system column's, gets
    ``c_`` in front (``1st`` → ``c_1st``, ``xmin`` → ``c_xmin``), the same on both databases.
    """
    names: list[str] = []
    seen: set[str] = set()
    for index, value in enumerate(raw, start=1):
        ascii_text = unicodedata.normalize("NFKD", value or "").encode("ascii", "ignore").decode()
        name = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
        if not name:
            name = f"column_{index}"
        if name[0].isdigit() or name.startswith(RESERVED_PREFIXES) or name in RESERVED_COLUMNS:
            name = f"c_{name}"
        name = name[:63]
        candidate, suffix = name, 2
        while candidate in seen:
            tail = f"_{suffix}"
            candidate = name[: 63 - len(tail)] + tail
            suffix += 1
        seen.add(candidate)
        names.append(candidate)
    return names


# -- parsing (SQLite path, header, sample) ----------------------------------------------

# The csv module refuses fields over 131,072 characters by default; a record may be up to
# MAX_RECORD_BYTES, and a character is at least a byte. (The limit is per process.)
csv.field_size_limit(MAX_RECORD_BYTES)

_gc_lock = threading.Lock()
_gc_holders = 0


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Parsing a chunk makes ~10^5 small lists that all stay alive: each one would count toward
    a cyclic-GC pass that finds nothing to free (several times the parse itself). Reference
    counting still frees everything; the collector runs again once no chunk is being parsed."""
    global _gc_holders
    with _gc_lock:
        _gc_holders += 1
        if _gc_holders == 1:
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0:
                gc.enable()


# csv.reader's return type has no public name in the typeshed stubs (it is _csv.Reader there).
def reader(text: str, delimiter: str, quote: str) -> csv.Reader:  # type: ignore[name-defined]
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quote, strict=False)


def quoted_null_possible(text: str, delimiter: str, quote: str, null: str) -> bool:
    """Could a field be ``"<null>"`` (quoted, so *not* NULL)? csv.reader cannot tell us.

    Plain substring tests (C speed); a false positive only costs the slower exact parser.
    """
    token = quote + null + quote
    if token not in text:
        return False
    if text.startswith(token) or text.rstrip("\r\n").endswith(token):
        return True
    before, after = (delimiter, "\n"), (delimiter, "\n", "\r")
    return any(b + token + a in text for b in before for a in after)


def fast_rows(text: str, delimiter: str, quote: str, null: str) -> tuple[list[list[str | None]], bool]:
    """All records, at csv-module speed; the flag says whether nulls are already None.

    Fields equal to ``null`` are left as text unless a quoted null may occur (then the exact
    parser runs): the caller maps them column by column, which is cheaper than row by row.
    """
    if quoted_null_possible(text, delimiter, quote, null):
        return [row for _, row in _parse_exact(text, delimiter, quote, null)], True
    try:
        return list(reader(text, delimiter, quote)), False
    except csv.Error:
        parse_rows(text, delimiter, quote, null)  # raises with the line number
        raise


def line_numbers(text: str, delimiter: str, quote: str) -> list[int]:
    """The 0-based first line of every record (only needed to report an error)."""
    lines, line = [], 0
    parsed = reader(text, delimiter, quote)
    for _ in parsed:
        lines.append(line)
        line = parsed.line_num
    return lines


def parse_rows(text: str, delimiter: str, quote: str, null: str) -> list[tuple[int, list[str | None]]]:
    """Records of ``text`` as (first line, 0-based relative; values); unquoted ``null`` → None."""
    if quoted_null_possible(text, delimiter, quote, null):
        return _parse_exact(text, delimiter, quote, null)
    rows: list[tuple[int, list[str | None]]] = []
    parsed = reader(text, delimiter, quote)
    line = 0
    try:
        for row in parsed:
            rows.append((line, [None if v == null else v for v in row]))
            line = parsed.line_num
    except csv.Error as exc:
        raise CsvError(str(exc), line + 1) from None
    return rows


def _parse_exact(text: str, delimiter: str, quote: str, null: str) -> list[tuple[int, list[str | None]]]:
    """A slower parser that knows which fields were quoted (only used when it matters)."""
    q, d = re.escape(quote), re.escape(delimiter)
    quoted_re = re.compile(rf"{q}((?:[^{q}]|{q}{q})*){q}")
    rest_re = re.compile(rf"[^{d}\r\n]*")
    rows: list[tuple[int, list[str | None]]] = []
    pos, n, line = 0, len(text), 0
    while pos < n:
        first_line, row = line, []
        if text[pos] in "\r\n":  # blank line
            pos += 2 if text.startswith("\r\n", pos) else 1
            line += 1
            rows.append((first_line, []))
            continue
        while True:
            value: str | None
            if text.startswith(quote, pos):
                match = quoted_re.match(text, pos)
                if match is None:
                    raise CsvError("unterminated quoted field", first_line + 1)
                value = match.group(1).replace(quote + quote, quote)
                line += value.count("\n")
                tail = rest_re.match(text, match.end())
                assert tail is not None
                value += tail.group()
                pos = tail.end()
            else:
                match = rest_re.match(text, pos)
                assert match is not None
                value = None if match.group() == null else match.group()
                pos = match.end()
            row.append(value)
            if pos < n and text[pos] == delimiter:
                pos += 1
                continue
            if pos < n:
                pos += 2 if text.startswith("\r\n", pos) else 1
                line += 1
            break
        rows.append((first_line, row))
    return rows


# -- types --------------------------------------------------------------------------------


def value_type(value: str) -> str:
    if INT_RE.fullmatch(value) and -INT64 <= int(value) < INT64:
        return "bigint"
    if NUM_RE.fullmatch(value):
        return "numeric"
    if value.strip().lower() in ("true", "false", "t", "f"):
        return "boolean"
    if DATE_RE.fullmatch(value) and _ok(date.fromisoformat, value):
        return "date"
    if TS_RE.fullmatch(value) and _ok(datetime.fromisoformat, value):
        return "timestamp"
    if TSTZ_RE.fullmatch(value) and _ok(datetime.fromisoformat, value):
        return "timestamptz"
    return "text"


def _ok(parse: Callable[[str], object], value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


WIDER = {
    ("bigint", "numeric"): "numeric",
    ("timestamp", "timestamptz"): "timestamptz",
    ("date", "timestamp"): "timestamp",
    ("date", "timestamptz"): "timestamptz",  # a join, so the order values come in does not matter
}


def merge_type(current: str | None, seen: str) -> str:
    if current is None or current == seen:
        return seen
    return WIDER.get((current, seen)) or WIDER.get((seen, current)) or "text"


def infer_types(rows: Iterable[list[str | None]], width: int) -> list[str]:
    """The narrowest type per column that every sampled non-null value fits; all-null → text.

    Column by column over the distinct values: a sample of 20,000 records mostly repeats itself.
    """
    listed = rows if isinstance(rows, list) else list(rows)
    columns: list[set[str | None]]
    if listed and all(len(row) == width for row in listed):
        columns = [set(column) for column in zip(*listed, strict=True)]  # one C-level pass a column
    else:
        columns = [set() for _ in range(width)]
        for row in listed:
            for index, value in enumerate(row[:width]):
                columns[index].add(value)
    return [_column_type(values) for values in columns]


# Whole columns at once, values joined by newlines (only where no value holds one): one regex
# pass instead of one per value. Strict forms only; anything else takes the per-value path.
_BIGINT = r"[+-]?\d{1,18}"
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DATE = r"\d{4}-\d{2}-\d{2}"
_TS = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?"


def _all_of(value: str) -> re.Pattern[str]:
    # Atomic values, possessive repetition: a column that fails, fails in one pass (no backtracking)
    return re.compile(f"(?>{value})(?:\\n(?>{value}))*+")


_ALL_BIGINT, _ALL_NUMBER, _ALL_DATE, _ALL_TIMESTAMP = (_all_of(v) for v in (_BIGINT, _NUMBER, _DATE, _TS))


def _whole_column_type(present: list[str]) -> str | None:
    """The type of a column whose every value has one strict form, or None: ask each value."""
    joined = "\n".join(present)
    if joined.count("\n") != len(present) - 1:
        return None
    if _ALL_BIGINT.fullmatch(joined):
        return "bigint"
    if _ALL_NUMBER.fullmatch(joined):
        return "numeric" if any(c in joined for c in ".eE") else None  # integers past 18 digits: each
    if _ALL_DATE.fullmatch(joined) and all(_ok(date.fromisoformat, v) for v in present):
        return "date"
    if _ALL_TIMESTAMP.fullmatch(joined) and all(_ok(datetime.fromisoformat, v) for v in present):
        return "timestamp"
    return None


def _column_type(values: set[str | None]) -> str:
    present = [v for v in values if v]
    if len(present) > 16 and (whole := _whole_column_type(present)) is not None:
        return whole
    found: str | None = None
    for value in values:
        if value is not None and value != "":
            found = merge_type(found, value_type(value))
            if found == "text":
                break
    return found or "text"


def sql_type(type_name: str, postgres: bool) -> str:
    if postgres:
        return {"timestamptz": "timestamp with time zone", "timestamp": "timestamp"}.get(type_name, type_name)
    return {"bigint": "INTEGER", "text": "TEXT"}.get(type_name, type_name.upper())


def converter_for(declared: str) -> str:
    """Map a declared SQL type (of an existing table) back to one of :data:`TYPES`."""
    upper = declared.upper()
    if "INT" in upper:
        return "bigint"
    if "BOOL" in upper:
        return "boolean"
    if "TIMESTAMP" in upper or "DATETIME" in upper:
        return "timestamptz" if "TIME ZONE" in upper and "WITHOUT" not in upper else "timestamp"
    if upper == "DATE":
        return "date"
    if any(word in upper for word in ("NUMERIC", "DECIMAL", "REAL", "DOUBLE", "FLOAT")):
        return "numeric"
    return "text"


BOOLS = {**dict.fromkeys(BOOL_TRUE, 1), **dict.fromkeys(BOOL_FALSE, 0)}


def convert_column(values: list[str | None], type_name: str) -> list[Any]:
    """Convert a whole column at C speed; raises on the first bad value (then use convert())."""
    if type_name == "bigint":
        ints = [None if v is None else int(v) for v in values]  # int() is what C can do fast
        present = [x for x in ints if x is not None]
        if present and (max(present) >= INT64 or min(present) < -INT64):
            raise OverflowError("bigint out of range")
        return ints
    if type_name == "numeric":
        for v in values:
            if v is not None:
                float(v)  # validates; SQLite's NUMERIC affinity stores the number itself
        return values
    if type_name == "boolean":
        return [None if v is None else BOOLS[v.strip().lower()] for v in values]
    if type_name == "date":
        return [None if v is None else date.fromisoformat(v).isoformat() for v in values]
    if type_name in ("timestamp", "timestamptz"):
        return [None if v is None else datetime.fromisoformat(v).isoformat(sep=" ") for v in values]
    return values


def convert(value: str, type_name: str) -> object:
    """Check and convert one non-null text value for SQLite; ValueError says why not."""
    if type_name == "text":
        return value
    if type_name == "bigint":
        if INT_RE.fullmatch(value) and -INT64 <= int(value) < INT64:
            return int(value)
    elif type_name == "numeric":
        if NUM_RE.fullmatch(value):
            try:
                return str(Decimal(value.strip()))
            except InvalidOperation:
                pass
    elif type_name == "boolean":
        word = value.strip().lower()
        if word in BOOL_TRUE or word in BOOL_FALSE:
            return 1 if word in BOOL_TRUE else 0
    elif type_name == "date":
        if _ok(date.fromisoformat, value.strip()):
            return date.fromisoformat(value.strip()).isoformat()
    elif _ok(datetime.fromisoformat, value.strip()):
        return datetime.fromisoformat(value.strip()).isoformat(sep=" ")
    raise ValueError(f'invalid input syntax for type {type_name}: "{value[:80]}"')

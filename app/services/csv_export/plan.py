"""What both export sources share: the plan, the order-key rule and CSV quoting.

An export walks a table in keyset pages::

    pages(position, limit) ─▶ Page(next position, rows, CSV bytes) ─▶ result writer ─▶ checkpoint
                          └── ends once nothing is left after ``position``

``position`` is opaque JSON owned by the source (the last key's values, or the next heap
block for PostgreSQL's physical order); the checkpoint stores it with the file's byte offset
and the writer's mark (app/services/files/results.py: a local file or an S3 multipart upload).

Both databases write each type the same way, so a table imported into SQLite and into
PostgreSQL from one file exports to the same bytes::

    boolean      true / false
    timestamptz  2024-01-02T03:04:05.500000+00:00   (ISO 8601, in UTC, the fraction only if any)
    timestamp    2024-01-02T03:04:05                 (ISO 8601, no offset: it has none)
    date         2024-01-02
    numeric      1.5, 1000, 0.000001                 (no exponent, no trailing zeros)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.errors import Unprocessable

# How comparisons read in SQL; "in"/"like"/"null" forms are spelled out by each source.
COMPARISONS = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}

MAX_LISTED = 40


@dataclass(frozen=True)
class FilterSpec:
    column: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class ExportPlan:
    """What to export, as validated by the params model (names still unchecked against the table)."""

    table: str
    columns: list[str] | None = None
    order_by: list[str] | None = None
    filters: list[FilterSpec] = field(default_factory=list)
    delimiter: str = ","
    null: str = ""
    quoting: str = "minimal"  # or "all": every value but NULL in quotes (COPY's FORCE_QUOTE *)


@dataclass(frozen=True)
class KeyCandidate:
    """A primary key or unique index: usable for keyset pages only if every column is NOT NULL."""

    columns: tuple[str, ...]
    primary: bool
    not_null: bool


@dataclass(frozen=True)
class Page:
    position: Any  # where the next page starts
    rows: int
    chunks: list[bytes]  # the page's CSV bytes


class Source(Protocol):
    """A table being exported, on connections of its own (never the service's pool)."""

    table: str
    columns: list[str]
    key: list[str]  # the order key in use; ["ctid"] / ["rowid"] for physical order

    async def estimate(self) -> tuple[int, bool]:
        """Rows that will be exported, and whether that count is exact."""
        ...

    def pages(self, position: Any, limit: int) -> AsyncGenerator[Page, None]:
        """The pages after ``position``, in order, until no row is left."""
        ...

    def session_state(self) -> dict[str, Any]:
        """Settings that shape the output's text, kept in the checkpoint so a resume matches."""
        ...

    async def close(self) -> None: ...


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", … ({len(names)} in all)" if len(names) > MAX_LISTED else "")


def check_columns(table: str, available: Sequence[str], plan: ExportPlan) -> list[str]:
    """The output columns: the plan's subset (in its order) or all; every name must exist."""
    known = set(available)
    wanted = list(plan.columns) if plan.columns else list(available)
    named = [("columns", name) for name in wanted]
    named += [("filters", f.column) for f in plan.filters]
    named += [("order_by", name) for name in plan.order_by or ()]
    for where, name in named:
        if name not in known:
            raise Unprocessable(
                f"{where}: table {table!r} has no column {name!r}; its columns are: {_listing(list(available))}"
            )
    if not wanted:
        raise Unprocessable(f"table {table!r} has no columns to export")
    return wanted


def choose_key(
    table: str,
    candidates: Sequence[KeyCandidate],
    requested: list[str] | None,
    physical: str | None,
    no_physical_reason: str,
) -> list[str]:
    """The keyset order: ``requested`` if it is a usable key, else the primary key, else the
    narrowest unique NOT NULL key, else the physical row order (``physical``), else 422."""
    usable = [c for c in candidates if c.not_null]
    if requested:
        for candidate in usable:
            if set(candidate.columns) == set(requested) and len(candidate.columns) == len(requested):
                return list(requested)
        keys = "; ".join("(" + ", ".join(c.columns) + ")" for c in usable) or "none"
        raise Unprocessable(
            f"order_by ({', '.join(requested)}) is not a usable key of table {table!r}: paging needs the "
            f"primary key or the columns of a unique index, all NOT NULL, or rows could be skipped or "
            f"repeated between pages. Usable keys: {keys}; or leave order_by out"
        )
    primary = [c for c in usable if c.primary]
    if primary:
        return list(primary[0].columns)
    if usable:
        return list(min(usable, key=lambda c: len(c.columns)).columns)
    if physical is not None:
        return [physical]
    raise Unprocessable(
        f"table {table!r} has no usable order key to page through it: no primary key, no unique "
        f"index on NOT NULL columns, and {no_physical_reason}"
    )


def csv_field(value: str, delimiter: str, null: str, single: bool, quote_all: bool = False) -> str:
    """PostgreSQL's COPY CSV quoting, so both databases write the same bytes for the same text."""
    if (
        quote_all
        or value == null
        or (single and value == "\\.")
        or delimiter in value
        or '"' in value
        or "\n" in value
        or "\r" in value
    ):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(values: Sequence[str | None], delimiter: str, null: str) -> str:
    single = len(values) == 1
    return delimiter.join(null if v is None else csv_field(v, delimiter, null, single) for v in values) + "\n"

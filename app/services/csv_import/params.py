"""``import_csv`` parameters and the checks that need no running task.

Every mistake in the parameters is a clear 422 (pydantic); what needs the database — the
target's existence and columns — is answered here for both the creation-time check
(``prepare``) and the run.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Unprocessable
from app.services.csv_import.errors import ImportFailed
from app.services.owners.namespaces import (
    MAX_COLUMNS,
    owner_schema,
    quote,
    sqlite_tables_path,
    validate_column_name,
    validate_identifier,
)
from app.services.runtime.kinds import DRY_RUN, KindParams

STATEFUL_ENCODINGS = ("utf-16", "utf-32", "utf-7", "iso2022", "hz")


def _checked(check: Callable[..., str], *args: str) -> str:
    try:
        return check(*args)
    except Unprocessable as exc:
        raise ValueError(exc.detail) from None


def check_encoding(encoding: str) -> str:
    """Record cutting works on bytes, so the encoding must keep ASCII's bytes for , " and \\n,
    and must not switch meanings mid-stream (UTF-7, ISO-2022, HZ)."""
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, ValueError):
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if ',"\r\n;|\t'.encode(name) != b',"\r\n;|\t' or name.startswith(STATEFUL_ENCODINGS):
        raise ValueError(f"encoding {encoding!r} is not ASCII-compatible; convert the file to UTF-8 first")
    return name


@functools.lru_cache(maxsize=256)
def check_quote_bytes(encoding: str, quote_char: str) -> None:
    """The quote and the line end are found by their bytes, so no character of the encoding may
    contain those bytes: in Shift-JIS, Big5 or GBK the second byte of a character can be
    ``\\``, ``@``, ``|`` or a letter; in GB18030 a digit."""
    for char in (quote_char, "\n"):
        byte = char.encode()
        for lead in range(0x80, 0x100):
            for probe in (bytes([lead]) + byte, (bytes([lead]) + byte) * 2):
                try:
                    decoded = probe.decode(encoding)
                except UnicodeDecodeError:
                    continue  # not text in this encoding: decode() reports it with its line
                if decoded.count(char) != probe.count(byte):
                    raise ValueError(
                        f"in encoding {encoding!r} the byte of {char!r} can be part of another character: "
                        "choose another quote, or convert the file to UTF-8 first"
                    )


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Column name (letters, digits, _).")
    type: Literal["bigint", "numeric", "boolean", "date", "timestamp", "timestamptz", "text"] | None = Field(
        None, description="Column type; omitted → inferred (or text)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _checked(validate_column_name, value)


class ImportParams(KindParams):
    file_id: str | None = Field(None, max_length=36, description="An uploaded file (state complete) to import.")
    path: str | None = Field(None, max_length=1024, description="Or a file path relative to the storage directory.")
    table: str = Field(description="Target table, in your data namespace.")
    mode: Literal["create", "replace", "append"] = Field("create", description="create fails if the table exists.")
    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description="Omitted → sniffed from the file: , ; TAB or |."
    )
    quote: str | None = Field(None, min_length=1, max_length=1, description="Omitted → sniffed: \" or '.")
    header: bool | None = Field(
        None, description="First record holds the column names; omitted → sniffed (a header unless it fits the types)."
    )
    encoding: str = Field("utf-8", max_length=40, description="Any ASCII-compatible encoding; a BOM is skipped.")
    null: str = Field("", max_length=64, description="Unquoted text that means NULL (default: empty field).")
    columns: list[ColumnSpec] | None = Field(None, min_length=1, max_length=MAX_COLUMNS, description="Names and types.")
    infer_types: bool = Field(True, description="Guess bigint/numeric/boolean/date/timestamp from a sample.")
    on_error: Literal["abort", "skip"] = Field("abort", description="skip: bad records go to a reject file.")
    max_errors: int | float | None = Field(
        None,
        ge=0,
        description="With on_error=skip: most records to reject, a count (100) or a fraction of all records "
        "(0.01); past it the import fails and leaves nothing. Omitted → no limit.",
    )
    sample_records: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Records sampled for type inference, spread over head, middle and tail of the file "
        "(default: the import_sample_records setting).",
    )

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return _checked(validate_identifier, value, "table")

    @field_validator("delimiter", "quote")
    @classmethod
    def _char(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value in "\r\n\x00" or not value.isascii():
            raise ValueError("must be one ASCII character other than NUL, CR and LF")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        check_encoding(value)
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ImportParams:
        if self.file_id is not None and self.path is not None:
            raise ValueError("give exactly one of file_id and path")
        if self.file_id is None and self.path is None and not (info.context or {}).get(DRY_RUN):
            raise ValueError("give exactly one of file_id and path")  # a dry run may check before the upload
        if self.delimiter is not None and self.delimiter == (self.quote or '"'):
            raise ValueError('delimiter and quote must differ (the quote is " unless given)')
        if any(c in self.null for c in (self.delimiter or "", self.quote or "", "\r", "\n", "\x00") if c):
            raise ValueError("null must not contain the delimiter, the quote, a line end or NUL")
        if self.null == "\\.":
            raise ValueError("null must not be \\. (COPY's end-of-data marker)")
        if self.quote is not None:
            check_quote_bytes(check_encoding(self.encoding), self.quote)
        if self.max_errors is not None:
            if self.on_error != "skip":
                raise ValueError("max_errors needs on_error=skip")
            if isinstance(self.max_errors, float) and not self.max_errors < 1:
                raise ValueError("max_errors is a count (a whole number) or a fraction below 1")
        if self.columns:
            names = [c.name.lower() for c in self.columns]
            if len(set(names)) != len(names):
                raise ValueError("columns: names must be distinct (case-insensitively)")
        return self


def usable_dialect(params: ImportParams) -> Callable[[str, str], bool]:
    """Which sniffed (delimiter, quote) pairs the other params allow."""
    encoding = check_encoding(params.encoding)

    def usable(delimiter: str, quote_char: str) -> bool:
        if delimiter in params.null or quote_char in params.null:
            return False
        try:
            check_quote_bytes(encoding, quote_char)
        except ValueError:
            return False
        return True

    return usable


def staging_name(task_id: str) -> str:
    return "tsm_import_" + task_id.replace("-", "")


def append_columns(names: list[str], target: list[tuple[str, str]], header: bool) -> list[str]:
    """Which target column each CSV column fills: by name with a header, else by position."""
    if not header:
        if len(names) != len(target):
            raise ImportFailed(f"the file has {len(names)} columns, the table has {len(target)}")
        return [name for name, _ in target]
    by_lower = {name.lower(): name for name, _ in target}
    missing = [n for n in names if n.lower() not in by_lower]
    if missing:
        raise ImportFailed(f"columns {', '.join(missing)} are not in the table ({', '.join(by_lower.values())})")
    return [by_lower[n.lower()] for n in names]


def _sqlite_target(settings: Settings, owner: str, table: str) -> list[tuple[str, str]] | None:
    path = sqlite_tables_path(settings, owner)
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        if not db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=? COLLATE NOCASE", (table,)
        ).fetchone():
            return None
        return [(r[1], r[2] or "") for r in db.execute(f"PRAGMA table_info({quote(table)})")]


async def target_columns(
    session: AsyncSession, settings: Settings, owner: str, table: str
) -> list[tuple[str, str]] | None:
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        rows = (
            await session.execute(
                text(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND c.relname = :t AND c.relkind = 'r' AND a.attnum > 0 "
                    "AND NOT a.attisdropped ORDER BY a.attnum"
                ),
                {"s": owner_schema(settings, owner), "t": table},
            )
        ).all()
        return [(r[0], r[1]) for r in rows] or None
    return await asyncio.to_thread(_sqlite_target, settings, owner, table)

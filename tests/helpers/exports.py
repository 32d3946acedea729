"""Source tables for the export tests, made directly in an owner's namespace, and the CSV expected of them."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import asyncpg
from fastapi import FastAPI
from sqlalchemy import select

from app.config import Settings
from app.models import File
from app.services.csv_export.plan import csv_line
from app.services.owners.namespaces import owner_schema, sqlite_tables_path
from app.services.runtime.bus import asyncpg_dsn

PAGE_ROWS = 5

NASTY = [
    "plain",
    "comma, inside",
    'say "hi"',
    "line\nbreak",
    "crlf\r\nend",
    "  spaced  ",
    "ünïcödé ✓ 漢字 🚀",
    "",
    None,
    "\\.",
    "\\N",
    "tab\there",
    "semi;colon",
    '"',
    "'quote'",
]


class Tables:
    """Makes source tables directly in an owner's data namespace (as an import would)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pg = not settings.is_sqlite

    def prefix(self, owner: str) -> str:
        return f'"{owner_schema(self.settings, owner)}".' if self.pg else ""

    async def execute(self, owner: str, *statements: str, rows: Sequence[Sequence[Any]] = (), insert: str = "") -> None:
        """Run ``statements`` ({s} is the namespace prefix), then ``insert`` once per row."""
        s = self.prefix(owner)
        if self.pg:
            conn = await asyncpg.connect(asyncpg_dsn(self.settings.effective_database_url))
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{owner_schema(self.settings, owner)}"')
                for sql in statements:
                    await conn.execute(sql.format(s=s))
                if insert:
                    marks = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
                    await conn.executemany(insert.format(s=s, marks=marks), rows)
            finally:
                await conn.close()
            return
        path = sqlite_tables_path(self.settings, owner)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path)
        try:
            for sql in statements:
                conn.execute(sql.format(s=s))
            if insert:
                marks = ", ".join("?" for _ in rows[0])
                conn.executemany(insert.format(s=s, marks=marks), rows)
            conn.commit()
        finally:
            conn.close()

    async def people(self, owner: str = "local", table: str = "people", count: int = 0) -> list[tuple[Any, ...]]:
        """id, name, note, qty: the nasty values first, then ``count`` plain rows."""
        rows: list[tuple[Any, ...]] = [(i + 1, f"n{i % 4}", v, i * 3 % 7) for i, v in enumerate(NASTY)]
        rows += [(len(NASTY) + i + 1, f"n{i % 4}", f"row {i}, #{i}", i % 11) for i in range(count)]
        await self.execute(
            owner,
            f'CREATE TABLE {{s}}"{table}" (id integer PRIMARY KEY, name text NOT NULL, note text, qty integer)',
            rows=rows,
            insert=f'INSERT INTO {{s}}"{table}" VALUES ({{marks}})',
        )
        return rows


def expected_csv(
    header: Sequence[str] | None, rows: Sequence[Sequence[Any]], delimiter: str = ",", null: str = ""
) -> bytes:
    lines = [csv_line(list(header), delimiter, null)] if header else []
    lines += [csv_line([None if v is None else str(v) for v in row], delimiter, null) for row in rows]
    return "".join(lines).encode()


async def file_rows(app: FastAPI, task_id: str) -> list[File]:
    async with app.state.database.sessionmaker() as session:
        return list((await session.execute(select(File).where(File.task_id == task_id))).scalars())

"""Keyset pagination, newest first, over any table with ``created_at`` and a string ``id``.

    page 1: ORDER BY created_at DESC, id DESC LIMIT n+1      → n rows + "is there more?"
    page k: … WHERE (created_at, id) < (cursor's)             cursor = base64(created_at|id)

Unlike OFFSET, a page never skips or repeats a row when new rows arrive meanwhile. A cursor
comes back from the client, so it is checked like any input: a UUID and an aware timestamp
within the databases' range, or a 400 (never a database error).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import BadRequest

Row = TypeVar("Row")


def _encode(row: Any) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_CURSOR = 128  # an encoded timestamp and UUID take about 90 characters


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, row_id = raw.split("|", 1)
        created = datetime.fromisoformat(stamp)
        if created.tzinfo is None or str(uuid.UUID(row_id)) != row_id:
            raise ValueError("not a cursor this service made")
        return created.astimezone(UTC), row_id  # OverflowError: a moment no database stores
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise BadRequest("invalid cursor: pass back the next_cursor of a previous page") from None


async def newest_first(
    session: AsyncSession, query: Select[Row], model: Any, *, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """One page of ``query`` and the cursor of the next page (None on the last one)."""
    if cursor is not None:
        created, row_id = _decode(cursor)
        query = query.where(or_(model.created_at < created, and_(model.created_at == created, model.id < row_id)))
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    next_cursor = _encode(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor

"""Liveness and readiness probes.

/healthz  the process answers (nothing else is checked)
/readyz   SELECT 1 on the database, then the byte store (HeadBucket on S3): 503 naming what failed
"""

from __future__ import annotations

import asyncio
from typing import Literal, cast

from fastapi import APIRouter, Request
from sqlalchemy import text

from app import __version__
from app.errors import ServiceUnavailable
from app.http.deps import DatabaseDep
from app.http.problems import problems
from app.schemas import HealthRead, ReadyRead
from app.services.files.store import ByteStore

router = APIRouter(tags=["health"])
STORE_CHECK_SECONDS = 5.0  # a probe must answer before its own timeout, even while the bucket hangs


@router.get("/healthz", response_model=HealthRead)
async def healthz() -> HealthRead:
    """The process is alive (no database check: that is `/readyz`)."""
    return HealthRead(status="ok", version=__version__)


@router.get(
    "/readyz",
    response_model=ReadyRead,
    responses=problems((503, "The database, or the S3 bucket the file bytes live in, is not reachable.")),
)
async def readyz(database: DatabaseDep, request: Request) -> ReadyRead:
    """The service can reach its database and its byte store, and take work."""
    try:
        async with database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        raise ServiceUnavailable("The database is not reachable.") from None
    store: ByteStore = request.app.state.store
    try:
        await asyncio.wait_for(store.check(), STORE_CHECK_SECONDS)
    except Exception:
        raise ServiceUnavailable(f"The {store.name} store ({store.where}) is not reachable.") from None
    dialect = cast(Literal["sqlite", "postgresql"], database.dialect)
    return ReadyRead(status="ok", version=__version__, database=dialect, store=cast(Literal["local", "s3"], store.name))

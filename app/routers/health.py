"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Literal, cast

from fastapi import APIRouter
from sqlalchemy import text

from app import __version__
from app.errors import ServiceUnavailable
from app.http.deps import DatabaseDep
from app.http.problems import problems
from app.schemas import HealthRead, ReadyRead

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthRead)
async def healthz() -> HealthRead:
    """The process is alive (no database check: that is `/readyz`)."""
    return HealthRead(status="ok", version=__version__)


@router.get("/readyz", response_model=ReadyRead, responses=problems((503, "The database is not reachable.")))
async def readyz(database: DatabaseDep) -> ReadyRead:
    """The service can reach its database and take work."""
    try:
        async with database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        raise ServiceUnavailable("The database is not reachable.") from None
    dialect = cast(Literal["sqlite", "postgresql"], database.dialect)
    return ReadyRead(status="ok", version=__version__, database=dialect)

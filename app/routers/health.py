"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from app.http.deps import DatabaseDep
from app.http.problems import problem, problems
from app.schemas import HealthRead

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthRead)
async def healthz() -> HealthRead:
    """The process is alive."""
    return HealthRead(status="ok")


@router.get("/readyz", response_model=HealthRead, responses=problems((503, "The database is not reachable.")))
async def readyz(database: DatabaseDep) -> HealthRead:
    """The service can reach its database and take work."""
    try:
        async with database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return problem(503, "Service Unavailable", "The database is not reachable.")  # type: ignore[return-value]
    return HealthRead(status="ok", database=database.dialect)

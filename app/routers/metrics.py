"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app import metrics
from app.http.deps import DatabaseDep
from app.services.runtime.kinds import registry

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {metrics.CONTENT_TYPE: {}}}})
async def scrape(database: DatabaseDep) -> Response:
    """Prometheus metrics: tasks by kind and state, control latency, bytes, rows, checkpoints, HTTP."""
    counts = await metrics.count_tasks(database)
    return Response(metrics.render(counts, registry.names()), media_type=metrics.CONTENT_TYPE)

"""Task events: one row per state change, the history behind ``GET /tasks/{id}/events``."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import TaskEvent, utcnow
from app.services.runtime.bus import notify


async def record_event(session: AsyncSession, task_id: str, state: str, message: str | None = None) -> None:
    """Record a state change in the caller's transaction; watchers on every replica wake at commit."""
    await session.execute(insert(TaskEvent).values(task_id=task_id, state=state, message=message, at=utcnow()))
    await notify(session, f"task:{task_id}")

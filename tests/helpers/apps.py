"""The app for tests: Settings with fast timings, the app in-process, polling a task until it changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app


def make_settings(db_url: str, storage: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "storage_dir": storage,
        "poll_interval": 0.05,
        "progress_interval": 0.05,
        "lease_seconds": 2.0,
        "shutdown_grace_seconds": 2.0,
        "retry_backoff_seconds": 0.05,
        "kind_modules": ["tests.helpers.kinds"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def open_app(settings: Settings, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Run the app's lifespan and give an in-process client; ``overrides`` change settings."""
    app = create_app(settings.model_copy(update=overrides) if overrides else settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tsm.test") as client:
            yield app, client


async def wait_for(
    client: httpx.AsyncClient,
    task_id: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 20.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the task until ``predicate`` holds (or fail after ``timeout`` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(f"/tasks/{task_id}", headers=headers)
        assert response.status_code == 200, response.text
        task = response.json()
        if predicate(task):
            return task
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting; task is {task}")
        await asyncio.sleep(0.02)


async def wait_state(client: httpx.AsyncClient, task_id: str, *states: str, **kwargs: Any) -> dict[str, Any]:
    return await wait_for(client, task_id, lambda t: t["state"] in states, **kwargs)

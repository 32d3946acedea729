"""Task kinds used only by the tests (loaded through ``TSM_KIND_MODULES``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services.runtime.kinds import KindParams, TaskContext, TaskKind, task_kind

STEP_LOG_DDL = "CREATE TABLE IF NOT EXISTS step_log (task_id VARCHAR(36) NOT NULL, step INTEGER NOT NULL)"


class StepParams(KindParams):
    steps: int = Field(5, ge=1)
    step_seconds: float = Field(0.05, ge=0)


@task_kind("record_steps")
class RecordSteps(TaskKind[StepParams]):
    """Writes one row per step in the checkpoint's own transaction: duplicates would show."""

    params_model = StepParams

    async def run(self, params: StepParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        step = int((checkpoint or {}).get("step", 0))
        while step < params.steps:
            await asyncio.sleep(params.step_seconds)
            step += 1

            async def log(conn: AsyncConnection, step: int = step) -> None:
                await conn.execute(text(STEP_LOG_DDL))
                await conn.execute(text("INSERT INTO step_log VALUES (:t, :s)"), {"t": ctx.task_id, "s": step})

            await ctx.checkpoint({"step": step}, done=step, total=params.steps, work=log)
        return {"steps": step}


class FlakyParams(KindParams):
    failures: int = Field(1, ge=0)


@task_kind("flaky")
class Flaky(TaskKind[FlakyParams]):
    """Fails on its first ``failures`` attempts, then succeeds."""

    params_model = FlakyParams

    async def run(self, params: FlakyParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        if ctx.attempts <= params.failures:
            raise ValueError(f"flaky failure on attempt {ctx.attempts}")
        return {"attempts": ctx.attempts}


class MarkerParams(KindParams):
    name: str = Field(pattern=r"^[a-z]+$")
    step_seconds: float = 0.05


@task_kind("marker")
class Marker(TaskKind[MarkerParams]):
    """Makes a file in storage and keeps checkpointing until stopped; cleanup removes it."""

    params_model = MarkerParams

    def path(self, ctx: TaskContext, params: MarkerParams) -> Path:
        return ctx.settings.storage_dir / f"marker-{params.name}"

    async def run(self, params: MarkerParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        self.path(ctx, params).write_text("made by a task")
        tick = int((checkpoint or {}).get("tick", 0))
        while True:
            await asyncio.sleep(params.step_seconds)
            tick += 1
            await ctx.checkpoint({"tick": tick}, done=tick)

    async def cleanup(self, params: MarkerParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> None:
        self.path(ctx, params).unlink(missing_ok=True)


@task_kind("finish_on_request")
class FinishOnRequest(TaskKind[KindParams]):
    """Waits until a pause or cancel is asked for, then commits its final checkpoint."""

    async def run(self, params: KindParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        await ctx.checkpoint({"started": True})
        await ctx.stop_event.wait()
        await ctx.checkpoint({"started": True, "finished": True}, final=True)
        return {"finished": True}


class FailingParams(KindParams):
    name: str = Field(pattern=r"^[a-z]+$")


@task_kind("fail_then_clean")
class FailThenClean(TaskKind[FailingParams]):
    """Makes ``made-<name>`` in storage, then fails. Its cleanup notes each call in
    ``cleanups-<name>``, waits for ``release-<name>`` to exist, then removes what run() made."""

    params_model = FailingParams

    async def run(self, params: FailingParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        (ctx.settings.storage_dir / f"made-{params.name}").write_text("made by a task")
        await ctx.checkpoint({"made": True})
        raise RuntimeError(f"{params.name} failed on purpose")

    async def cleanup(self, params: FailingParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> None:
        storage = ctx.settings.storage_dir
        with (storage / f"cleanups-{params.name}").open("a") as calls:
            calls.write("cleanup\n")
        while True:  # another process (the test) makes the file: no event to wait on
            if (storage / f"release-{params.name}").exists():
                break
            await asyncio.sleep(0.02)
        (storage / f"made-{params.name}").unlink(missing_ok=True)

"""Built-in kind ``process``: a long server-side process of N steps, checkpointed after each.

Paused mid-run, it resumes at the next step, never from zero.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from pydantic import Field

from app.services.runtime.kinds import KindParams, TaskContext, TaskKind, task_kind


class ProcessParams(KindParams):
    steps: int = Field(10, ge=1, le=10_000_000, description="How many steps of work to do.")
    step_seconds: float = Field(1.0, ge=0, le=3600, description="How long one step takes.")
    fail_at_step: int | None = Field(
        None, ge=1, description="Raise an error when this step starts (to try out failures)."
    )


class ProcessCheckpoint(TypedDict):
    """Saved after every step."""

    step: int  # steps done


def resume_from(checkpoint: dict[str, Any] | None) -> ProcessCheckpoint:
    """The saved checkpoint, or a fresh one for a first run."""
    return ProcessCheckpoint(step=int((checkpoint or {}).get("step", 0)))


@task_kind("process")
class Process(TaskKind[ProcessParams]):
    params_model = ProcessParams
    description = "N steps of work, each `step_seconds` long, checkpointed after every step."

    async def run(self, params: ProcessParams, checkpoint: dict[str, Any] | None, ctx: TaskContext) -> Any:
        step = resume_from(checkpoint)["step"]
        ctx.progress(step, params.steps, "steps")
        while step < params.steps:
            if params.fail_at_step is not None and step + 1 == params.fail_at_step:
                raise RuntimeError(f"step {step + 1} failed (fail_at_step)")
            await asyncio.sleep(params.step_seconds)
            step += 1
            await ctx.checkpoint(ProcessCheckpoint(step=step), done=step, total=params.steps, unit="steps")
        return {"steps": step}

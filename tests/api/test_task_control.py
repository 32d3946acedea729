"""Pause, resume and cancel: every transition, every illegal one, races, latency, retries."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from app.models import Task, TaskEvent
from tests.helpers.apps import open_app, wait_for, wait_state


def slow(steps: int = 200, step_seconds: float = 0.05) -> dict:
    return {"kind": "process", "params": {"steps": steps, "step_seconds": step_seconds}}


async def start(client, body: dict) -> str:
    response = await client.post("/tasks", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def control(client, task_id: str, action: str, expect: int = 202) -> dict:
    response = await client.post(f"/tasks/{task_id}/{action}")
    assert response.status_code == expect, response.text
    return response.json()


async def step_log(app, task_id: str) -> list[int]:
    async with app.state.database.engine.connect() as conn:
        rows = await conn.execute(text("SELECT step FROM step_log WHERE task_id = :t ORDER BY step"), {"t": task_id})
        return [r.step for r in rows]


async def test_pause_then_resume_continues_from_the_checkpoint(client):
    task_id = await start(client, slow(steps=12, step_seconds=0.05))
    await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 3)
    assert (await control(client, task_id, "pause"))["state"] in {"pausing", "paused"}
    paused = await wait_state(client, task_id, "paused")
    step = paused["checkpoint"]["step"]
    assert 3 <= step < 12
    assert paused["paused_at"] is not None and paused["control"] is None
    assert paused["progress"]["done"] == step

    assert (await control(client, task_id, "resume"))["state"] == "queued"
    done = await wait_state(client, task_id, "succeeded")
    assert done["result"] == {"steps": 12}
    assert done["attempts"] == 1  # a pause is not a failed attempt


async def test_resumed_task_does_each_step_exactly_once(app, client):
    task_id = await start(client, {"kind": "record_steps", "params": {"steps": 10, "step_seconds": 0.03}})
    for _ in range(3):
        await wait_for(client, task_id, lambda t: t["state"] == "running" and t["progress"]["done"] >= 1)
        await control(client, task_id, "pause")
        task = await wait_state(client, task_id, "paused", "succeeded")
        if task["state"] == "succeeded":
            break
        await control(client, task_id, "resume")
    await wait_state(client, task_id, "succeeded")
    assert await step_log(app, task_id) == list(range(1, 11))


async def test_pause_a_queued_task_and_cancel_a_paused_one(settings):
    async with open_app(settings, max_concurrent_tasks=1) as (_app, client):
        blocker = await start(client, {"kind": "marker", "params": {"name": "blocker"}})
        await wait_state(client, blocker, "running")
        waiting = await start(client, slow(steps=3, step_seconds=0.01))
        assert (await client.get(f"/tasks/{waiting}")).json()["state"] == "queued"

        paused = await control(client, waiting, "pause")
        assert paused["state"] == "paused"  # nobody runs it, so it pauses at once
        await control(client, blocker, "cancel")
        await wait_state(client, blocker, "cancelled")
        # the freed slot must not pick up the paused task
        assert (await client.get(f"/tasks/{waiting}")).json()["state"] == "paused"

        assert (await control(client, waiting, "cancel"))["state"] == "cancelling"
        cancelled = await wait_state(client, waiting, "cancelled")
        assert cancelled["finished_at"] is not None


async def test_cancel_a_queued_task(settings):
    async with open_app(settings, max_concurrent_tasks=1) as (_app, client):
        blocker = await start(client, {"kind": "marker", "params": {"name": "blocker"}})
        await wait_state(client, blocker, "running")
        waiting = await start(client, slow(steps=3, step_seconds=0.01))
        await control(client, waiting, "cancel")
        assert (await wait_state(client, waiting, "cancelled"))["started_at"] is None
        await control(client, blocker, "cancel")
        await wait_state(client, blocker, "cancelled")


async def test_cancel_runs_cleanup_of_a_running_task(client, settings):
    task_id = await start(client, {"kind": "marker", "params": {"name": "running"}})
    marker: Path = settings.storage_dir / "marker-running"
    await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 1)
    assert marker.exists()
    assert (await control(client, task_id, "cancel"))["state"] == "cancelling"
    await wait_state(client, task_id, "cancelled")
    assert not marker.exists()


async def test_cancel_runs_cleanup_of_a_paused_task(client, settings):
    task_id = await start(client, {"kind": "marker", "params": {"name": "paused"}})
    await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 1)
    await control(client, task_id, "pause")
    await wait_state(client, task_id, "paused")
    assert (settings.storage_dir / "marker-paused").exists()  # pause keeps what was made
    await control(client, task_id, "cancel")
    await wait_state(client, task_id, "cancelled")
    assert not (settings.storage_dir / "marker-paused").exists()


async def test_resume_while_pausing_withdraws_the_pause(client):
    task_id = await start(client, slow(steps=3, step_seconds=0.6))
    await wait_state(client, task_id, "running")
    assert (await control(client, task_id, "pause"))["state"] == "pausing"
    assert (await control(client, task_id, "resume"))["state"] == "running"
    done = await wait_state(client, task_id, "succeeded")
    assert done["paused_at"] is None
    events = (await client.get(f"/tasks/{task_id}/events")).text
    assert "event: state" in events and '"state":"paused"' not in events


@pytest.mark.parametrize(
    ("action", "final_state"),
    [("pause", "succeeded"), ("resume", "succeeded"), ("cancel", "succeeded"), ("resume", "cancelled")],
)
async def test_illegal_transitions_are_409_naming_the_state(client, action, final_state):
    if final_state == "succeeded":
        task_id = await start(client, slow(steps=1, step_seconds=0))
        await wait_state(client, task_id, "succeeded")
    else:
        task_id = await start(client, {"kind": "marker", "params": {"name": "x"}})
        await control(client, task_id, "cancel")
        await wait_state(client, task_id, "cancelled")
    body = await control(client, task_id, action, expect=409)
    assert body["current_state"] == final_state
    assert body["detail"] == f"cannot {action} a task that is {final_state}"
    assert body["type"] == "about:blank" and body["status"] == 409


async def test_failed_task_cannot_be_paused_or_resumed(client):
    task_id = await start(client, {"kind": "process", "params": {"steps": 3, "step_seconds": 0, "fail_at_step": 2}})
    await client.post(f"/tasks/{task_id}/pause")  # may land before or after the failure
    failed = await wait_for(client, task_id, lambda t: t["state"] in {"failed", "paused"})
    if failed["state"] == "paused":
        await control(client, task_id, "resume")
        failed = await wait_state(client, task_id, "failed")
    for action in ("pause", "resume"):
        assert (await control(client, task_id, action, expect=409))["current_state"] == "failed"


async def test_repeated_requests_are_harmless(client):
    task_id = await start(client, slow())
    await wait_state(client, task_id, "running")
    assert (await control(client, task_id, "resume"))["state"] == "running"  # already running
    await control(client, task_id, "pause")
    await control(client, task_id, "pause")
    await wait_state(client, task_id, "paused")
    assert (await control(client, task_id, "pause"))["state"] == "paused"
    await control(client, task_id, "cancel")
    await wait_state(client, task_id, "cancelled")
    assert (await control(client, task_id, "cancel"))["state"] == "cancelled"


async def test_pause_and_cancel_at_once_ends_cancelled_with_cleanup(client, settings):
    for name in ("racea", "raceb", "racec"):
        task_id = await start(client, {"kind": "marker", "params": {"name": name, "step_seconds": 0.02}})
        await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 1)
        pause, cancel = await asyncio.gather(
            client.post(f"/tasks/{task_id}/pause"), client.post(f"/tasks/{task_id}/cancel")
        )
        assert cancel.status_code == 202
        assert pause.status_code in (202, 409)
        if pause.status_code == 409:
            assert pause.json()["current_state"] in {"cancelling", "cancelled"}
        await wait_state(client, task_id, "cancelled")
        assert not (settings.storage_dir / f"marker-{name}").exists()


async def test_double_resume_runs_the_task_once(app, client):
    task_id = await start(client, {"kind": "record_steps", "params": {"steps": 8, "step_seconds": 0.03}})
    await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 2)
    await control(client, task_id, "pause")
    await wait_state(client, task_id, "paused")
    first, second = await asyncio.gather(
        client.post(f"/tasks/{task_id}/resume"), client.post(f"/tasks/{task_id}/resume")
    )
    assert {first.status_code, second.status_code} == {202}
    await wait_state(client, task_id, "succeeded")
    assert await step_log(app, task_id) == list(range(1, 9))
    async with app.state.database.engine.connect() as conn:
        resumes = await conn.scalar(
            text("SELECT count(*) FROM task_events WHERE task_id = :t AND message = 'resume requested'"),
            {"t": task_id},
        )
    assert resumes == 1


async def test_pause_latency_is_within_one_checkpoint_interval(app, client):
    step_seconds = 0.3
    latencies = []
    for _ in range(3):
        task_id = await start(client, slow(steps=50, step_seconds=step_seconds))
        await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 1)
        await control(client, task_id, "pause")
        paused = await wait_state(client, task_id, "paused")
        async with app.state.database.sessionmaker() as session:
            requested_at = await session.scalar(
                select(TaskEvent.at).where(TaskEvent.task_id == task_id, TaskEvent.state == "pausing")
            )
        latencies.append((datetime.fromisoformat(paused["paused_at"]) - requested_at).total_seconds())
        await control(client, task_id, "cancel")
    latencies.sort()
    assert latencies[1] <= step_seconds + 0.1, latencies


async def test_failing_kind_is_retried_then_succeeds(client):
    task_id = await start(client, {"kind": "flaky", "params": {"failures": 2}, "max_attempts": 3})
    done = await wait_state(client, task_id, "succeeded", "failed")
    assert done["state"] == "succeeded"
    assert done["attempts"] == 3
    assert done["result"] == {"attempts": 3}


async def test_failing_kind_fails_with_its_message_when_attempts_run_out(client):
    task_id = await start(client, {"kind": "flaky", "params": {"failures": 5}, "max_attempts": 2})
    failed = await wait_state(client, task_id, "failed")
    assert failed["error"] == "flaky failure on attempt 2"
    assert failed["attempts"] == 2
    assert failed["finished_at"] is not None


async def test_concurrency_limit_keeps_excess_tasks_queued(settings):
    async with open_app(settings, max_concurrent_tasks=2) as (_app, client):
        ids = [await start(client, {"kind": "marker", "params": {"name": f"c{i}"}}) for i in "abc"]
        await wait_for(client, ids[1], lambda t: t["state"] == "running")
        await wait_state(client, ids[0], "running")
        assert (await client.get(f"/tasks/{ids[2]}")).json()["state"] == "queued"
        await control(client, ids[0], "cancel")
        await wait_state(client, ids[2], "running")
        for task_id in ids[1:]:
            await control(client, task_id, "cancel")
            await wait_state(client, task_id, "cancelled")


async def test_a_runner_that_lost_its_lease_writes_nothing_more(app, client):
    """Steal the lease under a running task: its next checkpoint must fail, the task is reaped and
    resumed from the last committed checkpoint, and every step is still recorded exactly once."""
    task_id = await start(client, {"kind": "record_steps", "params": {"steps": 15, "step_seconds": 0.05}})
    await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 3)
    async with app.state.database.sessionmaker.begin() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(lease_token="stolen"))
    done = await wait_state(client, task_id, "succeeded", timeout=30)
    assert done["attempts"] == 2  # the lost run counts as an attempt
    assert await step_log(app, task_id) == list(range(1, 16))


async def test_a_task_whose_runner_is_lost_on_its_last_attempt_fails(app, client):
    body = {"kind": "record_steps", "params": {"steps": 200, "step_seconds": 0.05}, "max_attempts": 1}
    task_id = await start(client, body)
    await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 1)
    async with app.state.database.sessionmaker.begin() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(lease_token="stolen"))
    failed = await wait_state(client, task_id, "failed", timeout=30)
    assert failed["error"] == "runner lost (crashed or cut off) on its last attempt"


@pytest.mark.parametrize("action", ["pause", "cancel"])
async def test_the_final_checkpoint_is_not_a_stopping_point(client, action):
    task_id = await start(client, {"kind": "finish_on_request", "params": {}})
    await wait_for(client, task_id, lambda t: (t["checkpoint"] or {}).get("started"))
    await control(client, task_id, action)
    done = await wait_state(client, task_id, "succeeded", "paused", "cancelled")
    assert done["state"] == "succeeded"
    assert done["result"] == {"finished": True}


async def test_an_api_only_replica_takes_requests_and_claims_nothing(settings):
    async with open_app(settings, max_concurrent_tasks=0) as (app, client):
        assert "tsm-claim" not in {loop.get_name() for loop in app.state.engine._loops}
        waiting = await start(client, slow(steps=1, step_seconds=0.01))
        assert (await control(client, waiting, "pause"))["state"] == "paused"  # nobody runs it: at once

"""GET /metrics: task counts from the database, control latency, checkpoints, HTTP latency.

The in-process counters are global to the test process, so every check compares a scrape taken
before the work with one taken after it.
"""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.apps import wait_for, wait_state
from tests.helpers.tus import new_upload, patch

MiB = 1 << 20

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def start(client, kind: str, **params) -> str:
    response = await client.post("/tasks", json={"kind": kind, "params": params})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_metrics_count_tasks_and_time_control_checkpoints_and_requests(client):
    before = await scrape(client)
    assert value(before, "tsm_tasks", kind="process", state="succeeded") == 0

    done = await start(client, "process", steps=3, step_seconds=0.01)
    paused = await start(client, "marker", name="pausing", step_seconds=0.02)
    cancelled = await start(client, "marker", name="cancelling", step_seconds=0.02)
    for task_id in (paused, cancelled):
        await wait_for(client, task_id, lambda t: t["state"] == "running" and t["progress"]["done"] >= 1)
    assert (await client.post(f"/tasks/{paused}/pause")).status_code == 202
    assert (await client.post(f"/tasks/{cancelled}/cancel")).status_code == 202
    await wait_state(client, done, "succeeded")
    await wait_state(client, paused, "paused")
    await wait_state(client, cancelled, "cancelled")
    assert (await client.get("/no-such-route")).status_code == 404

    after = await scrape(client)
    # Counted in the database at scrape time; every known kind shows every state.
    assert value(after, "tsm_tasks", kind="process", state="succeeded") == 1
    assert value(after, "tsm_tasks", kind="marker", state="paused") == 1
    assert value(after, "tsm_tasks", kind="marker", state="cancelled") == 1
    assert ("tsm_tasks", frozenset({("kind", "flaky"), ("state", "failed")})) in after
    assert value(after, "tsm_tasks", kind="process", state="running") == 0

    # One observation per control request the runner acted on, and it took a while but not long.
    for action in ("pause", "cancel"):
        assert delta(before, after, "tsm_control_latency_seconds_count", action=action, kind="marker") == 1
        seconds = delta(before, after, "tsm_control_latency_seconds_sum", action=action, kind="marker")
        assert 0 <= seconds < 10

    assert delta(before, after, "tsm_checkpoint_seconds_count", kind="process") == 3
    assert delta(before, after, "tsm_checkpoint_seconds_count", kind="marker") >= 2
    assert delta(before, after, "tsm_checkpoint_seconds_sum", kind="process") > 0

    http = "tsm_http_request_duration_seconds_count"
    assert delta(before, after, http, method="POST", route="/tasks", status="201") == 3
    assert delta(before, after, http, method="POST", route="/tasks/{task_id}/pause", status="202") == 1
    assert delta(before, after, http, method="GET", route="/tasks/{task_id}", status="200") >= 3
    assert delta(before, after, http, method="GET", route="unmatched", status="404") == 1
    assert not any(
        dict(labels).get("route", "").startswith("/tasks/") and task_id in dict(labels)["route"]
        for (_, labels) in after
        for task_id in (done, paused)
    )

    # The counters the upload, download, import and export code increments are exposed.
    for name in ("tsm_bytes_uploaded", "tsm_bytes_downloaded", "tsm_rows_imported", "tsm_rows_exported"):
        assert (f"{name}_total", frozenset()) in after


async def test_metrics_need_no_api_key_even_when_auth_is_required(client, app):
    app.state.settings = app.state.settings.model_copy(update={"auth_required": True})
    assert (await client.get("/tasks")).status_code == 401
    assert (await client.get("/metrics")).status_code == 200


@pytest.mark.parametrize("store", ["s3"], indirect=True)
async def test_metrics_count_object_store_requests_bytes_and_errors(client):
    data = os.urandom(6 * MiB + 3)
    before = await scrape(client)
    url = await new_upload(client, len(data))
    assert (await patch(client, url, 0, data[: 2 * MiB])).status_code == 204  # a tail object
    assert (await patch(client, url, 2 * MiB, data[2 * MiB :])).status_code == 204
    assert (await client.get(url)).content == data
    after = await scrape(client)

    requests = "tsm_object_store_requests_total"
    assert delta(before, after, requests, operation="create_multipart_upload") == 1
    assert delta(before, after, requests, operation="upload_part") >= 1  # how many: how the body came in
    assert delta(before, after, requests, operation="complete_multipart_upload") == 1
    assert delta(before, after, requests, operation="get_object") >= 2  # the tail, the download
    sent = delta(before, after, "tsm_object_store_bytes_total", operation="upload_part")
    assert sent == len(data)
    assert delta(before, after, "tsm_object_store_bytes_total", operation="put_object") == 2 * MiB
    # The download read every byte; the tail was read back once; the SHA-256 may have run already.
    read = delta(before, after, "tsm_object_store_bytes_total", operation="get_object")
    assert read >= len(data) + 2 * MiB
    assert delta(before, after, "tsm_object_store_errors_total", operation="upload_part") == 0


@pytest.mark.parametrize("store", ["s3"], indirect=True)
async def test_metrics_count_object_store_errors(client, app):
    before = await scrape(client)
    store = app.state.store
    bucket, store.bucket = store.bucket, "tsm-no-such-bucket"
    try:
        assert (await client.get("/readyz")).status_code == 503
    finally:
        store.bucket = bucket
    after = await scrape(client)
    assert delta(before, after, "tsm_object_store_requests_total", operation="head_bucket") == 1
    assert delta(before, after, "tsm_object_store_errors_total", operation="head_bucket") == 1

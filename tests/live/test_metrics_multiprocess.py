"""With PROMETHEUS_MULTIPROC_DIR, any worker's /metrics sums the samples of every worker."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.server import LiveServer, server_stopped, wait_succeeded


def checkpoints_and_creates(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text  # a new connection: any worker may answer
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    checkpoints = samples.get(("tsm_checkpoint_seconds_count", (("kind", "process"),)), 0.0)
    creates = samples.get(
        (
            "tsm_http_request_duration_seconds_count",
            (("method", "POST"), ("route", "/tasks"), ("status", "201")),
        ),
        0.0,
    )
    return checkpoints, creates


def test_every_worker_reports_the_sum_of_all_workers(db_url, tmp_path):
    workers = 2 if db_url.startswith("postgresql") else 1  # SQLite always serves one process
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    server = LiveServer(db_url, tmp_path / "storage", TSM_WORKERS=workers, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    server.start()
    with server_stopped(server), httpx.Client(base_url=server.url, timeout=10) as http:
        created = http.post("/tasks", json={"kind": "process", "params": {"steps": 4, "step_seconds": 0.01}})
        assert created.status_code == 201, created.text
        wait_succeeded(http, created.json()["id"])
        seen = {checkpoints_and_creates(server.url) for _ in range(8)}
    assert seen == {(4.0, 1.0)}
    assert any(metrics_dir.glob("histogram_*.db")), "samples live in the shared directory"

"""The server as the container runs it: started by its CMD, probed by its HEALTHCHECK, logging JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.deploy import exec_form
from tests.helpers.server import LiveServer, server_stopped, wait_succeeded


def run_healthcheck(port: int) -> int:
    """The Dockerfile's HEALTHCHECK command, with this interpreter standing in for the image's."""
    command = exec_form("HEALTHCHECK")
    assert command[0] == "python" and "/healthz" in command[-1]
    env = {**os.environ, "TSM_PORT": str(port)}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode


def test_container_command_answers_health_metrics_and_logs_json(db_url, tmp_path):
    server = LiveServer(db_url, tmp_path / "storage", TSM_LOG_JSON="true", TSM_LOG_LEVEL="info")
    server.start()
    with server_stopped(server), httpx.Client(base_url=server.url, timeout=10) as http:
        assert run_healthcheck(server.port) == 0
        created = http.post(
            "/tasks",
            json={"kind": "process", "params": {"steps": 3, "step_seconds": 0.01}},
            headers={"X-Request-ID": "deploy-req-1"},
        )
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"] == "deploy-req-1"
        task_id = created.json()["id"]
        wait_succeeded(http, task_id)
        scraped = http.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        tasks = {
            (s.labels["kind"], s.labels["state"]): s.value
            for family in text_string_to_metric_families(scraped.text)
            if family.name == "tsm_tasks"
            for s in family.samples
        }
        assert tasks[("process", "succeeded")] == 1
        assert tasks[("process", "running")] == 0
    assert run_healthcheck(server.port) != 0, "the healthcheck must fail once the server is gone"

    records = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
    assert records, "the server logged nothing"
    (post,) = [r for r in records if r["logger"] == "tsm.access" and r.get("request_id") == "deploy-req-1"]
    assert (post["method"], post["route"], post["status"]) == ("POST", "/tasks", 201)
    gets = [r for r in records if r["logger"] == "tsm.access" and r.get("path") == f"/tasks/{task_id}"]
    assert gets and all(r["task_id"] == task_id and r["route"] == "/tasks/{task_id}" for r in gets)
    assert len({r["request_id"] for r in gets}) == len(gets), "every request gets its own id"
    runner = [r for r in records if r["logger"] == "tsm.engine" and r.get("task_id") == task_id]
    assert any("succeeded" in r["message"] for r in runner), runner
    assert all(r["owner"] == "local" and "request_id" not in r for r in runner)

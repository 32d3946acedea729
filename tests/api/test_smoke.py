from tests.helpers.apps import wait_state


async def test_process_runs_to_success(client):
    response = await client.post("/tasks", json={"kind": "process", "params": {"steps": 3, "step_seconds": 0.01}})
    assert response.status_code == 201, response.text
    task = await wait_state(client, response.json()["id"], "succeeded")
    assert task["progress"]["done"] == 3
    assert task["result"] == {"steps": 3}

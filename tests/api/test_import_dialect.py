"""import_csv on both databases: a sniffed dialect, types from a spread sample that widen when a
later value does not fit, and the reject limit (max_errors). Sniffing, sampling and the preview
also run on S3 (BOTH_STORES: the source is an upload in the bucket, read with ranged GETs)."""

from __future__ import annotations

import pytest

from tests.helpers.imports import BOTH_STORES, ImportEnv, import_env

__all__ = ["import_env"]  # the `env` fixture

pytestmark = pytest.mark.asyncio


@BOTH_STORES
async def test_semicolon_file_imports_with_no_options(env: ImportEnv):
    source = await env.source("semi.csv", b"id;name;price\n1;a, b;1,5\n2;c;2\n")
    task = await env.run(**source, table="semi")
    assert task["state"] == "succeeded", task
    result = task["result"]
    assert result["dialect"] == {"delimiter": ";", "quote": '"', "header": True}
    assert [(c["name"], c["type"]) for c in result["columns"]] == [
        ("id", "bigint"),
        ("name", "text"),
        ("price", "text"),
    ]
    assert await env.rows("semi", cast=True) == [("1", "a, b", "1,5"), ("2", "c", "2")]
    assert task["checkpoint"]["dialect"]["delimiter"] == ";"  # what a resume parses with


@pytest.mark.parametrize(
    ("content", "delimiter"),
    [(b"1\t2.5\tx y\n2\t3.5\tz\n", "\t"), (b"1|2.5|x,y\n2|3.5|z\n", "|")],
)
async def test_tab_and_pipe_without_header_are_sniffed(env: ImportEnv, content, delimiter):
    env.put("raw.csv", content)
    task = await env.run(path="incoming/raw.csv", table="raw")
    assert task["state"] == "succeeded", task
    assert task["result"]["dialect"] == {"delimiter": delimiter, "quote": '"', "header": False}
    assert [c["name"] for c in task["result"]["columns"]] == ["column_1", "column_2", "column_3"]
    assert len(await env.rows("raw")) == 2  # the first record is data, not a header


async def test_single_quote_is_sniffed(env: ImportEnv):
    env.put("sq.csv", b"id,v\n1,'a,b'\n2,'c'\n")
    task = await env.run(path="incoming/sq.csv", table="sq")
    assert task["state"] == "succeeded", task
    assert task["result"]["dialect"]["quote"] == "'"
    assert await env.rows("sq", cast=True) == [("1", "a,b"), ("2", "c")]


async def test_explicit_options_win_and_a_failure_hints_at_the_dialect(env: ImportEnv):
    env.put("semi.csv", b"a;b;c\n1;2,5;3\n")
    task = await env.run(path="incoming/semi.csv", table="wrong", delimiter=",")
    assert task["state"] == "failed", task
    assert "the file looks `;`-separated" in task["error"], task["error"]
    assert "line 2" in task["error"], task["error"]
    assert await env.tables() == []
    task = await env.run(path="incoming/semi.csv", table="forced", delimiter=",", header=False, infer_types=False)
    assert task["state"] == "failed", task  # header=False: the 2-field record still does not fit
    env.put("one.csv", b"a;b\n1;2\n")
    task = await env.run(path="incoming/one.csv", table="kept", delimiter=",")
    assert task["state"] == "succeeded", task  # explicit: one column named a_b
    assert [c["name"] for c in task["result"]["columns"]] == ["a_b"]


def numbers(count: int, odd: dict[int, str]) -> bytes:
    return b"id,v\n" + "".join(f"{i},{odd.get(i, i)}\n" for i in range(1, count + 1)).encode()


@BOTH_STORES
async def test_types_come_from_head_middle_and_tail(env: ImportEnv):
    source = await env.source("tail.csv", numbers(6000, {6000: "x"}))
    task = await env.run(**source, table="tail", sample_records=300, timeout=60)
    assert task["state"] == "succeeded", task
    assert {c["name"]: c["type"] for c in task["result"]["columns"]} == {"id": "bigint", "v": "text"}
    assert task["result"]["fallbacks"] == []  # found by the sample: no restart needed


@BOTH_STORES
@pytest.mark.parametrize(("value", "widened"), [("2.5", "numeric"), ("abc", "text")])
async def test_a_later_misfit_widens_the_column_not_fails(env: ImportEnv, value, widened):
    source = await env.source("late.csv", numbers(6000, {1500: value}))  # outside the three samples
    task = await env.run(**source, table="late", sample_records=300, timeout=60)
    assert task["state"] == "succeeded", task
    result = task["result"]
    assert {c["name"]: c["type"] for c in result["columns"]} == {"id": "bigint", "v": widened}
    assert result["rows"] == 6000
    [fallback] = result["fallbacks"]
    assert (fallback["column"], fallback["from"], fallback["to"], fallback["line"]) == ("v", "bigint", widened, 1501)
    assert "widened to" in fallback["message"] and value in fallback["message"]
    rows = await env.rows("late", cast=True)
    assert len(rows) == 6000 and dict(rows)["1500"] in (value, "2.50")
    events = (await env.client.get(f"/tasks/{task['id']}/events", params={"follow": "false"})).text
    assert events.count('"state": "running"') + events.count('"state":"running"') == 1, events  # one run
    assert await env.tables() == ["late"]


async def test_an_explicit_type_still_rejects(env: ImportEnv):
    env.put("strict.csv", numbers(400, {300: "abc"}))
    columns = [{"name": "id"}, {"name": "v", "type": "bigint"}]
    task = await env.run(path="incoming/strict.csv", table="strict", columns=columns, sample_records=30)
    assert task["state"] == "failed", task
    assert "line 301" in task["error"] and "abc" in task["error"], task["error"]


def with_bad(count: int, bad: int) -> bytes:
    return numbers(count, {i * (count // (bad + 1)): "x" for i in range(1, bad + 1)})


@pytest.mark.parametrize(("limit", "ok"), [(3, False), (5, True), (0.01, False), (0.03, True)])
async def test_max_errors(env: ImportEnv, limit, ok):
    env.put("bad.csv", with_bad(200, 5))
    columns = [{"name": "id", "type": "bigint"}, {"name": "v", "type": "bigint"}]
    params = {"path": "incoming/bad.csv", "table": "lim", "columns": columns, "on_error": "skip"}
    task = await env.run(**params, max_errors=limit)
    if ok:
        assert task["state"] == "succeeded", task
        assert (task["result"]["rows"], task["result"]["rejected"]) == (195, 5)
        return
    assert task["state"] == "failed", task
    assert "max_errors" in task["error"] and "nothing was imported" in task["error"], task["error"]
    assert await env.tables() == []  # neither the table nor its staging
    assert (await env.client.get("/files", params={"task_id": task["id"]})).json()["items"] == []
    assert not (env.storage / "files").exists() or not list((env.storage / "files").iterdir())


async def test_max_errors_needs_skip(env: ImportEnv):
    env.put("a.csv", b"a\n1\n")
    for params, fragment in (
        ({"max_errors": 3}, "on_error=skip"),
        ({"on_error": "skip", "max_errors": 1.5}, "below 1"),
    ):
        response = await env.client.post(
            "/tasks", json={"kind": "import_csv", "params": {"path": "incoming/a.csv", "table": "t", **params}}
        )
        assert response.status_code == 422 and fragment in response.text, response.text


@BOTH_STORES
async def test_preview_shows_the_file_as_an_import_would_read_it(env: ImportEnv):
    source = await env.source("semi.csv", b"id;name;price\n1;a, b;1,5\n2;c;2\n3;;4\n")
    response = await env.client.get("/previews/csv", params={**source, "rows": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dialect"] == {"delimiter": ";", "quote": '"', "header": True}
    assert body["columns"] == [
        {"name": "id", "type": "bigint"},
        {"name": "name", "type": "text"},
        {"name": "price", "type": "text"},
    ]
    assert body["rows"] == [["1", "a, b", "1,5"], ["2", "c", "2"]]
    explicit = await env.client.get("/previews/csv", params={**source, "header": "false"})
    assert explicit.json()["rows"][0] == ["id", "name", "price"]  # explicit options win
    assert await env.tables() == []  # nothing imported


async def test_preview_errors_are_clear(env: ImportEnv):
    missing = await env.client.get("/previews/csv", params={"path": "incoming/none.csv"})
    assert missing.status_code == 404, missing.text
    env.put("a.csv", b"a,b\n1,2\n")
    bad = await env.client.get("/previews/csv", params={"path": "incoming/a.csv", "delimiter": '"'})
    assert bad.status_code == 422 and "must differ" in bad.text, bad.text
    neither = await env.client.get("/previews/csv")
    assert neither.status_code == 422 and "file_id" in neither.text, neither.text


@BOTH_STORES
async def test_preview_of_a_large_upload_samples_its_middle_and_tail(env: ImportEnv):
    """Several MiB: on S3 the head, the middle and the tail are ranged GETs of their own."""
    content = numbers(400_000, {200_000: "2.5", 399_999: "n/a"})
    file_id = await env.upload(content)
    response = await env.client.get("/previews/csv", params={"file_id": file_id, "rows": 3, "sample_records": 3000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == [{"name": "id", "type": "bigint"}, {"name": "v", "type": "text"}]
    assert body["rows"] == [["1", "1"], ["2", "2"], ["3", "3"]]
    gone = await env.client.get("/previews/csv", params={"file_id": "00000000-0000-0000-0000-000000000000"})
    assert gone.status_code == 404, gone.text

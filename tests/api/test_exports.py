"""export_csv: exact bytes, pause/resume, cancel, filters, columns, bad input, owners (both DBs,
both byte stores: the local directory and S3, where the result is one multipart upload)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.metrics import ROWS_EXPORTED
from app.services.csv_export.plan import csv_line
from app.services.owners.keys import create_key
from tests.helpers.apps import make_settings, open_app, wait_for, wait_state
from tests.helpers.exports import NASTY, PAGE_ROWS, Tables, expected_csv, file_rows
from tests.helpers.s3 import store_settings
from tests.helpers.tus import s3_leftovers

pytestmark = pytest.mark.parametrize("store", ["local", "s3"], indirect=True)


@pytest.fixture
def export_settings(db_url: str, tmp_path: Path, store: str, request: pytest.FixtureRequest) -> Settings:
    on_s3 = store_settings(request.getfixturevalue("s3_server")) if store == "s3" else {}
    return make_settings(db_url, tmp_path / "storage", export_page_rows=PAGE_ROWS, **on_s3)


@pytest.fixture
async def exp(export_settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with open_app(export_settings) as pair:
        yield pair


@pytest.fixture
def tables(export_settings: Settings) -> Tables:
    return Tables(export_settings)


async def start(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    response = await client.post("/tasks", json={"kind": "export_csv", "params": params}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def export(client: httpx.AsyncClient, settings: Settings, **params: Any) -> tuple[dict[str, Any], bytes]:
    task = await wait_state(client, (await start(client, **params))["id"], "succeeded", "failed")
    assert task["state"] == "succeeded", task
    return task, await exported_bytes(client, task)


async def exported_bytes(
    client: httpx.AsyncClient, task: dict[str, Any], headers: dict[str, str] | None = None
) -> bytes:
    """The export's file as GET /files/{id} serves it, from whichever store holds it."""
    response = await client.get(f"/files/{task['result']['file_id']}", headers=headers)
    assert response.status_code == 200, response.text
    return response.content


async def leftovers(app: FastAPI, file_id: str) -> list[str]:
    """What the store still holds of a file: on S3 open multipart uploads and objects under its key."""
    if app.state.store.local:
        path = app.state.settings.storage_dir / "files" / file_id
        return [str(path)] if path.exists() else []
    return await s3_leftovers(app, file_id)


async def problem(client: httpx.AsyncClient, status: int, headers: dict[str, str] | None = None, **params: Any) -> str:
    response = await client.post("/tasks", json={"kind": "export_csv", "params": params}, headers=headers)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and "Traceback" not in response.text
    return body["detail"]


# -- exact output -----------------------------------------------------------------------------


async def test_nasty_values_exact_bytes_and_file_row(exp, tables, export_settings):
    app, client = exp
    rows = await tables.people(count=13)
    before = ROWS_EXPORTED._value.get()
    task, data = await export(client, export_settings, table="people")
    assert data == expected_csv(["id", "name", "note", "qty"], rows)
    # Parsed back, every cell is what went in; NULL and "" differ (NULL is unquoted, "" quoted).
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert parsed[1 + NASTY.index("line\nbreak")][2] == "line\nbreak"
    assert data.count(b',"",') == 1 and b"9,n0,,3\n" in data
    result = task["result"]
    assert result["rows"] == len(rows) and result["bytes"] == len(data) and result["order_key"] == ["id"]
    assert task["progress"]["done"] == task["progress"]["total"] == len(rows)
    assert task["checkpoint"]["position"] == [str(len(rows))] or task["checkpoint"]["position"] == [len(rows)]
    [row] = await file_rows(app, task["id"])
    assert (row.id, row.state, row.origin, row.owner) == (result["file_id"], "complete", "export", "local")
    assert (row.length, row.filename, row.content_type) == (len(data), "people.csv", "text/csv")
    assert ROWS_EXPORTED._value.get() - before == len(rows)


async def test_null_string_delimiter_header_and_filename(exp, tables, export_settings):
    _app, client = exp
    rows = await tables.people()
    params = {"delimiter": ";", "null": "\\N", "header": False, "filename": "people ünï.csv"}
    task, data = await export(client, export_settings, table="people", **params)
    assert data == expected_csv(None, rows, ";", "\\N")
    assert b'"\\N"' in data and b";\\N;" in data  # the text \N is quoted, NULL is not
    assert task["result"]["filename"] == "people ünï.csv"


async def test_columns_subset_in_given_order(exp, tables, export_settings):
    _app, client = exp
    rows = await tables.people(count=4)
    _task, data = await export(client, export_settings, table="people", columns=["note", "id"])
    assert data == expected_csv(["note", "id"], [(r[2], r[0]) for r in rows])


async def test_single_column_and_empty_table(exp, tables, export_settings):
    _app, client = exp
    await tables.execute(
        "local",
        'CREATE TABLE {s}"one" (v text NOT NULL UNIQUE)',
        rows=[("\\.",), ("a",)],
        insert='INSERT INTO {s}"one" VALUES ({marks})',
    )
    task, data = await export(client, export_settings, table="one")
    assert data == b'v\n"\\."\na\n'  # a lone \. is quoted, as PostgreSQL does
    assert task["result"]["order_key"] == ["v"]
    await tables.execute("local", 'CREATE TABLE {s}"nothing" (id integer PRIMARY KEY, x text)')
    task, data = await export(client, export_settings, table="nothing")
    assert data == b"id,x\n" and task["result"]["rows"] == 0


async def test_composite_key_order(exp, tables, export_settings):
    _app, client = exp
    rows = [(a, b, f"{a}-{b}") for a in (3, 1, 2) for b in ("z", "a", "m")]
    await tables.execute(
        "local",
        'CREATE TABLE {s}"pairs" (a integer NOT NULL, b text NOT NULL, v text, PRIMARY KEY (a, b))',
        rows=rows,
        insert='INSERT INTO {s}"pairs" VALUES ({marks})',
    )
    task, data = await export(client, export_settings, table="pairs")
    assert data == expected_csv(["a", "b", "v"], sorted(rows))
    assert task["result"]["order_key"] == ["a", "b"]


# -- filters ----------------------------------------------------------------------------------

FILTER_CASES: list[tuple[list[dict[str, Any]], Any]] = [
    ([{"column": "qty", "op": "eq", "value": 3}], lambda r: r[3] == 3),
    ([{"column": "qty", "op": "ne", "value": 3}], lambda r: r[3] != 3),
    ([{"column": "qty", "op": "lt", "value": 3}], lambda r: r[3] < 3),
    ([{"column": "qty", "op": "le", "value": 3}], lambda r: r[3] <= 3),
    ([{"column": "qty", "op": "gt", "value": 5}], lambda r: r[3] > 5),
    ([{"column": "qty", "op": "ge", "value": 5}], lambda r: r[3] >= 5),
    ([{"column": "name", "op": "in", "value": ["n1", "n3"]}], lambda r: r[1] in ("n1", "n3")),
    ([{"column": "name", "op": "not_in", "value": ["n1", "n3"]}], lambda r: r[1] not in ("n1", "n3")),
    ([{"column": "note", "op": "like", "value": "row 1%"}], lambda r: (r[2] or "").startswith("row 1")),
    ([{"column": "note", "op": "is_null"}], lambda r: r[2] is None),
    ([{"column": "note", "op": "not_null"}], lambda r: r[2] is not None),
    (
        [{"column": "qty", "op": "ge", "value": 2}, {"column": "name", "op": "eq", "value": "n2"}],
        lambda r: r[3] >= 2 and r[1] == "n2",
    ),
    ([{"column": "note", "op": "eq", "value": "x'); DROP TABLE people; --"}], lambda r: False),
]


async def test_filters(exp, tables, export_settings):
    _app, client = exp
    rows = await tables.people(count=20)
    for filters, keep in FILTER_CASES:
        task, data = await export(client, export_settings, table="people", filters=filters)
        wanted = [r for r in rows if keep(r)]
        assert data == expected_csv(["id", "name", "note", "qty"], wanted), filters
        assert task["result"]["rows"] == len(wanted)
    _task, data = await export(client, export_settings, table="people")  # the table is still there
    assert data == expected_csv(["id", "name", "note", "qty"], rows)


# -- order keys -------------------------------------------------------------------------------


async def test_physical_order_when_no_key(exp, tables, export_settings):
    _app, client = exp
    rows = [(i % 13, f"{'x' * 700} {i}") for i in range(300)]  # no key at all; ~30 heap blocks
    await tables.execute(
        "local",
        'CREATE TABLE {s}"heap" (n integer, filler text)',
        rows=rows,
        insert='INSERT INTO {s}"heap" VALUES ({marks})',
    )
    reference, data = await export(client, export_settings, table="heap")
    assert data == expected_csv(["n", "filler"], rows)
    assert reference["result"]["order_key"] == (["ctid"] if tables.pg else ["rowid"])
    task = await pause_resume_until_done(client, (await start(client, table="heap"))["id"], export_settings, _app)
    assert await exported_bytes(client, task) == data


async def test_order_by_unique_not_null_column(exp, tables, export_settings):
    _app, client = exp
    rows = [(f"k{9 - i}", i) for i in range(10)]
    await tables.execute(
        "local",
        'CREATE TABLE {s}"codes" (code text NOT NULL, n integer)',
        'CREATE UNIQUE INDEX codes_code ON {s}"codes" (code)',
        rows=rows,
        insert='INSERT INTO {s}"codes" VALUES ({marks})',
    )
    task, data = await export(client, export_settings, table="codes", order_by="code")
    assert task["result"]["order_key"] == ["code"]
    assert data == expected_csv(["code", "n"], sorted(rows))


# -- pause / resume / cancel ------------------------------------------------------------------


async def pause_resume_until_done(
    client: httpx.AsyncClient, task_id: str, settings: Settings, app: FastAPI | None = None, rounds: int = 8
) -> dict[str, Any]:
    """Pause mid-export, scribble after the checkpoint's offset, resume; repeat; then finish."""
    paused_mid = 0
    done = -1.0
    for _ in range(rounds):
        task = await wait_for(
            client,
            task_id,
            lambda t, done=done: (
                t["state"] == "succeeded" or (t["state"] == "running" and t["progress"]["done"] > done)
            ),
        )
        if task["state"] == "succeeded":
            break
        await client.post(f"/tasks/{task_id}/pause")
        task = await wait_state(client, task_id, "paused", "succeeded")
        if task["state"] == "succeeded":
            break
        checkpoint = task["checkpoint"]
        done = task["progress"]["done"]
        assert done == checkpoint["rows"]
        if 0 < checkpoint["rows"] < checkpoint["total"]:
            paused_mid += 1
        if app is not None:
            [row] = await file_rows(app, task_id)
            assert row.state == "writing"  # a paused export is not downloadable
            assert row.offset == checkpoint["offset"] and row.multipart == checkpoint["multipart"]
        await scribble_past_the_checkpoint(settings, app, checkpoint)
        assert (await client.post(f"/tasks/{task_id}/resume")).status_code == 202
    assert paused_mid >= 2, "the export finished before it could be paused mid-way"
    # The rest of the table, 5 rows a page, each with its checkpoint: slow on a loaded machine.
    task = await wait_state(client, task_id, "succeeded", "failed", timeout=90)
    assert task["state"] == "succeeded", task
    return task


GARBAGE = b"GARBAGE,NOT,IN,THE,EXPORT\n"


async def scribble_past_the_checkpoint(settings: Settings, app: FastAPI | None, checkpoint: dict[str, Any]) -> None:
    """Write what a run killed after its last checkpoint could have left: none of it may count.

    Local: bytes after the checkpoint's offset. S3: a part under the next part number and a
    tail segment, neither in the checkpoint's list."""
    file_id = checkpoint["file_id"]
    if not settings.storage_url:
        path = settings.storage_dir / "files" / file_id
        # (Paused at the very first checkpoint, the file may not have been made yet.)
        assert (path.stat().st_size if path.exists() else 0) >= checkpoint["offset"]
        with path.open("ab") as handle:
            handle.write(GARBAGE)
        return
    assert app is not None
    multipart = checkpoint["multipart"]
    store = app.state.store
    if multipart is None:  # paused at the first checkpoint: a dead run's upload nobody names
        await store.s3.create_multipart_upload(Bucket=store.bucket, Key=store.key(file_id))
        return
    assert (
        sum(p["size"] for p in multipart["parts"]) + sum(s["size"] for s in multipart["segments"])
        == (checkpoint["offset"])
    )
    number = len(multipart["parts"]) + 1
    await store.upload_part(file_id, multipart["upload_id"], number, GARBAGE * 1000)
    await store.put_tail(file_id, GARBAGE)


async def test_pause_resume_many_times_gives_identical_bytes(exp, tables, export_settings):
    app, client = exp
    await tables.people(count=1500)  # enough pages that pauses land mid-way even when a pause waits for the lock
    _reference, data = await export(client, export_settings, table="people")
    task = await pause_resume_until_done(client, (await start(client, table="people"))["id"], export_settings, app)
    assert await exported_bytes(client, task) == data
    [row] = await file_rows(app, task["id"])
    assert (row.state, row.length) == ("complete", len(data))


async def test_pause_resume_across_s3_parts_gives_identical_bytes(tables, export_settings, store):
    if store == "local":
        pytest.skip("parts and tail segments are S3's")
    rows = [(i, f"{i:06d} " + "x" * 5000) for i in range(1, 2401)]  # about 12 MiB: two parts and a tail
    await tables.execute(
        "local",
        'CREATE TABLE {s}"wide" (id integer PRIMARY KEY, filler text)',
        rows=rows,
        insert='INSERT INTO {s}"wide" VALUES ({marks})',
    )
    async with open_app(export_settings, export_page_rows=60) as (app, client):
        _reference, data = await export(client, export_settings, table="wide")
        assert data == expected_csv(["id", "filler"], rows)
        task_id = (await start(client, table="wide"))["id"]
        parts_seen: set[int] = set()
        done = -1.0
        for _ in range(6):
            task = await wait_for(
                client,
                task_id,
                lambda t, done=done: t["state"] == "succeeded" or t["progress"]["done"] > done + 300,
            )
            if task["state"] == "succeeded":
                break
            await client.post(f"/tasks/{task_id}/pause")
            task = await wait_state(client, task_id, "paused", "succeeded")
            if task["state"] == "succeeded":
                break
            checkpoint = task["checkpoint"]
            done = task["progress"]["done"]
            if checkpoint["multipart"]:
                parts_seen.add(len(checkpoint["multipart"]["parts"]))
            await scribble_past_the_checkpoint(export_settings, app, checkpoint)
            assert (await client.post(f"/tasks/{task_id}/resume")).status_code == 202
        task = await wait_state(client, task_id, "succeeded", "failed")
        assert task["state"] == "succeeded", task["error"]
        assert parts_seen - {0}, f"no pause came after a part was uploaded: {parts_seen}"
        assert await exported_bytes(client, task) == data
        file_id = task["result"]["file_id"]
        assert await leftovers(app, file_id) == [app.state.store.key(file_id)]  # no upload, no tail left


async def test_cancel_removes_file_and_row(exp, tables, export_settings):
    app, client = exp
    await tables.people(count=3000)  # enough pages that a cancel lands mid-way on a loaded machine
    for pause_first in (True, False):
        task_id = (await start(client, table="people"))["id"]
        task = await wait_for(client, task_id, lambda t: t["progress"]["done"] > 0)
        if pause_first:
            await client.post(f"/tasks/{task_id}/pause")
            task = await wait_state(client, task_id, "paused")
        file_id = task["checkpoint"]["file_id"]
        assert await leftovers(app, file_id) and await file_rows(app, task_id)
        assert (await client.post(f"/tasks/{task_id}/cancel")).status_code == 202
        await wait_state(client, task_id, "cancelled")
        assert await leftovers(app, file_id) == []  # S3: no multipart upload, no object, no tail
        assert await file_rows(app, task_id) == []
    assert list((export_settings.storage_dir / "files").iterdir()) == []


# -- bad input and owners ---------------------------------------------------------------------


async def test_bad_params_are_clear_4xx(exp, tables):
    _app, client = exp
    await tables.people()
    await tables.execute("local", 'CREATE VIEW {s}"people_view" AS SELECT * FROM {s}"people"')
    assert "no table 'missing'" in await problem(client, 404, table="missing")
    assert "not allowed" in await problem(client, 422, table="bad-name;")
    assert "reserved" in await problem(client, 422, table="pg_class")
    assert "'nope'" in await problem(client, 422, table="people", columns=["id", "nope"])
    assert "twice" in await problem(client, 422, table="people", columns=["id", "id"])
    assert "'ghost'" in await problem(
        client, 422, table="people", filters=[{"column": "ghost", "op": "eq", "value": 1}]
    )
    assert "op" in await problem(client, 422, table="people", filters=[{"column": "id", "op": "regex", "value": "x"}])
    assert "one value" in await problem(client, 422, table="people", filters=[{"column": "id", "op": "eq"}])
    assert "list" in await problem(client, 422, table="people", filters=[{"column": "id", "op": "in", "value": []}])
    assert "no value" in await problem(
        client, 422, table="people", filters=[{"column": "id", "op": "is_null", "value": 1}]
    )
    assert "not a usable key" in await problem(client, 422, table="people", order_by="name")
    assert "view" in await problem(client, 422, table="people_view")
    assert "delimiter" in await problem(client, 422, table="people", delimiter='"')
    assert "delimiter" in await problem(client, 422, table="people", delimiter=";;")
    assert "null" in await problem(client, 422, table="people", null="a,b")
    assert "file name" in await problem(client, 422, table="people", filename="../../etc/passwd")
    assert "owner" in await problem(client, 422, table="people", owner="Not An Owner")
    assert "extra" in (await problem(client, 422, table="people", sql="DROP TABLE people")).lower()
    if tables.pg:  # SQLite compares any value with any column
        assert "integer" in await problem(
            client, 422, table="people", filters=[{"column": "qty", "op": "eq", "value": "lots"}]
        )


async def test_without_rowid_table_without_key_is_422(exp, tables):
    _app, client = exp
    if tables.pg:
        await tables.execute("local", 'CREATE TABLE {s}"parts" (k integer) PARTITION BY RANGE (k)')
        assert "partitioned" in await problem(client, 422, table="parts")
    else:
        await tables.execute("local", 'CREATE TABLE {s}"wr" (a text, b text, PRIMARY KEY (a)) WITHOUT ROWID')
        await export_ok(client, table="wr")  # its primary key is NOT NULL: usable
        await tables.execute("local", 'CREATE VIEW {s}"wv" AS SELECT b FROM {s}"wr"')
        assert "view" in await problem(client, 422, table="wv")


async def export_ok(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    task = await wait_state(client, (await start(client, **params))["id"], "succeeded", "failed")
    assert task["state"] == "succeeded", task
    return task


async def test_other_owners_table_is_404_admin_may_export_it(exp, tables, export_settings):
    app, client = exp
    async with app.state.database.sessionmaker() as session:
        _row, alice = await create_key(session, "alice")
        _row, root = await create_key(session, "root", role="admin")
        await session.commit()
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_root = {"Authorization": f"Bearer {root}"}
    rows = await tables.people(owner="bob", table="secrets")
    await tables.people(owner="local", table="mine")
    assert "no table 'secrets'" in await problem(client, 404, as_alice, table="secrets")
    assert "no table 'secrets'" in await problem(client, 404, as_alice, table="secrets", owner="bob")
    assert "no table 'mine'" in await problem(client, 404, as_alice, table="mine")
    assert "no table 'secrets'" in await problem(client, 404, table="secrets")  # "local" neither
    created = await start(client, as_root, table="secrets", owner="bob")
    task = await wait_state(client, created["id"], "succeeded", headers=as_root)
    assert await exported_bytes(client, task, as_root) == expected_csv(["id", "name", "note", "qty"], rows)
    [row] = await file_rows(app, task["id"])
    assert row.owner == "root"
    assert (await client.get(f"/tasks/{task['id']}", headers=as_alice)).status_code == 404


# -- downloads and the import round trip ------------------------------------------------------


async def test_download_only_when_complete_with_range(exp, tables, export_settings):
    _app, client = exp
    await tables.people(count=300)
    task_id = (await start(client, table="people"))["id"]
    await wait_for(client, task_id, lambda t: t["progress"]["done"] > 0)
    await client.post(f"/tasks/{task_id}/pause")
    task = await wait_state(client, task_id, "paused")
    response = await client.get(f"/files/{task['checkpoint']['file_id']}")
    assert response.status_code == 409, response.text  # a paused export is not downloadable
    await client.post(f"/tasks/{task_id}/resume")
    task = await wait_state(client, task_id, "succeeded")
    data = await exported_bytes(client, task)
    response = await client.get(task["result"]["download"])
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"].startswith("text/csv") and response.headers.get("etag")
    ranged = await client.get(task["result"]["download"], headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == data[10:20]


async def test_import_then_export_round_trip(exp, export_settings):
    _app, client = exp
    records = [("id", "text", "other")]
    records += [(str(i), value, NASTY[-1 - i]) for i, value in enumerate(NASTY)]
    source = "".join(csv_line(list(r), ",", "") for r in records).encode()
    (export_settings.storage_dir / "nasty.csv").write_bytes(source)
    created = await client.post(
        "/tasks",
        json={"kind": "import_csv", "params": {"path": "nasty.csv", "table": "nasty", "infer_types": False}},
    )
    assert created.status_code == 201, created.text
    imported = await wait_state(client, created.json()["id"], "succeeded", "failed")
    assert imported["state"] == "succeeded", imported
    task, data = await export(client, export_settings, table="nasty")
    # Cell by cell (NULL is an unquoted empty field, "" a quoted one, so the bytes say it all).
    assert [row for row in csv.reader(io.StringIO(data.decode(), newline=""))] == [
        ["" if v is None else v for v in r] for r in records
    ]
    assert data == source
    assert task["result"]["rows"] == len(NASTY)


TYPED_SOURCE = (
    "id,flag,amount,day,at,at_tz,name\n"
    '1,true,1.5,2024-01-02,2024-01-02 03:04:05,2024-01-02 03:04:05+02:00,"Smith, John"\n'
    "2,f,1e3,2024-02-29,2024-02-29T23:59:59.5,2024-02-29T23:59:59Z,plain\n"
    "3,,,,,,\n"
    "4,false,2.50,1999-12-31,1999-12-31 00:00:00,1999-12-31 23:00:00-01:00,x\n"
    "5,t,0.000001,2000-01-01,2000-01-01 12:00:00,2000-01-01 12:00:00.25+00:00,y\n"
)
# The same bytes from both databases: true/false, ISO 8601 (UTC with its offset), plain numbers
TYPED_EXPORT = (
    "id,flag,amount,day,at,at_tz,name\n"
    '1,true,1.5,2024-01-02,2024-01-02T03:04:05,2024-01-02T01:04:05+00:00,"Smith, John"\n'
    "2,false,1000,2024-02-29,2024-02-29T23:59:59.500000,2024-02-29T23:59:59+00:00,plain\n"
    "3,,,,,,\n"
    "4,false,2.5,1999-12-31,1999-12-31T00:00:00,2000-01-01T00:00:00+00:00,x\n"
    "5,true,0.000001,2000-01-01,2000-01-01T12:00:00,2000-01-01T12:00:00.250000+00:00,y\n"
)


async def import_typed(client: httpx.AsyncClient, settings: Settings) -> dict[str, Any]:
    (settings.storage_dir / "typed.csv").write_text(TYPED_SOURCE)
    created = await client.post(
        "/tasks", json={"kind": "import_csv", "params": {"path": "typed.csv", "table": "typed"}}
    )
    assert created.status_code == 201, created.text
    imported = await wait_state(client, created.json()["id"], "succeeded", "failed")
    assert imported["state"] == "succeeded", imported
    return imported


async def test_typed_round_trip_gives_the_same_bytes_on_both_databases(exp, export_settings):
    _app, client = exp
    imported = await import_typed(client, export_settings)
    types = [c["type"] for c in imported["result"]["columns"]]
    assert types == ["bigint", "boolean", "numeric", "date", "timestamp", "timestamptz", "text"]
    _task, data = await export(client, export_settings, table="typed")
    assert data.decode() == TYPED_EXPORT


async def test_export_options_delimiter_header_null_and_quoting(exp, export_settings):
    _app, client = exp
    await import_typed(client, export_settings)
    options = {"delimiter": ";", "header": False, "null": "NULL", "quoting": "all", "columns": ["id", "flag", "name"]}
    _task, data = await export(client, export_settings, table="typed", **options)
    assert data.decode().splitlines() == [
        '"1";"true";"Smith, John"',
        '"2";"false";"plain"',
        '"3";NULL;NULL',
        '"4";"false";"x"',
        '"5";"true";"y"',
    ]
    _task, data = await export(client, export_settings, table="typed", columns=["id", "amount"], quoting="minimal")
    assert data.decode().splitlines()[:3] == ["id,amount", "1,1.5", "2,1000"]


async def test_sparse_integer_keys_and_empty_filtered_pages(exp, tables, export_settings):
    _app, client = exp
    keys = [-(2**63), -5, 0, 1, 2, 3, 10, 11, 12, 13, 14, 15, 1_000_000, 10**15, 2**63 - 1]
    rows = [(k, f"v{i}") for i, k in enumerate(keys)]
    await tables.execute(
        "local",
        'CREATE TABLE {s}"sparse" (id bigint NOT NULL PRIMARY KEY, v text)',
        rows=list(reversed(rows)),
        insert='INSERT INTO {s}"sparse" VALUES ({marks})',
    )
    task, data = await export(client, export_settings, table="sparse")
    assert data == expected_csv(["id", "v"], rows) and task["result"]["rows"] == len(rows)
    wanted = [r for r in rows if r[1] in ("v0", "v14")]
    only_ends = [{"column": "v", "op": "in", "value": ["v0", "v14"]}]
    task, data = await export(client, export_settings, table="sparse", filters=only_ends)
    assert data == expected_csv(["id", "v"], wanted) and task["result"]["rows"] == 2


async def test_table_dropped_while_paused_fails_and_removes_the_partial_file(exp, tables, export_settings):
    app, client = exp
    await tables.people(count=300)
    body = {"kind": "export_csv", "params": {"table": "people"}, "max_attempts": 1}
    task_id = (await client.post("/tasks", json=body)).json()["id"]
    await wait_for(client, task_id, lambda t: t["progress"]["done"] > 0)
    await client.post(f"/tasks/{task_id}/pause")
    task = await wait_state(client, task_id, "paused")
    file_id = task["checkpoint"]["file_id"]
    assert await leftovers(app, file_id)
    await tables.execute("local", 'DROP TABLE {s}"people"')
    await client.post(f"/tasks/{task_id}/resume")
    task = await wait_state(client, task_id, "failed")
    assert "no table 'people'" in task["error"]
    assert await leftovers(app, file_id) == [] and await file_rows(app, task_id) == []


async def test_pause_resume_on_a_text_key_gives_identical_bytes(exp, tables, export_settings):
    _app, client = exp
    rows = [(f'key {i:04d} ✓, "{i}"', i, NASTY[i % len(NASTY)]) for i in range(300)]
    await tables.execute(
        "local",
        'CREATE TABLE {s}"labels" (label text NOT NULL PRIMARY KEY, n integer, note text)',
        rows=list(reversed(rows)),
        insert='INSERT INTO {s}"labels" VALUES ({marks})',
    )
    reference, data = await export(client, export_settings, table="labels")
    assert reference["result"]["order_key"] == ["label"]
    assert data == expected_csv(["label", "n", "note"], sorted(rows))
    task = await pause_resume_until_done(client, (await start(client, table="labels"))["id"], export_settings, _app)
    assert await exported_bytes(client, task) == data


async def test_wide_rows_make_shorter_pages(exp, tables, export_settings, monkeypatch):
    from app.services.csv_export import source_pg as export_pg
    from app.services.csv_export import source_sqlite as export_sqlite
    from app.services.files import results, s3store

    _app, client = exp
    rows = [(i, "w" * 1000 + str(i)) for i in range(40)]
    await tables.execute(
        "local",
        'CREATE TABLE {s}"wide" (id integer PRIMARY KEY, blob text)',
        rows=rows,
        insert='INSERT INTO {s}"wide" VALUES ({marks})',
    )
    monkeypatch.setattr(export_pg, "MAX_PAGE_BYTES", 2500)
    monkeypatch.setattr(export_sqlite, "MAX_PAGE_BYTES", 2500)
    handed: list[int] = []
    writer = results.FileSink if export_settings.storage_url == "" else s3store.S3Result
    original = writer.hand_off

    async def counting(self: Any, *chunks: bytes) -> Any:
        handed.append(sum(map(len, chunks)))
        return await original(self, *chunks)

    monkeypatch.setattr(writer, "hand_off", counting)
    _task, data = await export(client, export_settings, table="wide")
    assert data == expected_csv(["id", "blob"], rows)
    assert len(handed) >= 15 and max(handed[2:]) <= 2100  # after the first two pages: ≤ 2 rows each


async def test_numbers_are_quoted_when_they_hold_the_delimiter_or_equal_null(exp, tables, export_settings):
    _app, client = exp
    await tables.execute(
        "local",
        'CREATE TABLE {s}"nums" (id integer PRIMARY KEY, x double precision)',
        rows=[(1, 1.5), (2, None), (7, -2.25)],
        insert='INSERT INTO {s}"nums" VALUES ({marks})',
    )
    _task, data = await export(client, export_settings, table="nums", delimiter=".", header=False)
    assert data == b'1."1.5"\n2.\n7."-2.25"\n'
    _task, data = await export(client, export_settings, table="nums", null="7", header=False)
    assert data == b'1,1.5\n2,7\n"7",-2.25\n'


async def test_sqlite_text_that_is_not_utf8_keeps_its_bytes(exp, tables, export_settings):
    _app, client = exp
    if tables.pg:
        pytest.skip("PostgreSQL text is always valid in its encoding")
    await tables.execute(
        "local",
        'CREATE TABLE {s}"raw" (id integer PRIMARY KEY, t text)',
        "INSERT INTO raw VALUES (1, CAST(x'ff41' AS TEXT)), (2, 'ok')",
    )
    _task, data = await export(client, export_settings, table="raw")
    assert data == b"id,t\n1,\xffA\n2,ok\n"

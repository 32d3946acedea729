"""import_csv against hostile input: server-side paths that name the service's own files,
and CSVs that databases refuse late (too many columns, system column names, huge fields)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.helpers.apps import wait_for, wait_state
from tests.helpers.imports import ImportEnv, import_env, import_env_8k, start, write_csv
from tests.helpers.server import LiveServer, poll

__all__ = ["import_env", "import_env_8k"]  # the `env` and `env8k` fixtures

TUS = {"Tus-Resumable": "1.0.0"}


# -- the service's own files ------------------------------------------------------------


def _task(server: LiveServer, task_id: str) -> dict:
    response = httpx.get(f"{server.url}/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _finished(server: LiveServer, task_id: str) -> dict:
    return poll(
        lambda: (t := _task(server, task_id))["state"] in ("succeeded", "failed", "cancelled") and t,
        what=f"task {task_id} to finish",
    )


def _import(server: LiveServer, path: str) -> httpx.Response:
    params = {"path": path, "table": "stolen"}
    return httpx.post(f"{server.url}/tasks", json={"kind": "import_csv", "params": params})


def test_own_database_is_never_opened_and_keeps_its_locks(tmp_path: Path):
    """A SQLite database inside storage under any name: importing it (by name, by a sibling's
    name, by a symlink, by a hard link, or by a source swapped for a symlink after creation)
    is refused without opening it, so the server's SQLite locks hold and no outside opener
    can mistake itself for the last user and remove the WAL under the running server."""
    storage = tmp_path / "storage"
    incoming = storage / "incoming"
    incoming.mkdir(parents=True)
    db = storage / "tsm.db"
    (incoming / "db-link.csv").symlink_to(db)
    (incoming / "later.csv").write_bytes(b"a,b\n1,2\n")
    url = f"sqlite+aiosqlite:///{db}"
    created: list[str] = []
    with LiveServer(url, storage, TSM_MAX_CONCURRENT_TASKS="1") as server:
        os.link(db, incoming / "db-hardlink.csv")
        for path in ("tsm.db", "tsm.db-wal", "tsm.db-shm", "tsm.db-journal", "./tsm.db"):
            response = _import(server, path)
            assert response.status_code == 422, (path, response.text)
            assert "service's own" in response.json()["detail"], response.json()
        for path in ("incoming/db-link.csv", "incoming/db-hardlink.csv"):
            response = _import(server, path)
            assert response.status_code == 422, (path, response.text)
            assert "service's own" in response.json()["detail"], response.json()

        # checked again when the task runs: a queued import whose source became the database
        body = {"kind": "process", "params": {"steps": 200, "step_seconds": 0.05}}
        blocker = httpx.post(f"{server.url}/tasks", json=body).json()["id"]
        poll(lambda: _task(server, blocker)["state"] == "running", what="the blocker to run")
        queued = _import(server, "incoming/later.csv")
        assert queued.status_code == 201, queued.text
        (incoming / "later.csv").unlink()
        (incoming / "later.csv").symlink_to(db)
        assert httpx.post(f"{server.url}/tasks/{blocker}/cancel").status_code == 202
        failed = _finished(server, queued.json()["id"])
        assert failed["state"] == "failed", failed
        assert "service's own" in failed["error"], failed["error"]

        # an outside opener (a backup, `tsm-server keys create`) must see the server's locks
        with sqlite3.connect(db) as outside:
            outside.execute("PRAGMA wal_checkpoint")
        outside.close()
        assert (storage / "tsm.db-wal").exists(), "the WAL was removed under the running server"
        assert (storage / "tsm.db-shm").exists()

        for _ in range(3):
            response = httpx.post(f"{server.url}/tasks", json={"kind": "process", "params": {"steps": 1}})
            assert response.status_code == 201, response.text
            created.append(response.json()["id"])
            upload = httpx.post(f"{server.url}/files", headers={**TUS, "Upload-Length": "10"})
            assert upload.status_code == 201, upload.text
        for task_id in created:
            assert _finished(server, task_id)["state"] == "succeeded"
        server.kill()  # a crash: what the server answered for must be in the database already
    with LiveServer(url, storage) as server:
        for task_id in created:
            assert _task(server, task_id)["state"] == "succeeded"


@pytest.mark.parametrize("db_name", ["tsm.db", "state/service.sqlite"])
def test_database_siblings_are_refused_whatever_their_name(tmp_path: Path, db_name: str):
    """Decided from TSM_DATABASE_URL, not from a fixed file name."""
    from app.errors import Unprocessable
    from app.services.csv_import.source import resolve_storage_path
    from tests.helpers.apps import make_settings

    storage = tmp_path / "storage"
    db = storage / db_name
    db.parent.mkdir(parents=True)
    settings = make_settings(f"sqlite+aiosqlite:///{db}", storage)
    relative = db.relative_to(storage).as_posix()
    for suffix in ("", "-wal", "-shm", "-journal"):
        with pytest.raises(Unprocessable, match="service's own database"):
            resolve_storage_path(settings, relative + suffix)  # refused whether it exists or not


def test_everything_the_service_manages_is_refused_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from app.errors import NotFound, Unprocessable
    from app.services.csv_import.source import resolve_storage_path
    from tests.helpers.apps import make_settings

    storage = tmp_path / "storage"
    (storage / "metrics").mkdir(parents=True)
    (storage / "metrics" / "counter_1.db").write_bytes(b"x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(storage / "metrics"))
    settings = make_settings("postgresql+asyncpg://nobody@127.0.0.1/none", storage)
    (storage / "tsm.sqlite3").write_bytes(b"left from the zero-setup mode")
    (storage / "loop").symlink_to(storage / "loop")
    (storage / "folder").mkdir()
    refused = {
        "metrics/counter_1.db": "metrics directory",
        "tsm.sqlite3": "service's own database",
        "tsm.sqlite3-wal": "service's own database",
        "files/0b0c1b9e-0b3f-4a5c-9b8e-1f1f1f1f1f1f": "owners' data",
        "tables/local.sqlite3-wal": "owners' data",
        "loop": "cannot be resolved",
        "folder": "not a regular file",
        "x/" * 2100 + "a.csv": "cannot be read",
    }
    for relative, fragment in refused.items():
        with pytest.raises(Unprocessable, match=fragment):
            resolve_storage_path(settings, relative)
    with pytest.raises(NotFound):
        resolve_storage_path(settings, "incoming/none.csv")
    (storage / "ok.csv").write_bytes(b"a\n1\n")
    assert resolve_storage_path(settings, "ok.csv") == (storage / "ok.csv").resolve()


async def _paused_mid_import(env: ImportEnv, name: str) -> str:
    """An import of storage/<name> (20,000 rows), paused part-way through; its task id."""
    write_csv(env.storage / name, 20_000)
    response = await start(env.client, path=name, table="paused_one", infer_types=False)
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    await wait_for(env.client, task_id, lambda t: t["progress"]["done"] > 20_000)
    assert (await env.client.post(f"/tasks/{task_id}/pause")).status_code == 202
    assert (await wait_state(env.client, task_id, "paused", "succeeded"))["state"] == "paused"
    return task_id


async def test_source_swapped_while_paused_is_refused_on_resume(env8k: ImportEnv):
    """The check runs again on every run, before the resume's fingerprint opens anything."""
    env = env8k
    task_id = await _paused_mid_import(env, "swap.csv")
    upload = await env.file_row(b"someone's upload\n", state="complete")
    (env.storage / "swap.csv").unlink()
    (env.storage / "swap.csv").symlink_to(env.storage / "files" / upload)
    assert (await env.client.post(f"/tasks/{task_id}/resume")).status_code == 202
    task = await wait_state(env.client, task_id, "failed", "succeeded")
    assert task["state"] == "failed", task
    assert "owners' data" in task["error"], task["error"]
    assert await env.tables() == []  # the staging table went with the failure


# -- what the databases would refuse late -------------------------------------------------


def _no_sql(error: str) -> None:
    for fragment in ("[SQL", "CREATE TABLE", "INSERT INTO", "COPY ", "Traceback", "sqlalche.me"):
        assert fragment not in error, error


async def test_too_many_columns_are_refused_at_creation(env: ImportEnv):
    env.put("wide.csv", (",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join("x" * 5000) + "\n").encode())
    env.put("wide-raw.csv", (",".join("x" * 5000) + "\n").encode())
    for params in ({"path": "incoming/wide.csv"}, {"path": "incoming/wide-raw.csv", "header": False}):
        response = await start(env.client, table="wide", **params)
        assert response.status_code == 422, response.text
        assert "5000 columns; a table can have at most 1600" in response.json()["detail"]
    env.put("widest.csv", (",".join(f"c{i}" for i in range(1600)) + "\n" + ",".join("x" * 1600) + "\n").encode())
    task = await env.run(path="incoming/widest.csv", table="widest")
    assert task["state"] == "succeeded", task
    assert len(task["result"]["columns"]) == 1600
    assert await env.rows("widest") == [("x",) * 1600]


async def test_a_row_too_wide_for_postgresql_fails_once_in_words(env: ImportEnv):
    """1600 bigint columns fit SQLite; on PostgreSQL the row outgrows a page: a per-record
    error (line, reason), not retried, no SQL, nothing left behind."""
    env.put("ints.csv", (",".join(f"c{i}" for i in range(1600)) + "\n" + ",".join("7" * 1600) + "\n").encode())
    task = await env.run(path="incoming/ints.csv", table="ints")
    if not env.postgres:
        assert task["state"] == "succeeded", task
        return
    assert task["state"] == "failed", task
    assert task["attempts"] == 1
    assert task["error"].startswith("line 2: row is too big"), task["error"]
    _no_sql(task["error"])
    assert await env.tables() == []


async def test_system_column_names_are_renamed_the_same_on_both_databases(env: ImportEnv):
    header = "xmin,CTID,tableoid,cmin,cmax,xmax,oid,rowid,_rowid_,c_xmin,id\n"
    env.put("sys.csv", (header + "1,2,3,4,5,6,7,8,9,10,11\n").encode())
    task = await env.run(path="incoming/sys.csv", table="sys", infer_types=False)
    assert task["state"] == "succeeded", task
    names = [c["name"] for c in task["result"]["columns"]]
    renamed_system = ["c_xmin", "c_ctid", "c_tableoid", "c_cmin", "c_cmax", "c_xmax", "c_oid", "c_rowid"]
    assert names == [*renamed_system, "c_rowid_2", "c_xmin_2", "id"]
    renamed = task["result"]["renamed"]
    assert {"header": "xmin", "column": "c_xmin"} in renamed and {"header": "CTID", "column": "c_ctid"} in renamed
    assert {"header": "id", "column": "id"} not in renamed
    assert await env.rows("sys") == [tuple(str(i) for i in range(1, 12))]
    explicit = {
        "path": "incoming/sys.csv",
        "table": "t2",
        "columns": [{"name": "XMin"}] + [{"name": f"c{i}"} for i in range(10)],
    }
    response = await start(env.client, **explicit)
    assert response.status_code == 422, response.text
    assert "system column names" in response.json()["detail"]


async def test_a_database_error_mid_import_is_told_in_words_and_not_retried(env8k: ImportEnv):
    env = env8k
    task_id = await _paused_mid_import(env, "gone.csv")
    staging = f"tsm_import_{task_id.replace('-', '')}"
    await _drop_table(env, staging)  # the name the next batch is written to no longer exists
    assert (await env.client.post(f"/tasks/{task_id}/resume")).status_code == 202
    task = await wait_state(env.client, task_id, "failed", "succeeded")
    assert task["state"] == "failed", task
    assert task["attempts"] == 1, task  # the table will not come back by retrying
    assert task["error"].startswith("database error: "), task["error"]
    assert staging in task["error"], task["error"]
    _no_sql(task["error"])
    assert await env.tables() == []


async def _drop_table(env: ImportEnv, table: str) -> None:
    if env.postgres:
        import asyncpg

        from tests.helpers.database import dsn

        conn = await asyncpg.connect(dsn(env.db_url))
        try:
            await conn.execute(f'DROP TABLE "data_local"."{table}"')
        finally:
            await conn.close()
        return
    with sqlite3.connect(env.storage / "tables" / "local.sqlite3") as db:
        db.execute(f'DROP TABLE "{table}"')
    db.close()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
async def test_database_errors_are_described_without_sql(db: str, pg_url: str):
    """describe_error() on real errors of both databases: the message, never the statement."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.services.csv_import.kind import describe_error

    url = "sqlite+aiosqlite://" if db == "sqlite" else pg_url
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(Exception) as caught:
                await conn.execute(text("INSERT INTO no_such_table VALUES (1)"))
    finally:
        await engine.dispose()
    assert "INSERT INTO" in str(caught.value)  # what used to become the task's error
    message, permanent = describe_error(caught.value)
    assert message.startswith("database error: ") and "no_such_table" in message, message
    _no_sql(message)
    assert permanent
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    assert describe_error(busy) == ("database error: database is locked", False)
    assert describe_error(OSError(28, "No space left on device", "/srv/storage/files/x")) == (
        "storage error: No space left on device",
        False,
    )


async def test_header_false_first_record_of_128_kib_and_more_imports(env: ImportEnv):
    long = "y" * (200 * 1024)
    env.put("long.csv", f"{long},1\nshort,2\n".encode())
    task = await env.run(path="incoming/long.csv", table="long_first", header=False)
    assert task["state"] == "succeeded", task
    assert [c["name"] for c in task["result"]["columns"]] == ["column_1", "column_2"]
    assert await env.rows("long_first", cast=True) == [(long, "1"), ("short", "2")]


async def test_fields_over_131072_characters_import(env: ImportEnv):
    big, huge = "é" * 131_073, "z" * (3 * 1024 * 1024)
    env.put("fields.csv", f'k,v\n1,"{big}"\n2,{huge}\n3,small\n'.encode())
    for on_error in ("abort", "skip"):
        task = await env.run(path="incoming/fields.csv", table=f"fields_{on_error}", on_error=on_error)
        assert task["state"] == "succeeded", task
        assert task["result"]["rejected"] == 0
        assert await env.rows(f"fields_{on_error}", cast=True) == [("1", big), ("2", huge), ("3", "small")]


# -- import options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"null": "a\x00b"}, "NUL"),
        ({"null": "\\."}, "end-of-data"),
        ({"delimiter": "\x00"}, "NUL"),
        ({"quote": "é"}, "ASCII"),
        ({"encoding": "utf-7"}, "ASCII-compatible"),
        ({"encoding": "iso2022_jp"}, "ASCII-compatible"),
        ({"encoding": "utf-8\x00"}, "unknown encoding"),
        ({"encoding": "shift_jis", "quote": "|"}, "part of another character"),
        ({"encoding": "gb18030", "quote": "0", "delimiter": ";"}, "part of another character"),
        ({"path": "a/" * 600 + "x.csv"}, "1024"),
        ({"path": None, "file_id": "0" * 37}, "36"),
    ],
)
async def test_unsafe_options_are_refused_at_creation(env: ImportEnv, params: dict, fragment: str):
    env.put("a.csv", b"a\n1\n")
    body = {"path": "incoming/a.csv", "table": "t", **params}
    response = await env.client.post("/tasks", json={"kind": "import_csv", "params": body})
    assert response.status_code == 422, response.text
    assert fragment in response.text, response.json()


async def test_unusual_but_valid_options_mean_the_same_on_both_databases(env: ImportEnv):
    cases = [
        ({"delimiter": "\\", "quote": "'", "null": "NUL"}, "1\\'a\\b'\\NUL\n2\\'it''s'\\x\n"),
        ({"delimiter": "\x1f", "null": "\\N"}, '1\x1f"a\x1fb"\x1f\\N\n2\x1fit\'s\x1fx\n'),
        ({"delimiter": " ", "quote": "'", "null": "-"}, "1 'a b' -\n2 'it''s' x\n"),
        ({"encoding": "shift_jis"}, '1,"a,b",\n2,it\'s,x\n'),
    ]
    for index, (options, content) in enumerate(cases):
        env.put(f"odd{index}.csv", content.encode())
        params = {"path": f"incoming/odd{index}.csv", "table": f"odd{index}", "header": False, "infer_types": False}
        task = await env.run(**params, **options)
        assert task["state"] == "succeeded", (options, task)
        assert await env.rows(f"odd{index}") == [
            ("1", "a" + options.get("delimiter", ",") + "b", None),
            ("2", "it's", "x"),
        ]


async def test_copy_options_keep_their_backslashes_whatever_the_server_setting(pg_url: str, tmp_path: Path):
    """With standard_conforming_strings off (a role's or database's setting) the null option
    ``\\N`` written into COPY as '\\N' would mean "N": a different null, silently."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from tests.helpers.database import clean_pg, dsn
    from tests.helpers.imports import _env

    await clean_pg(pg_url)
    database = make_url(pg_url).database
    admin = await asyncpg.connect(dsn(pg_url))
    await admin.execute(f'ALTER DATABASE "{database}" SET standard_conforming_strings = off')
    try:
        async for env in _env(pg_url, tmp_path, 1024):
            env.put("nulls.csv", b"v\n\\N\nN\n")
            task = await env.run(path="incoming/nulls.csv", table="nulls", null="\\N")
            assert task["state"] == "succeeded", task
            assert await env.rows("nulls") == [(None,), ("N",)]
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" RESET standard_conforming_strings')
        await admin.close()


async def test_discard_is_idempotent_and_needs_no_staging_table(env: ImportEnv):
    """What a terminal failure's cleanup relies on: it may run before anything was staged, and twice."""
    import uuid

    from app.models import Task
    from app.services.csv_import.kind import ImportCsv
    from app.services.runtime.context import TaskContext

    params = ImportCsv.params_model.model_validate({"path": "incoming/a.csv", "table": "never", "on_error": "skip"})
    task = Task(id=str(uuid.uuid4()), kind="import_csv", owner="local", attempts=1, max_attempts=3, progress_done=0)
    ctx = TaskContext(env.app.state.engine.deps, task, "no-lease")
    for _ in range(2):  # no schema / tables file yet
        await ImportCsv().cleanup(params, None, ctx)
    env.put("a.csv", b"a\n1\n")
    assert (await env.run(path="incoming/a.csv", table="kept"))["state"] == "succeeded"
    for _ in range(2):  # the namespace exists now, the staging table still does not
        await ImportCsv().cleanup(params, None, ctx)
    assert await env.tables() == ["kept"]

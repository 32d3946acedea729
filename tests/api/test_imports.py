"""import_csv on both databases: exact contents, types, modes, errors, rejects, names, params.

The main cases run on both byte stores (BOTH_STORES): on S3 their source is an upload in the
bucket (``env.source``), read with ranged GETs; ``path=`` cases stay local (paths are local only).
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.imports import BOTH_STORES, ImportEnv, import_env, nasty_csv, start, write_csv

__all__ = ["import_env"]  # the `env` fixture

pytestmark = pytest.mark.asyncio

NASTY_ROWS = [
    ["1", "Smith, John", 'He said "hi"', "1.5", "true", "2024-01-02", "2024-01-02 03:04:05"],
    ["2", "Zoë 🎉 日本", "multi\r\nline", "-2", "false", "2024-02-29", "2024-02-29T23:59:59"],
    ["3", None, "", None, None, None, None],
    ["4", "tab\there", 'comma,quote",newline\nend', "1e3", "t", "1999-12-31", "1999-12-31 00:00:00.5"],
]


@BOTH_STORES
async def test_nasty_csv_exact_text(env: ImportEnv):
    source = await env.source("nasty.csv", nasty_csv())
    task = await env.run(**source, table="nasty", infer_types=False)
    assert task["state"] == "succeeded", task
    assert task["result"]["rows"] == 4
    assert [c["name"] for c in task["result"]["columns"]] == ["id", "name", "note", "amount", "flag", "day", "at"]
    assert await env.rows("nasty") == [tuple(r) for r in NASTY_ROWS]
    assert await env.tables() == ["nasty"]  # no staging table left behind


@BOTH_STORES
async def test_type_inference(env: ImportEnv):
    source = await env.source("nasty.csv", nasty_csv())
    task = await env.run(**source, table="typed")
    assert task["state"] == "succeeded", task
    types = {c["name"]: c["type"] for c in task["result"]["columns"]}
    assert types == {
        "id": "bigint",
        "name": "text",
        "note": "text",
        "amount": "numeric",
        "flag": "boolean",
        "day": "date",
        "at": "timestamp",
    }
    rows = await env.rows("typed", cast=True)
    assert rows[0] == ("1", "Smith, John", 'He said "hi"', "1.5", "true", "2024-01-02", "2024-01-02 03:04:05")
    assert rows[2] == ("3", None, "", None, None, None, None)
    assert rows[3][3] in ("1000", "1E+3", "1e3", "1000.0")  # numeric spelled per database
    assert rows[3][6] == "1999-12-31 00:00:00.5" or rows[3][6].startswith("1999-12-31 00:00:00.5")


@BOTH_STORES
async def test_explicit_columns_and_options(env: ImportEnv):
    source = await env.source("semi.csv", b"5;'a;b';NULL\n6;'it''s';x\n")
    params = {
        **source,
        "table": "semi",
        "header": False,
        "delimiter": ";",
        "quote": "'",
        "null": "NULL",
        "columns": [{"name": "n", "type": "bigint"}, {"name": "s"}, {"name": "z", "type": "text"}],
    }
    task = await env.run(**params)
    assert task["state"] == "succeeded", task
    columns = [(c["name"], c["type"]) for c in task["result"]["columns"]]
    assert columns == [("n", "bigint"), ("s", "text"), ("z", "text")]
    assert await env.rows("semi", cast=True) == [("5", "a;b", None), ("6", "it's", "x")]


@BOTH_STORES
async def test_latin1_and_quoted_null_string(env: ImportEnv):
    source = await env.source("latin.csv", 'k,v\n1,"NULL"\n2,NULL\n3,caf\xe9\n'.encode("latin-1"))
    task = await env.run(**source, table="latin", encoding="latin-1", null="NULL", infer_types=False)
    assert task["state"] == "succeeded", task
    assert await env.rows("latin") == [("1", "NULL"), ("2", None), ("3", "café")]


@BOTH_STORES
async def test_modes(env: ImportEnv):
    a = await env.source("a.csv", b"id,v\n1,a\n2,b\n")
    b = await env.source("b.csv", b"v,id\nc,3\n")
    assert (await env.run(**a, table="m"))["state"] == "succeeded"
    again = await start(env.client, **a, table="m")
    assert again.status_code == 409, again.text
    assert "already exists" in again.json()["detail"]
    # append matches columns by name, whatever their order in the file
    assert (await env.run(**b, table="m", mode="append"))["state"] == "succeeded"
    assert await env.rows("m", cast=True) == [("1", "a"), ("2", "b"), ("3", "c")]
    replaced = await env.run(**b, table="m", mode="replace")
    assert replaced["state"] == "succeeded"
    assert await env.rows("m", cast=True) == [("c", "3")]
    # append into a table that does not exist yet creates it
    assert (await env.run(**a, table="fresh", mode="append"))["state"] == "succeeded"
    c = await env.source("c.csv", b"id,other\n9,z\n")
    wrong = await start(env.client, **c, table="m", mode="append")
    assert wrong.status_code == 422 and "other" in wrong.json()["detail"], wrong.text
    assert sorted(await env.tables()) == ["fresh", "m"]


@BOTH_STORES
async def test_file_id_source_and_upload_state(env: ImportEnv):
    file_id = await env.file_row(b"x,y\n1,2\n", state="complete")
    task = await env.run(file_id=file_id, table="from_upload")
    assert task["state"] == "succeeded", task
    assert await env.rows("from_upload", cast=True) == [("1", "2")]
    busy = await env.file_row(b"x,y\n1,", state="uploading")
    response = await start(env.client, file_id=busy, table="busy")
    assert response.status_code == 409 and "uploading" in response.json()["detail"], response.text
    foreign = await env.file_row(b"x\n1\n", state="complete", owner="someone_else")
    response = await start(env.client, file_id=foreign, table="foreign")
    assert response.status_code == 404, response.text
    response = await start(env.client, file_id="00000000-0000-0000-0000-000000000000", table="nope")
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"table": "t"}, "exactly one of file_id and path"),
        ({"path": "incoming/a.csv", "file_id": "x", "table": "t"}, "exactly one of file_id and path"),
        ({"path": "/etc/passwd", "table": "t"}, "relative"),
        ({"path": "incoming/../../x.csv", "table": "t"}, ".."),
        ({"path": "files/abc", "table": "t"}, "owners' data"),
        ({"path": "tables/local.sqlite3", "table": "t"}, "owners' data"),
        ({"path": "escape/link.csv", "table": "t"}, "outside"),
        ({"path": "incoming/a.csv", "table": "bad name;drop"}, "table name"),
        ({"path": "incoming/a.csv", "table": "pg_catalog"}, "reserved"),
        ({"path": "incoming/a.csv", "table": "t", "delimiter": '"'}, "must differ"),
        ({"path": "incoming/a.csv", "table": "t", "delimiter": ",,"}, "delimiter"),
        ({"path": "incoming/a.csv", "table": "t", "encoding": "utf-16"}, "ASCII-compatible"),
        ({"path": "incoming/a.csv", "table": "t", "encoding": "klingon"}, "unknown encoding"),
        ({"path": "incoming/a.csv", "table": "t", "mode": "upsert"}, "mode"),
        ({"path": "incoming/a.csv", "table": "t", "columns": [{"name": "a b"}]}, "column name"),
        ({"path": "incoming/a.csv", "table": "t", "surprise": 1}, "surprise"),
        ({"path": "incoming/missing.csv", "table": "t"}, "no file"),
    ],
)
async def test_bad_params_are_clear_4xx(env: ImportEnv, tmp_path, params, fragment):
    env.put("a.csv", b"a\n1\n")
    (tmp_path / "outside.csv").write_text("a\n1\n")
    (env.storage / "escape").mkdir(exist_ok=True)
    link = env.storage / "escape" / "link.csv"
    if not link.exists():
        link.symlink_to(tmp_path / "outside.csv")
    response = await env.client.post("/tasks", json={"kind": "import_csv", "params": params})
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert fragment in response.json()["detail"], response.json()


@BOTH_STORES
@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"", 422, "empty"),
        (b"\n\n", 422, "empty"),
        (bytes(range(256)) * 40, 422, "binary"),
        (b"na\xefme,b\n1,2\n", 422, "line 1: invalid byte sequence"),
    ],
)
async def test_unreadable_files_rejected_at_creation(env: ImportEnv, content, status, fragment):
    source = await env.source("bad.csv", content)
    response = await start(env.client, **source, table="bad")
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


@BOTH_STORES
@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"a,b\n1,2\n3,4,5\n6,7\n", "line 3"),  # ragged: one field too many
        (b"a,b\n1,2\n3\n", "line 3"),  # ragged: too few
        (b'a,b\n1,2\n3,"never closed\n4,5\n', "line 3: unterminated quoted field"),
        (b"a,b\n1,2\n3,caf\xe9\n", "line 3"),  # latin-1 bytes in a utf-8 file
        (b"a,b\n1,2\n" + b"x,9\n" * 3, "line 3"),  # explicit bigint column gets text
    ],
)
async def test_malformed_rows_fail_with_line_and_leave_nothing(env: ImportEnv, content, fragment):
    source = await env.source("bad.csv", content)
    columns = [{"name": "a", "type": "bigint"}, {"name": "b"}] if b"x,9" in content else None
    params = {**source, "table": "bad", "columns": columns}
    task = await env.run(**{k: v for k, v in params.items() if v is not None})
    assert task["state"] == "failed", task
    assert task["attempts"] == 1  # a data error is not retried
    assert fragment in task["error"], task["error"]
    assert await env.tables() == []


@BOTH_STORES
async def test_header_only_makes_an_empty_table(env: ImportEnv):
    source = await env.source("head.csv", b"\xef\xbb\xbfalpha,beta\r\n")
    task = await env.run(**source, table="empty_one")
    assert task["state"] == "succeeded", task
    assert task["result"]["rows"] == 0
    assert [c["name"] for c in task["result"]["columns"]] == ["alpha", "beta"]
    assert await env.rows("empty_one") == []


@BOTH_STORES
async def test_hostile_column_names_are_sanitised(env: ImportEnv):
    header = '"x""; DROP TABLE tasks; --",Name,name,,1st,pg_x,"Prénom",select\n'
    source = await env.source("names.csv", (header + "1,2,3,4,5,6,7,8\n").encode())
    task = await env.run(**source, table="Hostile_Names", infer_types=False)
    assert task["state"] == "succeeded", task
    names = [c["name"] for c in task["result"]["columns"]]
    assert names == ["x_drop_table_tasks", "name", "name_2", "column_4", "c_1st", "c_pg_x", "prenom", "select"]
    assert await env.rows("Hostile_Names") == [("1", "2", "3", "4", "5", "6", "7", "8")]
    response = await env.client.get("/tasks")
    assert response.status_code == 200  # the service's own tables are intact


@BOTH_STORES
async def test_skip_writes_rejects(env: ImportEnv):
    lines = ["id,v"] + [f"{i},{i * 2}" for i in range(1, 201)]
    lines[50] = "50,not a number"
    lines[120] = "120,1,extra"
    lines[199] = "199,2.5"
    source = await env.source("rej.csv", ("\n".join(lines) + "\n").encode())
    columns = [{"name": "id", "type": "bigint"}, {"name": "v", "type": "bigint"}]
    task = await env.run(**source, table="kept", on_error="skip", columns=columns)
    assert task["state"] == "succeeded", task
    result = task["result"]
    assert result["rows"] == 197 and result["rejected"] == 3, result
    ids = [int(r[0]) for r in await env.rows("kept", cast=True)]
    assert len(ids) == 197 and 50 not in ids and 120 not in ids
    download = await env.client.get(f"/files/{result['reject_file_id']}")
    assert download.status_code == 200, download.text
    body = download.text.splitlines()
    assert body[0] == "line,column,error,record"
    assert body[1].startswith("51,v,") and body[1].endswith(',"50,not a number"'), body[1]
    assert body[2].startswith("121,,") and "120,1,extra" in body[2], body[2]
    info = (await env.client.get(f"/files/{result['reject_file_id']}/info")).json()
    assert info["state"] == "complete" and info["origin"] == "rejects"


async def test_kinds_lists_import_schema(env: ImportEnv):
    kinds = (await env.client.get("/tasks/kinds")).json()
    schema = next(k for k in kinds if k["name"] == "import_csv")["params_schema"]
    assert {"file_id", "path", "table", "mode", "on_error", "columns"} <= set(schema["properties"])
    json.dumps(schema)


async def test_write_csv_helper_roundtrip(tmp_path):
    path = write_csv(tmp_path / "g.csv", 10)
    assert path.read_text().count("\n") == 11


@BOTH_STORES
async def test_copy_end_marker_line_is_data(env: ImportEnv):
    source = await env.source("dot.csv", b"v\n1\n\\.\n2\n")
    task = await env.run(**source, table="dots", infer_types=False)
    assert task["state"] == "succeeded", task
    assert await env.rows("dots") == [("1",), ("\\.",), ("2",)]


@BOTH_STORES
async def test_undecodable_record_is_rejected_with_skip(env: ImportEnv):
    source = await env.source("enc.csv", b"k,v\n1,a\n2,caf\xe9\n3,c\n")
    task = await env.run(**source, table="enc", on_error="skip", infer_types=False)
    assert task["state"] == "succeeded", task
    assert (task["result"]["rows"], task["result"]["rejected"]) == (2, 1)
    assert await env.rows("enc") == [("1", "a"), ("3", "c")]
    rejects = (await env.client.get(f"/files/{task['result']['reject_file_id']}")).text.splitlines()
    assert rejects[1].startswith("3,") and "invalid byte sequence" in rejects[1], rejects

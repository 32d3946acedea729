"""Files listing and info: owner scope, filters, cursor pagination, and `get_file` for other modules
(both byte stores)."""

from __future__ import annotations

import pytest

from app.errors import NotFound
from app.services.files.catalog import get_file
from app.services.owners.keys import Principal
from tests.helpers.tus import TUS, key_headers, new_upload, patch, upload

pytestmark = pytest.mark.parametrize("store", ["local", "s3"], indirect=True)


async def test_every_upload_is_a_row_in_the_files_list(client):
    done = await upload(client, b"hello", "a.txt")
    pending = await new_upload(client, 10)
    await patch(client, pending, 0, b"abc")
    items = (await client.get("/files")).json()["items"]
    by_id = {item["id"]: item for item in items}
    assert by_id[done]["state"] == "complete" and by_id[done]["filename"] == "a.txt"
    assert by_id[done]["download_url"].endswith(f"/files/{done}")
    row = by_id[pending.rsplit("/", 1)[1]]
    assert (row["state"], row["offset"], row["length"], row["percent"]) == ("uploading", 3, 10, 30.0)
    assert row["upload_url"].endswith(pending) and row["download_url"] is None
    assert row["origin"] == "upload" and row["owner"] == "local"


async def test_files_list_filters_by_state_and_origin(client):
    done = await upload(client, b"x")
    await new_upload(client, 10)
    complete = (await client.get("/files", params={"state": "complete"})).json()["items"]
    assert [item["id"] for item in complete] == [done]
    assert len((await client.get("/files", params={"state": "uploading"})).json()["items"]) == 1
    assert (await client.get("/files", params={"origin": "export"})).json()["items"] == []
    assert (await client.get("/files", params={"state": "bogus"})).status_code == 422


async def test_files_list_pages_with_a_cursor(client):
    made = [await upload(client, b"x") for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/files", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 5
    assert (await client.get("/files", params={"cursor": "!!"})).status_code == 400


async def test_files_list_and_info_are_owner_scoped(client, app):
    alice, bob = await key_headers(app, "alice"), await key_headers(app, "bob")
    mine = await upload(client, b"a", headers=alice)
    await upload(client, b"b", headers=bob)
    items = (await client.get("/files", headers=alice)).json()["items"]
    assert [item["id"] for item in items] == [mine]
    assert (await client.get(f"/files/{mine}/info", headers=bob)).status_code == 404
    assert (await client.get(f"/files/{mine}/info", headers=alice)).json()["owner"] == "alice"
    admin = await key_headers(app, "root", "admin")
    assert len((await client.get("/files", headers=admin)).json()["items"]) == 2


async def test_deleted_files_leave_the_list_unless_asked_for(client):
    file_id = await upload(client, b"x")
    await client.delete(f"/files/{file_id}", headers=TUS)
    assert (await client.get("/files")).json()["items"] == []
    deleted = (await client.get("/files", params={"state": "deleted"})).json()["items"]
    assert [item["id"] for item in deleted] == [file_id]
    assert (await client.get(f"/files/{file_id}/info")).status_code == 404


async def test_get_file_finds_the_callers_file_and_404s_everything_else(client, app):
    file_id = await upload(client, b"x")
    async with app.state.database.sessionmaker() as session:
        row = await get_file(session, Principal(owner="local"), file_id)
        assert row.id == file_id and row.state == "complete"
        with pytest.raises(NotFound):
            await get_file(session, Principal(owner="someone"), file_id)
        with pytest.raises(NotFound):
            await get_file(session, Principal(owner="local"), "nope")
    await client.delete(f"/files/{file_id}", headers=TUS)
    async with app.state.database.sessionmaker() as session:
        with pytest.raises(NotFound):
            await get_file(session, Principal(owner="local"), file_id)

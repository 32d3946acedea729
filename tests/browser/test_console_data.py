"""The import wizard and export in Chromium, on PostgreSQL: file → the server's preview (sniffed
dialect, inferred types, first rows) → table → task page → rows; then the table exported and its
result file downloaded."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.database import clean_pg
from tests.helpers.server import LiveServer
from tests.helpers.threads import in_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# ;-separated, so the preview must show the sniffed delimiter, not a comma default.
CSV = b"id;name;price;day\n" + b"".join(f"{i};item {i};{i}.5;2026-01-{i % 28 + 1:02d}\n".encode() for i in range(1, 51))
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[LiveServer]:
    in_thread(asyncio.run, clean_pg(pg_url))
    with LiveServer(pg_url, tmp_path_factory.mktemp("browser-data") / "storage") as live:
        yield live


def _upload(http: httpx.Client, name: str, data: bytes) -> str:
    metadata = f"filename {base64.b64encode(name.encode()).decode()}"
    created = http.post("/files", headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": metadata})
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    assert http.patch(location, content=data, headers=headers).status_code == 204
    return location.rstrip("/").rsplit("/", 1)[1]


def test_the_import_wizard_previews_imports_and_the_export_downloads(page, http, problems):
    file_id = _upload(http, "Sales 2026.csv", CSV)
    page.goto(f"/ui/data?file={file_id}")
    preview = page.locator("#preview")
    preview.locator("th", has_text="price").wait_for()
    assert preview.locator("thead th").all_inner_texts() == ["id", "name", "price", "day"]
    assert preview.locator("thead tr.types td").all_inner_texts() == ["bigint", "text", "numeric", "date"]
    assert preview.locator("tbody tr").count() == 10
    assert preview.locator("tbody tr").first.locator("td").all_inner_texts() == ["1", "item 1", "1.5", "2026-01-02"]
    note = page.locator("#preview-note").inner_text()
    assert "Delimiter semicolon (detected)" in note and "from 50 records" in note
    table = page.get_by_label("Table name")
    assert table.input_value() == "sales_2026"  # proposed from the file name
    table.fill("wizard_sales")
    page.get_by_role("button", name="Start the import").click()

    page.wait_for_url(re.compile(r"/ui/tasks/[0-9a-f-]{36}$"))
    page.locator("#task-summary dd.state-succeeded").wait_for(timeout=30_000)
    import_id = page.url.rsplit("/", 1)[1]
    result = http.get(f"/tasks/{import_id}").json()["result"]
    assert result["rows"] == 50 and result["table"] == "wizard_sales"

    page.goto("/ui/data")
    page.get_by_label("Table", exact=True).fill("wizard_sales")
    page.get_by_role("button", name="Start the export").click()
    page.wait_for_url(re.compile(r"/ui/tasks/[0-9a-f-]{36}$"))
    page.locator("#task-summary dd.state-succeeded").wait_for(timeout=30_000)
    link = page.get_by_role("link", name="Download the result")
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    exported = download.value.path().read_bytes()
    assert exported.splitlines()[0] == b"id,name,price,day"
    assert len(exported.splitlines()) == 51
    assert problems.errors == []


def test_preview_problems_are_said_in_words(page, http, problems):
    problems.allowed.append("/previews/csv?")  # Chromium logs each failed fetch; the page explains them
    unreadable = _upload(http, "latin1.csv", b"id,name\n1,caf\xe9\n")
    page.goto(f"/ui/data?file={unreadable}")
    alert = page.locator("#preview-errors")
    alert.get_by_text("cannot be read as CSV").wait_for()
    assert page.locator("#preview thead th").count() == 0

    gone = _upload(http, "gone.csv", CSV)
    page.goto(f"/ui/data?file={gone}")
    page.locator("#preview th", has_text="price").wait_for()
    assert http.delete(f"/files/{gone}", headers=TUS).status_code == 204
    page.get_by_label("Delimiter").select_option(";")  # asks again, for a file now deleted
    alert.get_by_text("no longer exists").wait_for()
    assert page.locator("#preview tbody tr").count() == 0
    assert ["status of 422" in problems.errors[0], "status of 404" in problems.errors[1]] == [True, True]
    assert len(problems.errors) == 2  # only the two failed previews, nothing else

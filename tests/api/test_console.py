"""The console's shells and assets are served by the service itself, outside the API spec."""

from __future__ import annotations

import hashlib
import re

import pytest

from app.console import STATIC_DIR
from tests.helpers.apps import open_app

PAGES = ["/", "/ui/tasks", "/ui/tasks/0b6c1f0e-0000-4000-8000-000000000000", "/ui/start", "/ui/files", "/ui/data"]


@pytest.fixture
async def client(settings):
    async with open_app(settings, auth_required=True) as (_app, client):
        yield client


@pytest.mark.parametrize("page", PAGES)
async def test_pages_are_served_without_a_key_and_load_only_local_assets(client, page):
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for url in re.findall(r'(?:src|href)="([^"]+)"', response.text):
        assert url.startswith(("/", "#")) and not url.startswith("//"), url
        if url.startswith("/ui/static/"):
            assert (await client.get(url)).status_code == 200, url


async def test_every_control_has_a_label(client):
    for page in PAGES:
        html = (await client.get(page)).text
        for control_id in re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html):
            assert f'for="{control_id}"' in html, (page, control_id)


async def test_console_routes_stay_out_of_the_api_spec(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]


async def test_ui_redirects_to_the_tasks_list(client):
    response = await client.get("/ui")
    assert response.status_code == 307 and response.headers["location"] == "/"


def test_vendored_tus_client_matches_its_noted_checksum():
    vendor = STATIC_DIR / "vendor"
    notes = (vendor / "README.md").read_text()
    assert "4.3.1" in notes and (vendor / "tus-js-client.LICENSE").is_file()
    digest = hashlib.sha256((vendor / "tus.min.js").read_bytes()).hexdigest()
    assert f"{digest}  tus.min.js" in notes

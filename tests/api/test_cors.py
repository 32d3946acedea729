"""CORS: a page on a listed origin may drive every tus method; unlisted origins get no CORS headers.

A preflight (OPTIONS + Origin + Access-Control-Request-Method) is answered by CORS; a plain
OPTIONS is still the tus server's own description.
"""

from __future__ import annotations

import pytest

from tests.helpers.apps import open_app

ORIGIN = "http://console.example:8080"
TUS = {"Tus-Resumable": "1.0.0"}
TUS_REQUEST_HEADERS = "authorization, tus-resumable, upload-length, upload-offset, upload-metadata, content-type"


def _preflight(method: str, headers: str = TUS_REQUEST_HEADERS, origin: str = ORIGIN) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


def _exposed(response) -> set[str]:
    return {h.strip().lower() for h in response.headers.get("access-control-expose-headers", "").split(",")}


@pytest.fixture
def cors_settings(settings):
    return settings.model_copy(update={"cors_origins": [ORIGIN, "http://other.example"]})


async def _create_upload(client, length: int = 5) -> str:
    response = await client.post("/files", headers={**TUS, "Upload-Length": str(length), "Origin": ORIGIN})
    assert response.status_code == 201, response.text
    return response.headers["location"]


@pytest.mark.parametrize(("method", "path"), [("POST", "/files"), ("PATCH", "/files/x"), ("HEAD", "/files/x")])
async def test_preflight_is_answered_for_every_tus_method(cors_settings, method, path):
    async with open_app(cors_settings) as (_app, client):
        for method_, path_ in [(method, path), ("DELETE", "/files/x"), ("GET", "/files/x")]:
            response = await client.options(path_, headers=_preflight(method_))
            assert response.status_code == 200, (method_, path_, response.text)
            assert response.headers["access-control-allow-origin"] == ORIGIN
            assert method_ in response.headers["access-control-allow-methods"]
            allowed = response.headers["access-control-allow-headers"].lower()
            for header in TUS_REQUEST_HEADERS.split(", "):
                assert header in allowed, header
            assert "tus-version" not in response.headers  # CORS answered, not the tus router


async def test_preflight_allows_the_console_and_override_headers(cors_settings):
    headers = "x-http-method-override, upload-checksum, upload-defer-length, range, if-range, last-event-id"
    async with open_app(cors_settings) as (_app, client):
        response = await client.options("/files/abc", headers=_preflight("POST", headers))
        assert response.status_code == 200, response.text
        response = await client.options("/tasks/abc/events", headers=_preflight("GET", "authorization, last-event-id"))
        assert response.status_code == 200, response.text


async def test_plain_options_is_still_tus_discovery(cors_settings):
    async with open_app(cors_settings) as (_app, client):
        response = await client.options("/files", headers={"Origin": ORIGIN})
        assert response.status_code == 204
        assert response.headers["tus-version"] == "1.0.0"
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "tus-max-size" in _exposed(response)


async def test_real_responses_expose_the_tus_and_range_headers(cors_settings):
    async with open_app(cors_settings) as (_app, client):
        location = await _create_upload(client)
        created = await client.post("/files", headers={**TUS, "Upload-Length": "5", "Origin": ORIGIN})
        assert created.headers["access-control-allow-origin"] == ORIGIN
        assert {"location", "upload-offset", "tus-resumable", "upload-expires"} <= _exposed(created)
        patch = await client.patch(
            location,
            content=b"hello",
            headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream", "Origin": ORIGIN},
        )
        assert patch.status_code == 204, patch.text
        assert patch.headers["access-control-allow-origin"] == ORIGIN
        head = await client.head(location, headers={**TUS, "Origin": ORIGIN})
        assert {"upload-offset", "upload-length"} <= _exposed(head)
        download = await client.get(location, headers={"Origin": ORIGIN, "Range": "bytes=1-2"})
        assert download.status_code == 206
        assert download.content == b"el"
        assert {"etag", "content-range", "content-length", "accept-ranges"} <= _exposed(download)
        deleted = await client.delete(location, headers={**TUS, "Origin": ORIGIN})
        assert deleted.status_code == 204, deleted.text
        assert deleted.headers["access-control-allow-origin"] == ORIGIN


async def test_errors_carry_cors_headers_too(cors_settings):
    async with open_app(cors_settings) as (_app, client):
        response = await client.get("/tasks/not-a-task", headers={"Origin": ORIGIN})
        assert response.status_code in (404, 422)
        assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_no_cors_headers_by_default(settings):
    async with open_app(settings) as (_app, client):
        assert settings.cors_origins == []
        response = await client.options("/files", headers=_preflight("POST"))
        assert response.headers["tus-version"] == "1.0.0"  # no CORS: the tus router answers
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]
        response = await client.get("/tasks", headers={"Origin": ORIGIN})
        assert "access-control-allow-origin" not in response.headers


async def test_an_unlisted_origin_gets_no_cors_headers(cors_settings):
    async with open_app(cors_settings) as (_app, client):
        preflight = await client.options("/files", headers=_preflight("POST", origin="http://evil.example"))
        assert "access-control-allow-origin" not in preflight.headers
        response = await client.get("/tasks", headers={"Origin": "http://evil.example"})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


def test_the_setting_reads_a_comma_list(monkeypatch):
    from app.config import Settings

    monkeypatch.setenv("TSM_CORS_ORIGINS", " https://a.example , https://b.example,")
    assert Settings(_env_file=None).cors_origins == ["https://a.example", "https://b.example"]  # type: ignore[call-arg]
    monkeypatch.setenv("TSM_CORS_ORIGINS", "")
    assert Settings(_env_file=None).cors_origins == []  # type: ignore[call-arg]

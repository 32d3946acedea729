"""/docs and /redoc work on a closed network: every script, stylesheet and icon they load is ours."""

from __future__ import annotations

import re

import pytest

from tests.helpers.apps import open_app

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|spec-url=["']([^"']+)["']""")
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


def _referenced_urls(html: str) -> list[str]:
    return [next(group for group in match.groups() if group) for match in ASSET.finditer(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(settings, page):
    async with open_app(settings) as (_app, client):
        response = await client.get(page)
        assert response.status_code == 200
        urls = _referenced_urls(response.text)
        assert any(url.endswith(".js") for url in urls), urls
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
            asset = await client.get(url)
            assert asset.status_code == 200, url
            expected = next((kind for ext, kind in CONTENT_TYPES.items() if url.endswith(ext)), "")
            assert expected in asset.headers["content-type"], (url, asset.headers["content-type"])


async def test_no_cdn_is_named_anywhere_in_the_pages(settings):
    async with open_app(settings) as (_app, client):
        for page in ("/docs", "/redoc"):
            html = (await client.get(page)).text
            assert "cdn.jsdelivr" not in html and "fonts.googleapis" not in html, page

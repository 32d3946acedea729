"""A live server as the client tests see it: clients bound to it, the bytes it stored, random files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clients import AsyncClient, Client
from tests.helpers.server import LiveServer


class Live:
    def __init__(self, server: LiveServer, root: Path) -> None:
        self.server, self.url, self.root = server, server.url, root

    def client(self, **kwargs: Any) -> Client:
        return Client(self.url, cache_dir=self.root / "cache", **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        return AsyncClient(self.url, cache_dir=self.root / "cache", **kwargs)

    def stored(self, file_id: str) -> bytes:
        """The bytes the server holds for a file (its storage is by id)."""
        return (self.root / "storage" / "files" / file_id).read_bytes()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path

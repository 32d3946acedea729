"""Which ByteStore ``TSM_STORAGE_URL`` names: the local directory (empty) or S3 (s3://bucket/prefix).

The S3 client (aiobotocore, the ``s3`` extra) is imported only when the setting asks for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from app.config import Settings
from app.services.files.store import ByteStore, LocalStore


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[ByteStore]:
    """The store ``TSM_STORAGE_URL`` names, open for as long as the app runs."""
    if not settings.storage_url:
        yield LocalStore(settings)
        return
    try:
        from app.services.files.s3store import open_s3_store
    except ImportError as exc:  # the extra is not installed
        raise RuntimeError(
            f"TSM_STORAGE_URL={settings.storage_url} needs the S3 client: pip install 'task-state-manager[s3]'"
        ) from exc

    async with open_s3_store(settings) as store:
        yield store

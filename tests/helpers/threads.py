"""Running blocking helpers beside an event loop that owns the current thread (Playwright's)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any


def in_thread(function: Any, *args: Any) -> Any:
    """Run ``function`` (e.g. one that calls asyncio.run) in a thread of its own and wait for it."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()

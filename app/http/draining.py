"""Draining: open event streams end when the process is asked to stop, so it can stop.

    SIGTERM / SIGINT ──▶ our handler ──▶ Draining.event set ──▶ every stream says so and closes
                    └──▶ the server's own handler (uvicorn's: stop accepting, wait for responses)

uvicorn waits for every response to finish before the app's shutdown begins, and an event
stream never finishes by itself: without this a stop waits out the whole graceful timeout,
then cuts the streams. The lifespan's end sets the event too (an app run without signals).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Draining:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._chained: dict[int, tuple[Any, Any]] = {}  # signal -> (our handler, the one before)

    def install(self) -> None:
        """Chain onto the server's signal handlers (only a server's: a default action stays)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            before = signal.getsignal(sig)
            if not callable(before):
                continue

            def handler(signum: int, frame: FrameType | None, before: Any = before) -> None:
                loop.call_soon_threadsafe(self.event.set)  # a handler may not touch the loop directly
                before(signum, frame)

            signal.signal(sig, handler)
            self._chained[sig] = (handler, before)

    def uninstall(self) -> None:
        for sig, (handler, before) in self._chained.items():
            if signal.getsignal(sig) is handler:  # nobody replaced ours since: put theirs back
                signal.signal(sig, before)
        self._chained.clear()

    def set(self) -> None:
        self.event.set()


async def until_draining(lines: AsyncIterator[str], draining: asyncio.Event, farewell: str) -> AsyncIterator[str]:
    """``lines`` until they end or ``draining`` is set; then ``farewell`` and the end."""
    stop = asyncio.ensure_future(draining.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(lines))
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
                yield farewell
                return
            try:
                line = step.result()
            except StopAsyncIteration:
                return
            yield line
    finally:
        stop.cancel()
        await asyncio.gather(stop, return_exceptions=True)
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()

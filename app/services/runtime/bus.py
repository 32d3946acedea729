"""Wake-ups between the parts of the service, inside a process and across replicas.

Nothing here carries truth — the database rows do. A publish only tells a waiter to look
again sooner than its next poll. On PostgreSQL, ``notify()`` inside a transaction is
delivered (by LISTEN/NOTIFY) to every replica when it commits, and :class:`PgListener`
turns those messages back into local wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

logger = logging.getLogger("tsm.bus")

CHANNEL = "tsm_events"


class Changes:
    """The keys published since the last :meth:`take`, and an event that is set while there are some."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.pending = asyncio.Event()

    def add(self, key: str) -> None:
        self.keys.add(key)
        self.pending.set()

    def take(self) -> set[str]:
        keys, self.keys = self.keys, set()
        self.pending.clear()
        return keys


class EventBus:
    """Per-key broadcast of "something changed" to any number of local waiters, and to
    watchers of every key (the task list's one stream), who learn which keys changed."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._watchers: set[Changes] = set()

    def publish(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()
        for changes in self._watchers:
            changes.add(key)

    @contextlib.contextmanager
    def watch_all(self) -> Iterator[Changes]:
        changes = Changes()
        self._watchers.add(changes)
        try:
            yield changes
        finally:
            self._watchers.discard(changes)

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[key].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]


async def notify(conn: AsyncConnection | AsyncSession, payload: str) -> None:
    """Queue a cross-replica wake-up, sent when the surrounding transaction commits."""
    dialect = conn.get_bind().dialect if isinstance(conn, AsyncSession) else conn.dialect
    if dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


class PgListener:
    """Holds one asyncpg connection LISTENing on the channel; reconnects if it drops."""

    def __init__(self, dsn: str, handler: Callable[[str], None]) -> None:
        self.dsn = dsn
        self.handler = handler
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tsm-pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_message(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            self.handler(str(payload))
        except Exception:
            logger.exception("bad notification %r", payload)

    async def _run(self) -> None:
        import asyncpg

        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn)
                await conn.add_listener(CHANNEL, self._on_message)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, closed=closed: closed.set())
                await closed.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("LISTEN connection failed (%s); polling covers the gap", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(2)


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain libpq DSN asyncpg wants, from a ``postgresql+asyncpg://`` URL."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)

"""Parallel COPY on PostgreSQL: one reader cuts record-aligned batches, N connections load them.

    reader (a thread) ─▶ queue (N deep) ─▶ stream 1 … stream N, each batch in one transaction:
                                               COPY staging FROM STDIN    ← N at once, N server cores
                                               ── commit turn ──          ← one at a time, a few ms
                                               UPDATE tasks SET checkpoint = ledger + this range
                                           COMMIT

The checkpoint is a **ledger**: ``offset`` and ``line`` say where the unbroken run of loaded
records ends, ``loaded`` lists the ranges committed beyond it (``[start, end, lines]``) and
``rows`` counts every committed row. Commits take turns, so each writes the ledger as
committed so far plus its own range: a batch that rolls back (pause, crash, error) leaves no
trace, and a batch that commits is never dropped by a later write. A resume reads from
``offset`` and steps over the listed ranges: it loads exactly the missing ones (its batches
may be cut differently; a range is only ever recorded with the records it holds).

A pause cancels every running COPY (each batch rolls back and is redone later) and the task
settles as soon as a commit in flight has ended, not after the rollbacks: a later commit
cannot happen (a stream that gets its turn after the stop rolls back instead), so the ledger
and the progress the settle writes agree. The first error stops the other streams the same
way and is the one raised. Used for ``on_error=abort`` imports only: a
reject file is written in record order, which one stream keeps by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.metrics import ROWS_IMPORTED
from app.services.csv_import.errors import ImportFailed
from app.services.csv_import.loader import ImportCheckpoint
from app.services.csv_import.source import Batch, BatchReader, RecordError
from app.services.runtime.context import LeaseLost, TaskInterrupt

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from app.services.csv_import.loader_pg import PgLoader
    from app.services.runtime.context import TaskContext

# Streams of stopped loads still rolling back (referenced, so that they run to their end)
_WINDING_DOWN: set[asyncio.Future[None]] = set()


def loaded_bytes(state: ImportCheckpoint) -> int:
    """Bytes of the source loaded so far: the unbroken run plus the ranges beyond it."""
    return state["offset"] + sum(end - start for start, end, _ in state.get("loaded", []))


def record_range(state: ImportCheckpoint, start: int, end: int, lines: int, rows: int) -> None:
    """Enter a committed batch in the ledger; ranges that now join the unbroken run merge in."""
    loaded = sorted([*state.get("loaded", []), [start, end, lines]])
    while loaded and loaded[0][0] == state["offset"]:
        _, state["offset"], lines_done = loaded.pop(0)
        state["line"] += lines_done
    state["loaded"] = loaded
    state["rows"] += rows


def with_range(state: ImportCheckpoint, start: int, end: int, lines: int, rows: int) -> ImportCheckpoint:
    """A copy of ``state`` with one more committed range (``state`` itself unchanged)."""
    merged: ImportCheckpoint = {**state, "loaded": [list(r) for r in state.get("loaded", [])]}
    record_range(merged, start, end, lines, rows)
    return merged


class ParallelLoad:
    """One parallel load of the ranges a checkpoint does not list yet."""

    def __init__(
        self,
        ctx: TaskContext,
        loader: PgLoader,
        reader: BatchReader,
        state: ImportCheckpoint,
        streams: int,
        tick: Callable[[ImportCheckpoint], None],
        sizes: tuple[int, int, int],
    ) -> None:
        self.ctx, self.loader, self.reader, self.state = ctx, loader, reader, state
        self.streams, self.tick = streams, tick
        self.size, self.least, self.most = sizes  # the next batch's bytes, adapted to batch_seconds
        self.queue: asyncio.Queue[tuple[Batch, int] | None] = asyncio.Queue(maxsize=streams)
        self.turn = asyncio.Lock()  # commits take turns: each writes the ledger as committed
        self.first_error: BaseException | None = None
        self.reading: asyncio.Future[Batch | None] | None = None

    async def run(self) -> None:
        self.loader.halt.clear()  # a load after a widened column starts afresh
        producer = asyncio.ensure_future(self._guarded(self.produce()))
        streams = [asyncio.ensure_future(self._guarded(self.stream())) for _ in range(self.streams)]
        loading = asyncio.gather(*streams)
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.ctx.stop_event.wait())
        try:
            await asyncio.wait([loading, stop], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            for part in (producer, *streams):
                part.cancel()
            raise
        finally:
            stop.cancel()
        if not loading.done():
            # A pause, cancel or shutdown: the COPYs are being cancelled now, and their rollbacks
            # need not hold up the answer. A batch still committing is fenced by the lease and
            # committed with its ledger entry, or not at all, whenever it ends.
            self._halt()
            async with self.turn:  # a commit in flight ends first: no progress is written after ours
                pass
            winding_down = asyncio.ensure_future(self._wind_down(producer, loading))
            _WINDING_DOWN.add(winding_down)
            winding_down.add_done_callback(_WINDING_DOWN.discard)
            raise TaskInterrupt
        await self._wind_down(producer, loading)
        if self.first_error is not None:
            raise self.first_error

    async def _wind_down(self, producer: asyncio.Future[None], loading: asyncio.Future[Any]) -> None:
        producer.cancel()
        await asyncio.gather(producer, loading, return_exceptions=True)
        self._close_reader()

    async def _guarded(self, work: Any) -> None:
        """Run one part; the first failure (a pause's TaskInterrupt too) stops all the others."""
        try:
            await work
        except asyncio.CancelledError:
            if self.first_error is None:
                raise
        except BaseException as exc:  # kept, and raised by run() once all parts stopped
            if self.first_error is None:
                self.first_error = exc
                self._halt()

    def _halt(self) -> None:
        self.loader.halt.set()
        while not self.queue.empty():
            self.queue.get_nowait()
        for _ in range(self.streams):
            self.queue.put_nowait(None)

    # -- reading ------------------------------------------------------------------------
    async def produce(self) -> None:
        """Batches in file order from ``offset``, stepping over the ledger's ranges."""
        state = self.state
        position, line = state["offset"], state["line"]
        skips = sorted(state.get("loaded", []))
        while True:
            while skips and skips[0][0] == position:
                _, position, lines = skips.pop(0)
                line += lines
            stop = skips[0][0] if skips else self.reader.end
            self.reading = asyncio.ensure_future(asyncio.to_thread(self.reader.read, position, self.size, stop))
            try:
                batch = await self.reading
            except RecordError as exc:
                raise ImportFailed(f"line {line + exc.lines}: {exc.message}") from None
            if batch is None:
                break
            await self.queue.put((batch, line))
            position, line = batch.end, line + batch.lines
        for _ in range(self.streams):
            await self.queue.put(None)

    def _close_reader(self) -> None:
        """Close the reader once no thread reads it (a pause does not wait for a read)."""
        reading = self.reading
        if reading is None or reading.done():
            self.reader.close()
            return

        def finish(read: asyncio.Future[Batch | None]) -> None:
            if not read.cancelled():
                read.exception()  # retrieved: an error of a read nobody needs is not news
            self.reader.close()

        reading.add_done_callback(finish)

    # -- loading ------------------------------------------------------------------------
    async def stream(self) -> None:
        while (item := await self.queue.get()) is not None and self.first_error is None:
            await self.load(*item)

    async def load(self, batch: Batch, line: int) -> None:
        """COPY one batch in its own transaction and commit it with the ledger, in turn."""
        state, loader = self.state, self.loader
        committed: dict[str, Any] = {}  # filled in the transaction: the ledger this commit writes
        rows, began, holding = 0, time.perf_counter(), False

        async def copy(conn: AsyncConnection) -> None:
            nonlocal rows, holding
            rows, used, lines = await loader.copy_batch(
                conn, batch, line, state["columns"], None, state.get("inferred")
            )
            self._adapt(used, time.perf_counter() - began)
            await self.turn.acquire()
            holding = True
            if loader.halt.is_set():
                raise TaskInterrupt  # stopped meanwhile: this batch rolls back, to be redone
            merged = with_range(state, batch.offset, batch.offset + used, lines, rows)
            self.tick(merged)
            committed.update(merged)

        try:
            await self.ctx.checkpoint(committed, work=copy)
        except LeaseLost:
            raise
        except TaskInterrupt:
            if committed:  # the commit went through; the interrupt came after it
                self._committed(committed, rows)
            raise
        else:
            self._committed(committed, rows)
        finally:
            if holding:
                self.turn.release()

    def _committed(self, committed: dict[str, Any], rows: int) -> None:
        self.state.update(committed)  # type: ignore[typeddict-item]
        ROWS_IMPORTED.inc(rows)

    def _adapt(self, used: int, seconds: float) -> None:
        if seconds > 0:
            rate = used / seconds
            self.size = int(max(self.least, min(self.most, rate * self.loader.batch_seconds)))

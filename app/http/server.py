"""The HTTP server protocol: uvicorn's httptools protocol, with request bodies in larger
messages and fewer copies, plus ASGI zero-copy send for downloads.

    request body:  httptools chunks ──▶ kept as they are (uvicorn appends them to a bytearray,
                   then copies that into a bytes: two copies) ──▶ one ``http.request`` message
                   of up to BODY_WATER (uvicorn: 64 KiB), joined only when several wait

    download:      app ──http.response.zerocopysend {file, offset, count}──▶ os.sendfile
                   (page cache → socket, no copy through Python)

uvicorn does not implement the ASGI "Zero Copy Send" extension, so a download would read
every block into a ``bytes`` and write it out again (two copies and a thread hop per MiB). This
protocol announces the extension on plain-TCP connections (never on TLS: sendfile would skip
the encryption) and serves it with ``os.sendfile`` on a duplicate of the socket's descriptor:

    * only once the transport has flushed what it buffered (the headers), so bytes stay in order;
    * in a worker thread (a cold file's page-cache misses must not stall the event loop), which
      keeps the socket full while the client keeps up; once the client has not read for
      PATIENCE_MS the thread returns and the event loop waits until the socket is writable;
    * a client that went away ends the body (as a write to a closed transport would).

Anything else (HEAD, chunked framing) goes through uvicorn's own ``send`` untouched. The
subclass leans on uvicorn's cycle fields (pyproject pins uvicorn to the 0.55 series); the live tests run
every upload and download through it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
from typing import Any, BinaryIO

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

ZEROCOPY = "http.response.zerocopysend"
GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)
BODY_WATER = 1 << 20  # a request body gathers up to this much before reading pauses (uvicorn: 64 KiB)
PATIENCE_MS = 50  # a socket full this long: the client is slow, the event loop waits for it


class ZeroCopyProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its request cycles being :class:`_Cycle`."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.scheme == "http":
            self.scope["extensions"] = {**self.scope.get("extensions", {}), ZEROCOPY: {}}

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:  # a new request (not an upgrade)
            cycle = self.cycle
            cycle.__class__ = _Cycle  # same layout plus two fields; its task has not run yet
            assert isinstance(cycle, _Cycle)
            cycle.chunks, cycle.gathered = [], 0

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _Cycle):
            return super().on_body(body)
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return None
        cycle.chunks.append(body)  # kept as received: no growing buffer to copy into and out of
        cycle.gathered += len(body)
        if cycle.gathered > BODY_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()
        return None


class _Cycle(RequestResponseCycle):
    """A request cycle whose body messages are the received chunks themselves (joined only when
    several wait), up to BODY_WATER each, and that serves ``http.response.zerocopysend``."""

    chunks: list[bytes]
    gathered: int

    async def receive(self) -> Any:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        chunks, self.chunks, self.gathered = self.chunks, [], 0
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Any) -> None:
        if message["type"] != ZEROCOPY:
            return await super().send(message)
        framed = self.response_started and not self.response_complete and self.chunked_encoding is False
        file: BinaryIO = message["file"]
        offset, count, more_body = message.get("offset", 0), message["count"], message.get("more_body", False)
        if self.disconnected or not framed or self.scope["method"] == "HEAD" or count > self.expected_content_length:
            # Not a Content-Length body this can fill (or nobody listens): uvicorn decides, as for any body.
            body = b"" if self.disconnected else await asyncio.to_thread(os.pread, file.fileno(), count, offset)
            return await super().send({"type": "http.response.body", "body": body, "more_body": more_body})
        sent = await _sendfile(self, file.fileno(), offset, count)
        self.expected_content_length -= sent
        if sent < count:  # the client left, or the file is shorter than promised: the body ends here
            self.transport.close()
            self.disconnected = True
            return None
        return await super().send({"type": "http.response.body", "body": b"", "more_body": more_body})


async def _sendfile(cycle: RequestResponseCycle, file_fd: int, offset: int, count: int) -> int:
    """Send ``count`` bytes of ``file_fd`` from ``offset``; returns how many went out."""
    loop = asyncio.get_running_loop()
    out = os.dup(cycle.transport.get_extra_info("socket").fileno())
    pump = _Pump(out, file_fd, offset, count)
    running: asyncio.Future[None] | None = None
    try:
        while cycle.transport.get_write_buffer_size() > 0:  # the head first: let the transport flush it
            await _writable(loop, out)
            await asyncio.sleep(0)
        while not pump.finished:
            running = loop.run_in_executor(None, pump.run)
            await asyncio.shield(running)  # cancelled or not, the thread owns ``out`` until it returns
            if not pump.finished:
                await _writable(loop, out)
    finally:
        pump.stop = True
        if running is not None and not running.done():
            running.add_done_callback(lambda _done: os.close(out))
        else:
            os.close(out)
    return pump.sent


class _Pump:
    """sendfile in a worker thread while the client keeps up; a client that stops reading for
    PATIENCE_MS hands the wait back to the event loop (no thread sits on a slow client)."""

    def __init__(self, out: int, file_fd: int, offset: int, count: int) -> None:
        self.out, self.file_fd, self.offset, self.count = out, file_fd, offset, count
        self.sent = 0
        self.ended = False  # the client left, or the file ended early
        self.stop = False  # the request was cancelled: send nothing more

    @property
    def finished(self) -> bool:
        return self.ended or self.stop or self.sent >= self.count

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.out, select.POLLOUT)
        while not self.finished:
            try:
                done = os.sendfile(self.out, self.file_fd, self.offset + self.sent, self.count - self.sent)
            except BlockingIOError:
                if not poller.poll(PATIENCE_MS):
                    return
                continue
            except OSError as exc:
                if exc.errno not in GONE:
                    raise
                done = 0
            self.ended = done == 0
            self.sent += done


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until ``fd`` (a duplicate: the transport owns the original's registration) can take bytes."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)

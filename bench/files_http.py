"""A minimal blocking HTTP/1.1 client for the files benchmark: one keep-alive socket,
request bodies sent with ``socket.sendfile``, response bodies read into one reused buffer.

It does as little as a client can, so that the servers, not the client, are measured.
"""

from __future__ import annotations

import socket
from typing import BinaryIO

READ = 4 << 20


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(READ)
        self.view = memoryview(self.buffer)
        self.pending = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _send_head(self, method: str, path: str, headers: dict[str, str], length: int | None) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _read_head(self) -> tuple[int, dict[str, str]]:
        data = self.pending
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        head, _, self.pending = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _drain(self, length: int) -> int:
        received = min(len(self.pending), length)
        self.pending = self.pending[received:]
        while received < length:
            got = self.sock.recv_into(self.view, min(READ, length - received))
            if not got:
                raise ConnectionError("body cut short")
            received += got
        return received

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: tuple[BinaryIO, int, int] | None = None,
    ) -> tuple[int, dict[str, str]]:
        """Send a request (body = (file, offset, count), sent with sendfile); read a small answer."""
        self._send_head(method, path, headers, body[2] if body else (0 if method in ("POST", "PATCH") else None))
        if body is not None:
            source, offset, count = body
            self.sock.sendfile(source, offset, count)
        status, response_headers = self._read_head()
        if method != "HEAD":
            if response_headers.get("transfer-encoding", "").lower() == "chunked":
                self._drain_chunked()
            else:
                self._drain(int(response_headers.get("content-length", "0")))
        return status, response_headers

    def _line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def _drain_chunked(self) -> None:
        while (size := int(self._line().split(b";")[0], 16)) > 0:
            self._drain(size)
            self._line()
        while self._line():  # trailers, then the empty line
            pass

    def request_drain(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], int]:
        """A GET whose (Content-Length delimited) body is read and dropped; returns its size."""
        self._send_head(method, path, headers, None)
        status, response_headers = self._read_head()
        return status, response_headers, self._drain(int(response_headers["content-length"]))

    def get_json(self, path: str) -> object:
        """A small GET whose JSON body is returned."""
        import json

        self._send_head("GET", path, {}, None)
        _status, headers = self._read_head()
        length = int(headers.get("content-length", "0"))
        while len(self.pending) < length:
            self.pending += self.sock.recv(65536)
        body, self.pending = self.pending[:length], self.pending[length:]
        return json.loads(body)

"""Download resume with the real tools people use: ``curl -C -`` and ``wget -c`` (real uvicorn)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers.server import LiveServer
from tests.helpers.tus import OCTET, TUS

DATA = os.urandom(2 * 1024 * 1024 + 321)


def _upload(server: LiveServer) -> str:
    created = httpx.post(
        f"{server.url}/files", headers={**TUS, "Upload-Length": str(len(DATA)), "Upload-Metadata": "filename ZC5iaW4="}
    )
    url = created.headers["location"]
    response = httpx.patch(url, headers={**OCTET, "Upload-Offset": "0"}, content=DATA)
    assert response.status_code == 204, response.text
    return url


def test_curl_continue_at_and_wget_continue_resume_a_cut_download(db_url, tmp_path):
    curl, wget = shutil.which("curl"), shutil.which("wget")
    if curl is None or wget is None:
        pytest.skip("curl and wget are needed (apt-get install -y curl wget)")
    with LiveServer(db_url, tmp_path / "storage") as server:
        url = _upload(server)
        cut = 700_001

        # curl: a first transfer that stopped after `cut` bytes, then `curl -C -` carries on.
        partial = tmp_path / "curl.bin"
        subprocess.run([curl, "-sS", "-f", "-r", f"0-{cut - 1}", "-o", str(partial), url], check=True, timeout=60)
        assert partial.stat().st_size == cut
        done = subprocess.run(
            [curl, "-sS", "-f", "-C", "-", "-o", str(partial), "-w", "%{http_code}", url],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout == "206"  # it really resumed rather than starting again
        assert partial.read_bytes() == DATA

        # wget: the same interrupted file, resumed with -c.
        partial = tmp_path / "wget.bin"
        partial.write_bytes(DATA[:cut])
        log = subprocess.run([wget, "-c", "-S", "-O", str(partial), url], capture_output=True, text=True, timeout=60)
        assert log.returncode == 0, log.stderr
        assert "206 Partial Content" in log.stderr or "HTTP/1.1 206" in log.stderr
        assert partial.read_bytes() == DATA

        # A reader that hangs up mid-body costs the server nothing lasting.
        path = urlsplit(url).path
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert httpx.get(url, headers={"Range": "bytes=-10"}).content == DATA[-10:]
        assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_bodies_sent_straight_from_the_file_are_exact_on_one_keep_alive_connection(db_url, tmp_path):
    """The real server sends file bytes with sendfile (app/http/server.py): whole, ranged and
    multipart bodies stay exact, and the connection stays usable for the next request."""
    with LiveServer(db_url, tmp_path / "storage") as server:
        url = _upload(server)
        with httpx.Client() as client:
            assert client.get(url).content == DATA
            parts = client.get(url, headers={"Range": "bytes=0-9,1000000-1000009,-5"})
            assert parts.status_code == 206
            assert parts.headers["content-type"].startswith("multipart/byteranges")
            assert len(parts.content) == int(parts.headers["content-length"])
            for piece in (DATA[:10], DATA[1000000:1000010], DATA[-5:]):
                assert piece in parts.content
            assert client.get(url, headers={"Range": "bytes=5-"}).content == DATA[5:]

        # A reader that stops for a while (its socket full) still gets every byte, in order.
        path = urlsplit(url).path
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            received = bytearray()
            first = True
            while chunk := sock.recv(65536):
                received += chunk
                if first:
                    first = False
                    time.sleep(0.3)  # a slow client, not synchronisation: the server must wait for it
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert body == DATA

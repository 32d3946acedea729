"""What every operation shares: the server, retry settings, the resume store, and the one request
helper every operation goes through (retries, errors)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import httpx

from clients._core import Op, Send, Sleep
from clients.errors import ConnectionFailed, ProtocolError, raise_for_status
from clients.models import Progress
from clients.store import ResumeStore

DEFAULT_SERVER = "http://127.0.0.1:8000"
USER_AGENT = "tsm-client/0.1"
CONNECT_TIMEOUT = 3.0  # seconds: a server that is down is reported at once, not after a long silence
RETRY_STATUSES = frozenset({423, 429, 500, 502, 503, 504})
T = TypeVar("T")

# One unit per callback: a transfer reports bytes, a wait reports the task's own progress.
ByteProgress = Callable[[int, int | None], None]  # (bytes done, bytes in all or None when unknown)
TaskProgress = Callable[[Progress], None]  # done / total in the task's ``unit`` ("rows", "bytes" …)


def normalize_server(url: str) -> str:
    """``127.0.0.1:8000`` → ``http://127.0.0.1:8000``; a trailing slash goes."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def describe(exc: BaseException) -> str:
    """A short reason for a transport failure ("connection refused", "timed out")."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc) or type(exc).__name__
    for needle, short in (("refused", "connection refused"), ("Name or service", "unknown host")):
        if needle in text:
            return short
    return text


class Settings(TypedDict, total=False):
    """The keyword settings of :class:`Client` and :class:`AsyncClient` (see :class:`Core`)."""

    timeout: float
    retries: int
    backoff: float
    max_backoff: float
    chunk_size: int
    cache_dir: str | Path | None


class Core:
    """The settings every operation reads, and its request helpers (the operations are its subclasses).

    ``server`` and ``token`` default to the ``TSM_SERVER`` and ``TSM_TOKEN`` environment variables.
    ``timeout``: seconds per network operation. ``retries``/``backoff``: how often and how
    patiently idempotent requests and transfers retry (exponential backoff with jitter, capped at
    ``max_backoff`` seconds). ``chunk_size``: bytes per upload request. ``cache_dir``: where the
    resume store lives (default: the user's cache folder).
    """

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        chunk_size: int = 8 * 1024 * 1024,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.server = normalize_server(server or os.environ.get("TSM_SERVER") or DEFAULT_SERVER)
        token = token if token is not None else os.environ.get("TSM_TOKEN") or None
        self.headers = {"User-Agent": USER_AGENT}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.chunk_size = chunk_size
        self.store = ResumeStore(cache_dir)
        self.reached = False  # has the server answered once? Until then a refused connection fails at once
        self.on_retry: Callable[[str], None] | None = None  # told why a transfer is retrying

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (the server's ``Retry-After`` if it sent one)."""
        if response is not None and (after := response.headers.get("retry-after", "")).isdigit():
            return min(float(after), self.max_backoff)
        base = min(self.max_backoff, self.backoff * 2.0**attempt)
        return base * (0.5 + random.random() / 2)  # jitter: replicas of one client don't stampede

    def request(self, method: str, url: str, *, idempotent: bool | None = None, **kwargs: Any) -> Op[httpx.Response]:
        """Send with retries (transport errors and 423/429/5xx) when the request is idempotent."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "OPTIONS", "DELETE")
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = yield Send(method, url, **kwargs)
            except httpx.TransportError as exc:
                never = not self.reached and isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if never or not idempotent or attempt >= self.retries:
                    raise ConnectionFailed(f"cannot reach {self.server}: {describe(exc)}") from None
            else:
                self.reached = True
                if not (idempotent and response.status_code in RETRY_STATUSES and attempt < self.retries):
                    return raise_for_status(response)
            yield Sleep(self.delay(attempt, response))
            attempt += 1

    def request_json(self, method: str, url: str, parse: Callable[[Any], T], **kwargs: Any) -> Op[T]:
        response = yield from self.request(method, url, **kwargs)
        try:
            return parse(response.json())
        except ValueError as exc:
            raise ProtocolError(f"{method} {url}: unexpected answer from the server ({exc})") from None

"""A download as an HTTP answer: the one response both ``GET`` and a plain ``HEAD /files/{id}`` give.

(``HEAD /files/{id}`` without ``Tus-Resumable`` is routed by the tus router; it answers with
this same response, so the two routers share it here rather than import each other.)
"""

from __future__ import annotations

from typing import BinaryIO

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.http.problems import problems
from app.http.ranges import Download, Piece, body_pieces, plan_download, stream_body
from app.http.server import ZEROCOPY
from app.metrics import BYTES_DOWNLOADED
from app.services.files.catalog import get_file
from app.services.files.downloads import StoredFile, stored_file
from app.services.owners.keys import Principal

_TEXT: dict[str, str] = {"type": "string"}
ANY_BYTES = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
CONDITIONAL_HEADERS = (
    ("If-Match", False, _TEXT, "ETags; none matches → 412."),
    ("If-None-Match", False, _TEXT, "ETags; one matches → 304."),
    ("If-Modified-Since", False, _TEXT, "HTTP date; not modified since → 304."),
    ("If-Unmodified-Since", False, _TEXT, "HTTP date; modified since → 412."),
)
RANGE_HEADERS = (
    ("Range", False, _TEXT, "`bytes=a-b`, `a-`, `-n`, or several separated by commas."),
    ("If-Range", False, _TEXT, "ETag or HTTP date: the Range applies only while it still matches."),
)
DOWNLOAD_PROBLEMS = problems(
    401,
    (404, "No such file (or not yours)."),
    (409, "The file is not complete yet."),
    (412, "If-Match / If-Unmodified-Since failed."),
)


async def _presigned_redirect(request: Request, stored: StoredFile, plan: Download) -> Response | None:
    """With TSM_S3_PRESIGNED_REDIRECTS: a single full or one-range GET goes straight to the store.

    Validators were checked here already; the client repeats its Range to the presigned URL, and
    the URL makes S3 answer with this file's Content-Disposition and Content-Type. Several ranges
    (multipart/byteranges) are always sent by the service.
    """
    settings: Settings = request.app.state.settings
    if not settings.s3_presigned_redirects or plan.status not in (200, 206) or plan.boundary is not None:
        return None
    disposition, content_type = plan.headers["Content-Disposition"], plan.content_type
    url = await stored.store.presigned_url(stored.id, filename=disposition, content_type=content_type)
    if url is None:
        return None
    return Response(status_code=307, headers={"Location": url, "Cache-Control": "private, no-store"})


async def download_response(
    request: Request, session: AsyncSession, principal: Principal, file_id: str, method: str
) -> Response:
    row = await get_file(session, principal, file_id)
    await session.commit()  # hand the connection back before a long body starts streaming
    headers = {key.lower(): value for key, value in request.headers.items()}
    stored = await stored_file(request.app.state.store, request.app.state.settings, row)
    plan = plan_download(stored, method, headers)
    if plan.status == 304 or method == "HEAD":
        media_type = None if plan.status == 304 else plan.content_type
        return Response(status_code=plan.status, headers=plan.headers, media_type=media_type)
    if method == "GET" and (redirect := await _presigned_redirect(request, stored, plan)) is not None:
        return redirect
    if ZEROCOPY in request.scope.get("extensions", {}) and (handle := await stored.open_local()) is not None:
        return SendfileResponse(handle, body_pieces(plan), plan)
    body = stream_body(plan, stored.read_range)
    return StreamingResponse(body, status_code=plan.status, headers=plan.headers, media_type=plan.content_type)


class SendfileResponse(Response):
    """The body's file ranges go out as ASGI zero-copy sends (app/http/server.py: sendfile),
    the multipart heads around them as ordinary body messages."""

    def __init__(self, handle: BinaryIO, pieces: list[Piece], plan: Download) -> None:
        super().__init__(status_code=plan.status, headers=plan.headers, media_type=plan.content_type)
        self.handle, self.pieces = handle, pieces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            for piece in self.pieces:
                if isinstance(piece, bytes):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    continue
                first, last = piece
                message = {"type": ZEROCOPY, "file": self.handle, "offset": first, "count": last - first + 1}
                await send({**message, "more_body": True})
                BYTES_DOWNLOADED.inc(last - first + 1)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.handle.close()

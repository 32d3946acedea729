"""tus 1.0.0 at ``/files``: OPTIONS, POST (creation), HEAD, PATCH, DELETE (termination).

Every response carries ``Tus-Resumable: 1.0.0`` (errors too: see :class:`TusRoute`).
``X-HTTP-Method-Override`` works on every route here, for clients behind proxies that only
pass GET and POST: the request is routed as the method it names (see app/middleware.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from app.auth import PrincipalDep
from app.errors import BadRequest, TSMError, UnsupportedMediaType
from app.http.deps import DatabaseDep, SessionDep
from app.http.downloads import CONDITIONAL_HEADERS, DOWNLOAD_PROBLEMS, download_response
from app.http.params import FileId, header_params
from app.http.problems import problems
from app.http.tus import (
    CHECKSUM_ALGORITHMS,
    OFFSET_CONTENT_TYPE,
    TUS_EXTENSIONS,
    TUS_VERSION,
    check_version,
    format_concat,
    format_metadata,
    http_date,
    is_offset_stream,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_uint,
    parse_upload_length,
    safe_content_type,
    safe_filename,
    tus_headers,
)
from app.models import File
from app.schemas import BIGINT_MAX
from app.services.files import concat, uploads
from app.services.files.catalog import COMPLETE, FINAL, PARTIAL, UPLOADING, find_file
from app.services.files.writer import BodyInterrupted


class TusRoute(APIRoute):
    """Adds Tus-Resumable to every response, error responses included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except TSMError as exc:
                exc.headers = {**tus_headers(), **exc.headers}
                raise
            except RequestValidationError as exc:
                raise BadRequest(str(exc.errors()[0].get("msg", "invalid request")), headers=tus_headers()) from None
            response.headers.update(tus_headers())
            return response

        return tus_handler


# A PATCH body that sends nothing for this many lock leases counts as a dropped connection.
IDLE_LEASES = 5

router = APIRouter(prefix="/files", tags=["uploads (tus 1.0)"], route_class=TusRoute)

NOT_FOUND = (404, "No such upload (or not yours).")
_SIZE = {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX}
TUS_RESUMABLE = ("Tus-Resumable", True, {"type": "string", "enum": ["1.0.0"]}, "The tus version; others → 412.")
UPLOAD_LENGTH = (  # required but in two cases a header's schema cannot say: the description does
    "Upload-Length",
    True,
    _SIZE,
    "The upload's size in bytes: required, unless `Upload-Defer-Length: 1` defers it to a later PATCH "
    "or `Upload-Concat: final;…` makes it the sum of the partial uploads' (then it must be absent).",
)
UPLOAD_OFFSET = ("Upload-Offset", True, _SIZE, "Where this chunk starts: the offset HEAD reported.")
# Upload-Metadata, Upload-Checksum and Upload-Concat are documented in the route descriptions and
# the README: their grammar (base64 of UTF-8, digests of an exact length, this server's upload
# URLs) is more than a schema can say.
OFFSET_BODY = {"content": {OFFSET_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}


def _tus_extra(*headers: tuple[str, bool, dict[str, Any], str], body: str | None = None) -> dict[str, Any]:
    extra = header_params(*headers)
    if body is not None:
        extra["requestBody"] = {**OFFSET_BODY, "required": body == "required"}
    return extra


def _settings(request: Request) -> Any:
    return request.app.state.settings


def _store(request: Request) -> Any:
    return request.app.state.store


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body straight from the ASGI server; a disconnect becomes BodyInterrupted.

    So does a body that goes silent: a client whose network vanished without closing the
    connection must not keep the upload locked until TCP gives up, hours later.
    """
    receive = request.receive
    idle = _settings(request).lease_seconds * IDLE_LEASES
    while True:
        try:
            async with asyncio.timeout(idle):
                message = await receive()
        except TimeoutError:
            raise BodyInterrupted() from None
        if message["type"] == "http.disconnect":
            raise BodyInterrupted()
        if body := message.get("body"):
            yield body
        if not message.get("more_body", False):
            return


def _upload_headers(row: File) -> dict[str, str]:
    headers = {"Upload-Offset": str(row.offset)}
    if row.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(row.length)
    if row.state == UPLOADING and row.expires_at is not None:
        headers["Upload-Expires"] = http_date(row.expires_at)
    return headers


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _with_concat(headers: dict[str, str], row: File, request: Request) -> dict[str, str]:
    """Upload-Concat for a partial or final; a final reports no offset until it is complete."""
    if row.concat is None:
        return headers
    headers = {
        **headers,
        "Upload-Concat": format_concat(row.concat_parts if row.concat == FINAL else None, _base(request)),
    }
    if row.concat == FINAL and row.state != COMPLETE:
        headers.pop("Upload-Offset", None)  # undefined until then (tus concatenation)
    return headers


def _patch_request(request: Request, offset_required: bool = True) -> uploads.PatchRequest:
    offset = parse_uint("Upload-Offset", request.headers.get("upload-offset"))
    if offset is None and offset_required:
        raise BadRequest("Upload-Offset is required: HEAD the upload to learn it")
    return uploads.PatchRequest(
        offset=offset or 0,
        length=parse_uint("Upload-Length", request.headers.get("upload-length")),
        checksum=parse_checksum(request.headers.get("upload-checksum")),
        content_length=parse_uint("Content-Length", request.headers.get("content-length")),
    )


@router.options("", status_code=204, response_class=Response)
@router.options("/{file_id}", status_code=204, include_in_schema=False)
async def tus_options(request: Request) -> Response:
    """Describe this tus server: version, extensions, maximum size and checksum algorithms."""
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(_settings(request).max_upload_bytes),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


@router.post(
    "",
    status_code=201,
    response_class=Response,
    responses=problems(400, 401, NOT_FOUND, 409, 410, 412, 413, 415, 423, 429),
    openapi_extra=_tus_extra(TUS_RESUMABLE, UPLOAD_LENGTH, body="optional"),
)
async def create_upload(request: Request, database: DatabaseDep, principal: PrincipalDep) -> Response:
    """Create an upload (Upload-Length or Upload-Defer-Length: 1); a body makes it creation-with-upload.

    `Upload-Concat: partial` makes it a partial upload; `Upload-Concat: final;<urls>` (the URLs of
    your finished partial uploads, in order, at most 64; no Upload-Length, no body) concatenates
    them into a new, complete upload (201 once its bytes are durable)."""
    check_version(request.headers.get("tus-resumable"))
    parts = parse_concat(request.headers.get("upload-concat"))
    if parts:
        return await _create_final(request, database, principal, parts)
    settings = _settings(request)
    length = parse_upload_length(request.headers.get("upload-length"), request.headers.get("upload-defer-length"))
    metadata = parse_metadata(request.headers.get("upload-metadata"))
    content_length = parse_uint("Content-Length", request.headers.get("content-length"))
    with_body = is_offset_stream(request.headers.get("content-type"))
    if not with_body and content_length:
        raise UnsupportedMediaType(f"an upload body must be sent as {OFFSET_CONTENT_TYPE}")
    patch = _patch_request(request, offset_required=False) if with_body else None
    if patch is not None and patch.offset != 0:
        raise BadRequest("creation-with-upload starts at offset 0")
    row = await uploads.create_upload(
        database,
        settings,
        _store(request),
        principal,
        length=length,
        metadata=metadata,
        filename=safe_filename(metadata),
        content_type=safe_content_type(metadata),
        concat=PARTIAL if parts is not None else None,
    )
    if patch is not None and row.length != 0:
        # The upload exists even if its first chunk failed: Upload-Offset tells what was kept.
        with contextlib.suppress(TSMError):
            row = await uploads.append(database, settings, _store(request), principal, row.id, patch, _body(request))
        async with database.sessionmaker() as session:
            row = await find_file(session, principal, row.id) or row
    headers = {"Location": f"{_base(request)}/files/{row.id}", **_with_concat(_upload_headers(row), row, request)}
    return Response(status_code=201, headers=headers)


async def _create_final(request: Request, database: DatabaseDep, principal: PrincipalDep, parts: list[str]) -> Response:
    if "upload-length" in request.headers or "upload-defer-length" in request.headers:
        raise BadRequest("a final upload's length is the sum of its partial uploads': send no Upload-Length")
    if parse_uint("Content-Length", request.headers.get("content-length")) or "transfer-encoding" in request.headers:
        raise BadRequest("a final upload takes no body: its bytes are those of its partial uploads")
    metadata = parse_metadata(request.headers.get("upload-metadata"))
    row = await concat.create_final(
        database,
        _settings(request),
        _store(request),
        principal,
        parts,
        metadata=metadata,
        filename=safe_filename(metadata),
        content_type=safe_content_type(metadata),
    )
    headers = {"Location": f"{_base(request)}/files/{row.id}", **_with_concat(_upload_headers(row), row, request)}
    return Response(status_code=201, headers=headers)


@router.head(
    "/{file_id}",
    response_class=Response,
    responses={304: {"description": "Not modified (a download HEAD)."}, **DOWNLOAD_PROBLEMS, **problems(410)},
    openapi_extra=header_params(
        ("Tus-Resumable", False, TUS_RESUMABLE[2], "1.0.0: the upload's offset; absent: a download HEAD."),
        *CONDITIONAL_HEADERS,
    ),
)
async def head_upload(file_id: FileId, request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    """tus: the upload's offset (and length, metadata); without Tus-Resumable: a download HEAD."""
    if "tus-resumable" not in request.headers:
        return await download_response(request, session, principal, file_id, "HEAD")
    check_version(request.headers.get("tus-resumable"))
    row = await uploads.get_upload(session, principal, file_id)
    headers = {**_with_concat(_upload_headers(row), row, request), "Cache-Control": "no-store"}
    if row.metadata_:
        headers["Upload-Metadata"] = format_metadata(row.metadata_)
    return Response(status_code=200, headers=headers)


@router.patch(
    "/{file_id}",
    status_code=204,
    response_class=Response,
    responses=problems(
        400,
        401,
        (403, "A final upload (concatenation) takes no PATCH."),
        NOT_FOUND,
        409,
        410,
        412,
        413,
        415,
        423,
        460,
        507,
    ),
    openapi_extra=_tus_extra(TUS_RESUMABLE, UPLOAD_OFFSET, body="required"),
)
async def patch_upload(file_id: FileId, request: Request, database: DatabaseDep, principal: PrincipalDep) -> Response:
    """Append the body (application/offset+octet-stream) at Upload-Offset; 204 with the new offset."""
    check_version(request.headers.get("tus-resumable"))
    if not is_offset_stream(request.headers.get("content-type")):
        raise UnsupportedMediaType(f"a PATCH body must be sent as Content-Type: {OFFSET_CONTENT_TYPE}")
    patch = _patch_request(request)
    row = await uploads.append(database, _settings(request), _store(request), principal, file_id, patch, _body(request))
    return Response(status_code=204, headers=_upload_headers(row))


@router.delete(
    "/{file_id}",
    status_code=204,
    response_class=Response,
    responses=problems(401, NOT_FOUND, (409, "The server is still writing this file."), 410, 412, 423),
    openapi_extra=header_params(TUS_RESUMABLE),
)
async def delete_upload(file_id: FileId, request: Request, database: DatabaseDep, principal: PrincipalDep) -> Response:
    """Terminate an upload (or delete a finished file): the bytes are removed, later requests 404/410."""
    check_version(request.headers.get("tus-resumable"))
    await uploads.terminate(database, _settings(request), _store(request), principal, file_id)
    return Response(status_code=204)

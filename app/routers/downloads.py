"""Downloads: ``GET /files/{id}`` with HTTP Range, validators and conditional requests.

(``HEAD /files/{id}`` without ``Tus-Resumable`` lands here too, through the tus router.)
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import PrincipalDep
from app.db import SessionDep
from app.errors import problems
from app.routers.params import FileId, header_params
from app.services.files.catalog import get_file
from app.services.files.downloads import plan_download, stream_body
from app.services.owners.keys import Principal

router = APIRouter(prefix="/files", tags=["downloads"])

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


async def download_response(
    request: Request, session: AsyncSession, principal: Principal, file_id: str, method: str
) -> Response:
    row = await get_file(session, principal, file_id)
    await session.commit()  # hand the connection back before a long body starts streaming
    headers = {key.lower(): value for key, value in request.headers.items()}
    plan = await plan_download(request.app.state.settings, row, method, headers)
    if plan.status == 304 or method == "HEAD":
        media_type = None if plan.status == 304 else plan.content_type
        return Response(status_code=plan.status, headers=plan.headers, media_type=media_type)
    body = stream_body(plan)
    return StreamingResponse(body, status_code=plan.status, headers=plan.headers, media_type=plan.content_type)


@router.get(
    "/{file_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": ANY_BYTES, "description": "The whole file, as the upload's file type (or octet-stream)."},
        206: {"content": ANY_BYTES, "description": "The range; several ranges come as multipart/byteranges."},
        304: {"description": "Not modified (If-None-Match / If-Modified-Since)."},
        **DOWNLOAD_PROBLEMS,
        **problems((416, "No requested range is satisfiable.")),
    },
    openapi_extra=header_params(*RANGE_HEADERS, *CONDITIONAL_HEADERS),
)
async def download_file(file_id: FileId, request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    """Download a complete file (upload or export); supports Range, If-Range, If-None-Match and friends."""
    return await download_response(request, session, principal, file_id, "GET")

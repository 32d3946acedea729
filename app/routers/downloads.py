"""Downloads: ``GET /files/{id}`` with HTTP Range, validators and conditional requests.

(``HEAD /files/{id}`` without ``Tus-Resumable`` lands here too, through the tus router.)
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import PrincipalDep
from app.db import SessionDep
from app.errors import PROBLEM_JSON
from app.services.downloads import plan_download, stream_body
from app.services.files import get_file
from app.services.keys import Principal

router = APIRouter(prefix="/files", tags=["downloads"])

_problem = {"content": {PROBLEM_JSON: {}}}


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
        200: {"content": {"application/octet-stream": {}}, "description": "The whole file."},
        206: {"description": "The requested range(s); several ranges come as multipart/byteranges."},
        304: {"description": "Not modified (If-None-Match / If-Modified-Since)."},
        404: {"description": "No such file (or not yours).", **_problem},
        409: {"description": "The file is not complete yet.", **_problem},
        412: {"description": "If-Match / If-Unmodified-Since failed.", **_problem},
        416: {"description": "No requested range is satisfiable.", **_problem},
    },
)
async def download_file(file_id: str, request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    """Download a complete file (upload or export); supports Range, If-Range, If-None-Match and friends."""
    return await download_response(request, session, principal, file_id, "GET")

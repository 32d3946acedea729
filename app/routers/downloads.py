"""Downloads: ``GET /files/{id}`` with HTTP Range, validators and conditional requests.

(``HEAD /files/{id}`` without ``Tus-Resumable`` gives the same answer through the tus router.)
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from app.auth import PrincipalDep
from app.http.deps import SessionDep
from app.http.downloads import ANY_BYTES, CONDITIONAL_HEADERS, DOWNLOAD_PROBLEMS, RANGE_HEADERS, download_response
from app.http.params import FileId, header_params
from app.http.problems import problems

router = APIRouter(prefix="/files", tags=["downloads"])


@router.get(
    "/{file_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": ANY_BYTES, "description": "The whole file, as the upload's file type (or octet-stream)."},
        206: {"content": ANY_BYTES, "description": "The range; several ranges come as multipart/byteranges."},
        304: {"description": "Not modified (If-None-Match / If-Modified-Since)."},
        307: {
            "description": "With TSM_S3_PRESIGNED_REDIRECTS on S3: a single full or one-range GET is sent to "
            "a presigned URL of the store (`Location`); repeat the Range there.",
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
        },
        **DOWNLOAD_PROBLEMS,
        **problems((416, "No requested range is satisfiable.")),
    },
    openapi_extra=header_params(*RANGE_HEADERS, *CONDITIONAL_HEADERS),
)
async def download_file(file_id: FileId, request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    """Download a complete file (upload or export); supports Range, If-Range, If-None-Match and friends."""
    return await download_response(request, session, principal, file_id, "GET")

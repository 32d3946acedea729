"""``GET /previews/csv``: a file as an import would parse it (dialect, columns, types, first rows)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, ValidationError

from app.auth import PrincipalDep
from app.errors import Unprocessable
from app.http.deps import SessionDep
from app.http.problems import problems
from app.services.csv_import.params import ImportParams
from app.services.csv_import.preview import MAX_PREVIEW_ROWS, preview_csv

router = APIRouter(prefix="/previews", tags=["imports"])


class CsvPreview(BaseModel):
    dialect: dict[str, Any] = Field(description="delimiter, quote and header, as given or sniffed.")
    columns: list[dict[str, str]] = Field(description="Column names and the types an import would infer.")
    renamed: list[dict[str, str]] = Field(description="Header names that became different column names.")
    sampled_records: int = Field(description="Records the types were inferred from (head, middle and tail).")
    rows: list[list[str | None]] = Field(description="The first data records, parsed (null → None).")


@router.get(
    "/csv",
    response_model=CsvPreview,
    responses=problems(
        401,
        (404, "No such file (or not yours)."),
        (409, "The upload is not complete yet."),
        (422, "Bad options, or the file cannot be read as CSV."),
    ),
)
async def preview(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    file_id: Annotated[str | None, Query(max_length=36, description="An uploaded file (complete).")] = None,
    path: Annotated[str | None, Query(max_length=1024, description="Or a path relative to storage/.")] = None,
    delimiter: Annotated[str | None, Query(min_length=1, max_length=1, description="Omitted: sniffed.")] = None,
    quote: Annotated[str | None, Query(min_length=1, max_length=1, description="Omitted: sniffed.")] = None,
    header: Annotated[bool | None, Query(description="Omitted: sniffed.")] = None,
    encoding: Annotated[str, Query(max_length=40)] = "utf-8",
    null: Annotated[str, Query(max_length=64)] = "",
    rows: Annotated[int, Query(ge=1, le=MAX_PREVIEW_ROWS, description="Data records to show.")] = 20,
    sample_records: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> CsvPreview:
    """The file as ``import_csv`` with these options would read it; nothing is imported."""
    try:
        params = ImportParams.model_validate(
            {
                "file_id": file_id,
                "path": path,
                "table": "preview",
                "delimiter": delimiter,
                "quote": quote,
                "header": header,
                "encoding": encoding,
                "null": null,
                "sample_records": sample_records,
            }
        )
    except ValidationError as exc:
        raise Unprocessable("; ".join(str(e["msg"]) for e in exc.errors())) from None
    settings = request.app.state.settings
    store = request.app.state.store
    return CsvPreview(**await preview_csv(session, settings, principal, params, rows, store))

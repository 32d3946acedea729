"""A file as ``import_csv`` would read it, without importing: dialect, columns, types, first rows.

    source ─▶ make_plan (sniffed dialect, header names, types from the spread sample)
           └▶ the first records after the header, parsed with that dialect

The client and the console show it before an import starts, so a wrong guess is seen (and
overridden with explicit options) before any row is written.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Unprocessable
from app.services.csv_import import scan as csv_scan
from app.services.csv_import.params import ImportParams
from app.services.csv_import.reader import Source
from app.services.csv_import.source import SAMPLE_BYTES, Plan, decode, make_plan, resolve_source
from app.services.owners.keys import Principal

if TYPE_CHECKING:
    from app.services.files.store import ByteStore

MAX_PREVIEW_ROWS = 100


async def preview_csv(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    params: ImportParams,
    rows: int,
    store: ByteStore | None = None,
) -> dict[str, Any]:
    """``store``: where uploads live (None: the local directory); a ``path`` is always local."""
    path = await resolve_source(session, settings, principal, params.file_id, params.path, store)
    sample = params.sample_records or settings.import_sample_records
    try:
        return await asyncio.to_thread(_preview, path, params, sample, min(rows, MAX_PREVIEW_ROWS))
    except csv_scan.CsvError as exc:
        raise Unprocessable(f"cannot read the file: {exc}") from None


def _preview(path: Source, params: ImportParams, sample: int, rows: int) -> dict[str, Any]:
    plan = make_plan(path, params, sample)
    return {
        "dialect": {k: v for k, v in plan.dialect.as_json().items() if k != "looks"},
        "columns": [{"name": n, "type": t} for n, t in zip(plan.names, plan.types, strict=True)],
        "renamed": plan.renamed,
        "sampled_records": plan.sampled,
        "rows": _first_rows(path, plan, params, rows),
    }


def _first_rows(path: Source, plan: Plan, params: ImportParams, count: int) -> list[list[str | None]]:
    quote = ord(plan.dialect.quote)
    with path.open() as handle:
        handle.seek(plan.data_start)
        data = handle.read(min(SAMPLE_BYTES, plan.data_end - plan.data_start))
    records = csv_scan.split_records(data, quote)[:count]
    if len(records) == count or plan.data_start + len(data) < plan.data_end:
        records = [r for r in records if r.endswith(b"\n")]  # whole records only
    text = decode(b"".join(records), params.encoding, plan.first_line)
    parsed = csv_scan.parse_rows(text, plan.dialect.delimiter, plan.dialect.quote, params.null)
    return [values for _, values in parsed if values]

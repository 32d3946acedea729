"""PostgreSQL export source: keyset pages streamed by ``COPY (SELECT ...) TO STDOUT`` (asyncpg),
``parallel`` of them at once, each on its own connection, all in one snapshot.

Each page's upper key is computed first (on the planning connection), then the page is one
``COPY`` statement on one of the worker connections, so the server formats the next pages
while this one is written, synced and checkpointed::

    plan   hi = the n-th key after `last`            (any unique key: ORDER BY key OFFSET n-1)
            or lo = min(key > last), hi = lo + step   (an integer key: two index probes)
            or heap blocks [b, b + k)                 (no key: physical order, a TID range scan)
    fetch  COPY (SELECT cols FROM t WHERE key > last AND key <= hi AND <filters> ORDER BY key)

    planning conn   BEGIN REPEATABLE READ READ ONLY; pg_export_snapshot() ─┐  plans page 1, 2, 3 …
    worker 1 … N    BEGIN REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT ┘  COPY page k on k mod N
    caller          page 1 ─▶ page 2 ─▶ page 3 …  (in order: page k waits for k-1 to be kept)

Why pages in key order rather than N big ranges cut from samples (TABLESAMPLE percentiles, or
ctid ranges) and joined at the end: a page is the unit the checkpoint already counts. The
ranges are contiguous and follow the key, so the pages laid end to end are the single-stream
file byte for byte, whatever N is; the file grows in order, so only a prefix is ever durable
and the checkpoint stays one position and one offset (on S3 one multipart upload, no parts to
assemble). The parallelism is the N pages being formatted by the server at once, while the
caller writes the ones before; memory stays near N + 2 pages (at most MAX_PAGE_BYTES each).
A pause cancels the in-flight COPYs; a resume (or a retry after a crash) starts from the
checkpoint's position in a new snapshot: one run's pages are one consistent view of the table,
and rows changed between runs may or may not appear. The open snapshot holds back vacuum of
the table's dead rows while a run lasts, and DDL on the table waits for the run to pause or end.

A full ``ORDER BY ctid LIMIT n`` would sort the whole rest of the table for every page, hence
block ranges; ``step`` and ``k`` adapt to the rows the last pages held.

Filter values only ever travel as bound parameters: they are stored in session settings
(``set_config($1, $2)``) and read back in the query with ``current_setting()``, because a
``COPY`` statement itself cannot take parameters. Key bounds are the table's own values, kept
as text in the checkpoint and written as literals (``standard_conforming_strings`` is forced on).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.errors import NotFound, Unprocessable
from app.services.csv_export.plan import (
    COMPARISONS,
    ExportPlan,
    KeyCandidate,
    Page,
    check_columns,
    choose_key,
)
from app.services.owners.namespaces import quote

# Session settings that change how values print; captured on the first run, restored on resume.
OUTPUT_SETTINGS = ("DateStyle", "IntervalStyle", "TimeZone", "extra_float_digits", "bytea_output", "lc_monetary")
EXACT_COUNT_MAX_ROWS = 1_000_000
MAX_BLOCKS_PER_PAGE = 1 << 20
STEP_LIMIT_FACTOR = 16
MAX_PAGE_BYTES = 32 * 1024 * 1024  # a page is held in memory until it is written
INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})

_RELATION = """
SELECT c.oid, c.relkind::text AS relkind, c.reltuples, c.relpages
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""
# The key type keeps its modifier (a cast of the column's own values loses nothing); a filter
# value is cast to the unmodified type, so that 'abcd' is not cut to fit a varchar(3) first.
_COLUMNS = """
SELECT attname, format_type(atttypid, atttypmod) AS type,
       CASE atttypid WHEN 'bpchar'::regtype THEN 'bpchar' WHEN 'bit'::regtype THEN 'varbit'
                     ELSE format_type(atttypid, NULL) END AS filter_type
FROM pg_attribute
WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum
"""
_KEYS = """
SELECT i.indisprimary AS primary, array_agg(a.attname ORDER BY k.ord) AS columns,
       bool_and(a.attnotnull) AS not_null
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
  AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
GROUP BY i.indexrelid, i.indisprimary
"""
_NO_PHYSICAL = {
    "v": "it is a view (a view has no row addresses to page by)",
    "p": "it is a partitioned table (row addresses repeat across partitions)",
    "f": "it is a foreign table (it has no row addresses to page by)",
}


def literal(text: str) -> str:
    """A SQL string literal (valid because the connection forces standard_conforming_strings)."""
    return "'" + text.replace("'", "''") + "'"


class PgSource:
    def __init__(
        self, conn: asyncpg.Connection, schema: str, plan: ExportPlan, page_rows: int, parallel: int = 2
    ) -> None:
        self.conn = conn
        self.parallel = max(1, parallel)  # pages COPYed at once
        self.plan_limit = page_rows
        self.schema = schema
        self.plan = plan
        self.table = plan.table
        self.qualified = f"{quote(schema)}.{quote(plan.table)}"
        self.columns: list[str] = []
        self.types: dict[str, str] = {}
        self.filter_types: dict[str, str] = {}
        self.key: list[str] = []
        self.oid = 0
        self.span = 1  # heap blocks per physical-order page
        self.step: int | None = None  # key values per integer-key page
        self.row_cap = 1 << 62  # rows that fit in MAX_PAGE_BYTES, from the pages seen
        self.where: list[str] = []
        self._settings: dict[str, str] = {}
        self._gucs: list[tuple[str, Any]] = []  # filter values, as bound to every connection
        self.dsn = ""
        self.workers: list[asyncpg.Connection] = []

    @classmethod
    async def open(
        cls,
        dsn: str,
        schema: str,
        plan: ExportPlan,
        page_rows: int,
        session: dict[str, str] | None = None,
        parallel: int = 2,
    ) -> PgSource:
        """Connect, check the table, its columns, key and filters (NotFound / Unprocessable)."""
        conn = await _connect(dsn)
        source = cls(conn, schema, plan, page_rows, parallel)
        source.dsn = dsn
        try:
            await source._describe()
            await source._restore(session)
            await source._bind_filters()
        except BaseException:
            await conn.close()
            raise
        return source

    async def close(self) -> None:
        for conn in (self.conn, *self.workers):
            if not conn.is_closed():
                await conn.close()
        self.workers = []

    # -- checks ---------------------------------------------------------------------------
    async def _describe(self) -> None:
        rel = await self.conn.fetchrow(_RELATION, self.schema, self.table)
        if rel is None:
            raise NotFound(f"no table {self.table!r}")
        self.oid = rel["oid"]
        rows = await self.conn.fetch(_COLUMNS, self.oid)
        self.types = {r["attname"]: r["type"] for r in rows}
        self.filter_types = {r["attname"]: r["filter_type"] for r in rows}
        self.columns = check_columns(self.table, [r["attname"] for r in rows], self.plan)
        keys = [
            KeyCandidate(tuple(r["columns"]), r["primary"], r["not_null"])
            for r in await self.conn.fetch(_KEYS, self.oid)
        ]
        physical = "ctid" if rel["relkind"] in ("r", "m") else None
        reason = _NO_PHYSICAL.get(rel["relkind"], "")
        self.key = choose_key(self.table, keys, self.plan.order_by, physical, reason)
        if rel["reltuples"] > 0 and rel["relpages"] > 0:
            density = rel["reltuples"] / rel["relpages"]
            self.span = max(1, min(MAX_BLOCKS_PER_PAGE, math.ceil(self.plan_limit / density)))

    async def _restore(self, session: dict[str, str] | None) -> None:
        if session:
            for name, value in session.items():
                if name in OUTPUT_SETTINGS:
                    await self.conn.execute("SELECT set_config($1, $2, false)", name, value)
        for name in OUTPUT_SETTINGS:
            self._settings[name] = await self.conn.fetchval("SELECT current_setting($1)", name)

    def session_state(self) -> dict[str, Any]:
        return dict(self._settings)

    async def _set(self, conn: asyncpg.Connection, setting: str, value: Any, remember: bool = True) -> None:
        if isinstance(value, list):
            await conn.execute("SELECT set_config($1, $2::text[]::text, false)", setting, value)
        else:
            await conn.execute("SELECT set_config($1, $2, false)", setting, value)
        if remember:
            self._gucs.append((setting, value))

    async def _bind_filters(self) -> None:
        for index, spec in enumerate(self.plan.filters):
            column, op, value = quote(spec.column), spec.op, spec.value
            kind = self.filter_types[spec.column]
            setting = f"tsm.export_f{index}"
            read = f"current_setting('{setting}')"
            if op == "is_null":
                self.where.append(f"{column} IS NULL")
                continue
            if op == "not_null":
                self.where.append(f"{column} IS NOT NULL")
                continue
            if op in ("in", "not_in"):
                texts = [_text(v) for v in value]
                await self._set(self.conn, setting, texts)
                check = f"SELECT CAST({read} AS {kind}[])"
                test = "= ANY" if op == "in" else "<> ALL"
                self.where.append(f"{column} {test}(CAST({read} AS {kind}[]))")
            elif op in ("like", "not_like"):
                await self._set(self.conn, setting, _text(value))
                check = f"SELECT {read}"
                self.where.append(f"CAST({column} AS text) {'NOT LIKE' if op == 'not_like' else 'LIKE'} {read}")
            else:
                await self._set(self.conn, setting, _text(value))
                check = f"SELECT CAST({read} AS {kind})"
                self.where.append(f"{column} {COMPARISONS[op]} CAST({read} AS {kind})")
            try:
                await self.conn.fetchval(check)
            except asyncpg.PostgresError as exc:
                raise Unprocessable(
                    f"filters[{index}]: {value!r} is not a valid {kind} value for column {spec.column!r}: "
                    f"{exc.args[0] if exc.args else exc}"
                ) from None
        if self.where:  # operators that do not exist for the column's type show up here
            try:
                await self.conn.execute(f"EXPLAIN SELECT 1 FROM {self.qualified} WHERE {self._filters()}")
            except asyncpg.PostgresError as exc:
                raise Unprocessable(f"filters: {exc.args[0] if exc.args else exc}") from None

    # -- paging ---------------------------------------------------------------------------
    def _filters(self) -> str:
        return " AND ".join(f"({w})" for w in self.where) or "TRUE"

    def _key_tuple(self, values: list[str] | None = None) -> str:
        if values is None:
            items = [quote(k) for k in self.key]
        else:
            items = [f"CAST({literal(v)} AS {self.types[k]})" for k, v in zip(self.key, values, strict=True)]
        return items[0] if len(items) == 1 else "(" + ", ".join(items) + ")"

    async def estimate(self) -> tuple[int, bool]:
        where = self._filters()
        plan = await self.conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self.qualified} WHERE {where}")
        guess = int(_plan_rows(plan))
        if guess <= EXACT_COUNT_MAX_ROWS:
            return int(await self.conn.fetchval(f"SELECT count(*) FROM {self.qualified} WHERE {where}")), True
        return guess, False

    async def pages(self, position: Any, limit: int) -> AsyncGenerator[Page, None]:
        """Pages in order, each COPYed by one of ``parallel`` worker connections (one snapshot)
        while the caller writes, syncs and checkpoints the ones before."""
        if not self.workers:
            await self._share_snapshot()
        in_flight: deque[tuple[PagePlan, asyncio.Task[tuple[int, list[bytes]]]]] = deque()
        planned, exhausted, count = position, False, 0

        async def fill() -> None:
            """Plan and start pages until every worker has one."""
            nonlocal planned, exhausted, count
            while not exhausted and len(in_flight) < len(self.workers):
                plan = await self._plan(planned, min(limit, self.row_cap))
                if plan is None:
                    exhausted = True
                    return
                planned = plan.position
                worker = self.workers[count % len(self.workers)]  # free: its last page is fetched
                count += 1
                in_flight.append((plan, asyncio.create_task(self._fetch(worker, plan.query))))

        try:
            await fill()
            while in_flight:
                plan, fetching = in_flight.popleft()
                rows, chunks = await fetching
                if rows:  # wide rows make shorter pages: memory stays near parallel + 2 pages
                    self.row_cap = max(1, MAX_PAGE_BYTES * rows // max(1, sum(map(len, chunks))))
                self._observe(plan, rows, min(limit, self.row_cap))
                await fill()  # this page's worker starts the next one while the caller writes it
                yield Page(plan.position, rows, chunks)
        finally:
            for _, fetching in in_flight:
                fetching.cancel()
            await asyncio.gather(*(f for _, f in in_flight), return_exceptions=True)

    async def _share_snapshot(self) -> None:
        """Open the run's snapshot on the planning connection and join every worker to it."""
        await self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = await self.conn.fetchval("SELECT pg_export_snapshot()")
        joining = [asyncio.ensure_future(self._worker(snapshot)) for _ in range(self.parallel)]
        try:
            await asyncio.gather(*joining)
        finally:  # every connection made is closed by close(), even when another one failed
            await asyncio.wait(joining)
            self.workers = [j.result() for j in joining if not j.cancelled() and j.exception() is None]

    async def _worker(self, snapshot: str) -> asyncpg.Connection:
        conn = await _connect(self.dsn)
        try:
            for name, value in self._settings.items():
                await conn.execute("SELECT set_config($1, $2, false)", name, value)
            for setting, value in self._gucs:
                await self._set(conn, setting, value, remember=False)
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await conn.execute(f"SET TRANSACTION SNAPSHOT {literal(snapshot)}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _fetch(self, conn: asyncpg.Connection, query: str) -> tuple[int, list[bytes]]:
        chunks: list[bytes] = []

        async def collect(data: bytes) -> None:
            chunks.append(data)

        status = await conn.copy_from_query(
            query,
            output=collect,
            format="csv",
            delimiter=self.plan.delimiter,
            null=self.plan.null,
            force_quote=self.plan.quoting == "all",
            encoding="UTF8",
        )
        return int(status.split()[-1]), chunks

    def _select(self) -> str:
        iso_dates = self._settings["DateStyle"].upper().startswith("ISO")
        return ", ".join(canonical(quote(c), self.types[c], iso_dates) for c in self.columns)

    async def _plan(self, position: Any, limit: int) -> PagePlan | None:
        if self.key == ["ctid"]:
            return await self._plan_blocks(position)
        if len(self.key) == 1 and self.types[self.key[0]] in INTEGER_TYPES:
            return await self._plan_range(position, limit)
        return await self._plan_keys(position, limit)

    def _observe(self, plan: PagePlan, rows: int, limit: int) -> None:
        """Size later pages from the rows this one held (growing at most 4× at a time)."""
        if plan.span is None:
            return
        target = math.ceil(plan.span * limit / rows) if rows else plan.span * 4
        if self.key == ["ctid"]:
            self.span = max(1, min(MAX_BLOCKS_PER_PAGE, target, plan.span * 4))
        else:
            # A page holds at most `step` rows, so a dense stretch after a sparse one stays a page.
            self.step = max(1, min(target, plan.span * 4, limit * STEP_LIMIT_FACTOR))

    async def _plan_keys(self, position: list[str] | None, limit: int) -> PagePlan | None:
        """Any unique key: the upper key is the ``limit``-th one after the position."""
        keys = ", ".join(quote(k) for k in self.key)
        lower = f"{self._key_tuple()} > {self._key_tuple(position)}" if position is not None else "TRUE"
        where = f"{lower} AND {self._filters()}"
        as_text = ", ".join(f"CAST({quote(k)} AS text)" for k in self.key)
        descending = ", ".join(f"{quote(k)} DESC" for k in self.key)
        table = self.qualified
        hi = await self.conn.fetchrow(
            f"SELECT {as_text} FROM {table} WHERE {where} ORDER BY {keys} OFFSET {int(limit) - 1} LIMIT 1"
        )
        if hi is None:  # the last, short page ends at the last key
            hi = await self.conn.fetchrow(f"SELECT {as_text} FROM {table} WHERE {where} ORDER BY {descending} LIMIT 1")
            if hi is None:
                return None
        upper = list(hi.values())
        query = (
            f"SELECT {self._select()} FROM {table} WHERE {where} AND "
            f"{self._key_tuple()} <= {self._key_tuple(upper)} ORDER BY {keys}"
        )
        return PagePlan(query, upper, None)

    async def _plan_range(self, position: list[str] | None, limit: int) -> PagePlan | None:
        """An integer key: the page is a range of key values sized from the rows per value seen
        so far; its bounds cost two index probes instead of a walk over ``limit`` index entries."""
        key, table = quote(self.key[0]), self.qualified
        after = f"WHERE {key} > {int(position[0])}" if position is not None else ""
        bounds = await self.conn.fetchrow(f"SELECT min({key}), (SELECT max({key}) FROM {table}) FROM {table} {after}")
        assert bounds is not None  # an aggregate without GROUP BY always answers one row
        first, top = bounds[0], bounds[1]
        if first is None:
            return None
        if self.step is None:  # first page: spread `limit` rows over the key range, from the statistics
            estimate = await self.conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = $1", self.oid)
            spread = math.ceil((top - first + 1) * limit / estimate) if estimate and estimate > 0 else limit
            self.step = max(1, min(spread, limit * STEP_LIMIT_FACTOR))
        step = self.step
        hi = min(top, first + step - 1)
        query = (
            f"SELECT {self._select()} FROM {table} WHERE {key} >= {first} AND {key} <= {hi} "
            f"AND {self._filters()} ORDER BY {key}"
        )
        return PagePlan(query, [str(hi)], step)

    async def _plan_blocks(self, position: dict[str, int] | None) -> PagePlan | None:
        """Physical order: a range of heap blocks (a TID range scan), sized from rows per block."""
        start = int((position or {}).get("block", 0))
        blocks = await self.conn.fetchval(
            "SELECT pg_relation_size($1::oid::regclass) / current_setting('block_size')::bigint", self.oid
        )
        if start >= blocks:
            return None
        end = min(blocks, start + self.span)
        query = (
            f"SELECT {self._select()} FROM {self.qualified} WHERE ctid >= '({start},0)'::tid "
            f"AND ctid < '({end},0)'::tid AND {self._filters()} ORDER BY ctid"
        )
        return PagePlan(query, {"block": end}, end - start)


@dataclass(frozen=True)
class PagePlan:
    query: str
    position: Any  # where the next page starts, once this one is written
    span: int | None  # key values or heap blocks covered, to size later pages


async def _connect(dsn: str) -> asyncpg.Connection:
    settings = {"standard_conforming_strings": "on", "application_name": "tsm-export"}
    return await asyncpg.connect(dsn, server_settings=settings)


# ISO 8601 with a T; the fraction only when there is one (as Python's isoformat writes it). Under
# DateStyle ISO a timestamp's own text (years 1 to 9999) is that but for the T and the zeros
# PostgreSQL cuts off the fraction; elsewhere to_char, its format picked per value. (Both beat
# cutting ".000000" off with a regular expression, which cost more than the rest of a row.)
_TO_CHAR = (
    "to_char({value}, CASE WHEN date_trunc('second', {value}) = {value} "
    "THEN 'YYYY-MM-DD\"T\"HH24:MI:SS' ELSE 'YYYY-MM-DD\"T\"HH24:MI:SS.US' END)"
)
_ISO_TEXT = (
    "CASE WHEN {value} < '0001-01-01' OR {value} >= '10000-01-01' THEN " + _TO_CHAR + " "
    "WHEN date_trunc('second', {value}) = {value} THEN replace({value}::text, ' ', 'T') "
    "ELSE rpad(replace({value}::text, ' ', 'T'), 26, '0') END"
)


def canonical(column: str, sql_type: str, iso_dates: bool = False) -> str:
    """The expression that writes ``column`` as both databases' exports do (see plan.py): not
    aliased, so that ORDER BY still names the column itself. ``iso_dates``: the session's
    DateStyle is ISO (a timestamp's text then needs only small changes)."""
    iso = _ISO_TEXT if iso_dates else _TO_CHAR
    if sql_type == "boolean":
        return f"{column}::text"  # true / false
    if sql_type == "timestamp with time zone":
        utc = iso.format(value=f"({column} AT TIME ZONE 'UTC')")
        return f"CASE WHEN isfinite({column}) THEN {utc} || '+00:00' ELSE {column}::text END"
    if sql_type.startswith("timestamp"):
        return f"CASE WHEN isfinite({column}) THEN {iso.format(value=column)} ELSE {column}::text END"
    if sql_type.startswith("numeric"):
        return f"trim_scale({column})"  # no trailing zeros (an exponent it never writes)
    return column


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _plan_rows(plan: Any) -> float:
    data = json.loads(plan) if isinstance(plan, str) else plan
    return float(data[0]["Plan"]["Plan Rows"])

"""The parallel import's ledger: committed ranges merge into the unbroken run, in any order,
and the batch reader stops exactly where a range loaded earlier begins."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

from app.services.csv_import.loader import ImportCheckpoint
from app.services.csv_import.parallel import loaded_bytes, record_range, with_range
from app.services.csv_import.reader import LocalSource
from app.services.csv_import.source import BatchReader


def fresh(offset: int = 10) -> ImportCheckpoint:
    return cast("ImportCheckpoint", {"offset": offset, "line": 2, "rows": 0, "loaded": []})


def test_ranges_committed_out_of_order_join_the_run_once_contiguous():
    state = fresh()
    record_range(state, 30, 50, 3, 7)
    record_range(state, 50, 60, 1, 2)
    assert (state["offset"], state["loaded"], loaded_bytes(state)) == (10, [[30, 50, 3], [50, 60, 1]], 40)
    record_range(state, 10, 30, 4, 5)
    assert (state["offset"], state["line"], state["rows"], state["loaded"]) == (60, 10, 14, [])


def test_any_commit_order_ends_in_the_same_state():
    ranges = [(10 + 10 * i, 20 + 10 * i, i % 3, i) for i in range(40)]
    for seed in range(20):
        state = fresh()
        order = ranges[:]
        random.Random(seed).shuffle(order)
        committed = 0
        for start, end, lines, rows in order:
            record_range(state, start, end, lines, rows)
            committed += end - start
            assert loaded_bytes(state) == 10 + committed
        assert state["offset"] == 410 and state["loaded"] == []
        assert state["line"] == 2 + sum(r[2] for r in ranges) and state["rows"] == sum(r[3] for r in ranges)


def test_with_range_leaves_the_committed_state_alone():
    state = fresh()
    record_range(state, 40, 50, 1, 1)
    merged: dict[str, Any] = dict(with_range(state, 10, 40, 2, 3))
    assert state["offset"] == 10 and state["loaded"] == [[40, 50, 1]]
    assert merged["offset"] == 50 and merged["loaded"] == []


def test_reader_stops_at_a_loaded_range_and_never_inside_a_quoted_newline(tmp_path: Path):
    records = [f'{i},"two\nlines {i}"\n'.encode() for i in range(200)]
    data = b"".join(records)
    path = tmp_path / "q.csv"
    path.write_bytes(data)
    boundary = sum(len(r) for r in records[:120])  # where a range loaded earlier begins
    reader = BatchReader(LocalSource(path), len(data), 1 << 20, ord('"'), split=False)
    try:
        position, seen = 0, b""
        while (batch := reader.read(position, 997, stop=boundary)) is not None:
            assert batch.end <= boundary
            seen += batch.chunks[0]
            position = batch.end
        assert seen == data[:boundary]
        rest = reader.read(boundary, 10 << 20)
        assert rest is not None and rest.chunks[0] == data[boundary:] and rest.lines == 160
    finally:
        reader.close()

"""Record boundaries, names and types of app.services.csv_import.scan (pure functions, no database)."""

from __future__ import annotations

import csv
import io
import random

from app.services.csv_import import scan as csv_scan

Q = ord('"')


def test_boundary_never_cuts_inside_quotes():
    data = b'a,"x\ny"\nb,"p""\nq"\nc,d\n'
    assert csv_scan.split_records(data, Q) == [b'a,"x\ny"\n', b'b,"p""\nq"\n', b"c,d\n"]
    # the last newline inside the second record's quotes is not a boundary
    assert csv_scan.last_boundary(data, 0, data.index(b"q"), Q) == len(b'a,"x\ny"\n')
    assert csv_scan.last_boundary(b'a,"open\n', 0, 8, Q) is None


def test_random_cuts_agree_with_the_csv_module():
    rng = random.Random(7)
    values = ["plain", "with,comma", 'with "quote"', "multi\nline", "crlf\r\nline", "", "zoë"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    rows = [[rng.choice(values) for _ in range(4)] for _ in range(500)]
    writer.writerows(rows)
    data = out.getvalue().encode()
    pos, parsed = 0, []
    while pos < len(data):
        limit = min(len(data), pos + rng.randint(1, 400))
        cut = csv_scan.last_boundary(data, pos, limit, Q) if limit < len(data) else len(data)
        if cut is None:
            continue
        parsed.extend(csv.reader(io.StringIO(data[pos:cut].decode(), newline="")))
        pos = cut
    assert parsed == rows


def test_copy_end_marker_is_quoted():
    assert csv_scan.quote_copy_end_markers(b"a\n\\.\nb\n", Q) == b'a\n"\\."\nb\n'
    assert csv_scan.quote_copy_end_markers(b'"x\n\\.\n"\n', Q) == b'"x\n\\.\n"\n'  # inside quotes: data


def test_sanitize_names():
    raw = ["Name", "name", "", "1st", "pg_class", "Prénom", "a" * 80, "a" * 80, "x; DROP TABLE t"]
    names = csv_scan.sanitize_names(raw)
    assert names[:6] == ["name", "name_2", "column_3", "c_1st", "c_pg_class", "prenom"]
    assert len(names[6]) == 63 and names[7].endswith("_2") and len(names[7]) == 63
    assert names[8] == "x_drop_table_t"
    assert len(set(names)) == len(names)


def test_infer_types_widen():
    rows = [["1", "1.5", "2024-01-01", "true", "x", "2024-01-01 10:00:00", None]]
    rows.append(["2", "2", "2024-01-02", "f", "1", "2024-01-02", None])
    assert csv_scan.infer_types(rows, 7) == ["bigint", "numeric", "date", "boolean", "text", "timestamp", "text"]


def test_quoted_null_is_not_null():
    rows = csv_scan.parse_rows('1,"",\n2,,""\n', ",", '"', "")
    assert [r for _, r in rows] == [["1", "", None], ["2", None, ""]]
    rows, mapped = csv_scan.fast_rows('1,"NULL",NULL\n', ",", '"', "NULL")
    assert mapped and rows == [["1", "NULL", None]]


def test_data_end_drops_trailing_blank_lines():
    assert csv_scan.data_end(b"a\n1\n\n\n", 6) == 4
    assert csv_scan.data_end(b"a\r\n1\r\n\r\n", 8) == 6
    assert csv_scan.data_end(b"a\n1", 3) == 3
    assert csv_scan.data_end(b"\n\n", 2) == 0

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


def test_whole_column_inference_agrees_with_asking_each_value():
    """The one-regex-per-column path gives what merging every value's own type gives."""
    import random

    from app.services.csv_import.scan import _column_type, merge_type, value_type

    pools = [
        ["1", "-22", "+3", "007", "9223372036854775807", "9223372036854775808", "12345678901234567890"],
        ["1.5", ".5", "2.", "1e5", "-3.25E-2", "4"],
        ["2024-01-02", "2024-02-30", "1999-12-31"],
        ["2024-01-02 03:04:05", "2024-01-02T03:04", "2024-01-02 03:04:05.123456", "2024-13-01 00:00"],
        ["true", "f", " 5 ", "n/a", "", "x\ny", "2024-01-02+01"],
        [f"20{y:02}-{m:02}-{d:02}" for y in range(30) for m in (1, 2, 12) for d in (1, 28, 29, 30)],
        [f"2024-0{m}-1{d} {h:02}:{h:02}:0{d}" for m in range(1, 10) for d in range(10) for h in (0, 9, 23)],
        [f"{i}.{i % 7}" for i in range(200)],
    ]
    rng = random.Random(3)
    for _ in range(400):
        chosen = rng.sample(pools, rng.randint(1, 2))
        values = {rng.choice(rng.choice(chosen)) for _ in range(40)}
        values |= {str(rng.randint(0, 10**6)) for _ in range(rng.randint(0, 30))} if rng.random() < 0.5 else set()
        expected = None
        for value in values:
            if value:
                expected = merge_type(expected, value_type(value))
        assert _column_type(set(values)) == (expected or "text"), sorted(values)

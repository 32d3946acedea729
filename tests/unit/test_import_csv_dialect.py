"""The dialect sniffer and the spread type sample, without a database."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.services.csv_import.dialect import Dialect, sniff
from app.services.csv_import.reader import LocalSource
from app.services.csv_import.source import make_plan


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id,name\n1,a\n2,b\n", Dialect(",", '"', True)),
        ("id;name;price\n1;a, b;1,5\n2;c;2\n", Dialect(";", '"', True)),
        ("1\t2.5\tx\n2\t3.5\ty\n", Dialect("\t", '"', False)),
        ("a|b\n1|x,y\n2|z\n", Dialect("|", '"', True)),
        ("id,v\n1,'a,b'\n2,'c'\n", Dialect(",", "'", True)),
        ('id,v\n1,"it\'s, ok"\n2,"O\'Brien"\n', Dialect(",", '"', True)),  # apostrophes are not quotes
        ("name,city\nann,paris\nbob,rome\n", Dialect(",", '"', True)),  # all text: a header
        ("v\n1\n2\n", Dialect(",", '"', True)),  # one column: the default delimiter
        ("2024-01-02,5\n2024-01-03,6\n", Dialect(",", '"', False)),
    ],
)
def test_sniff(text, expected):
    assert sniff(text, None, None, None, "") == expected


def test_explicit_options_win_and_the_hint_remembers_the_look():
    text = "a;b;c\n1;2;3\n4;5;6\n"
    found = sniff(text, ",", None, True, "")
    assert (found.delimiter, found.header) == (",", True)
    assert found.looks == ";" and found.hint() == " — the file looks `;`-separated"
    assert sniff(text, None, None, None, "").looks is None


def test_refused_candidates_are_skipped():
    assert sniff("a;b\n1;2\n", None, None, None, "", lambda d, q: d != ";").delimiter == ","


def params(**values):
    defaults = {
        "delimiter": None,
        "quote": None,
        "header": None,
        "encoding": "utf-8",
        "null": "",
        "columns": None,
        "infer_types": True,
    }
    return SimpleNamespace(**{**defaults, **values})


def test_the_type_sample_reaches_the_middle_and_the_tail(tmp_path):
    rows = [f"{i:05},{i:05}" for i in range(1, 30_001)]  # fixed width: the middle row is mid-file
    for index, value in ((15_000, "1.5"), (29_999, "n/a")):
        lines = list(rows)
        lines[index] = f"{index + 1:05},{value}"
        path = tmp_path / "f.csv"
        path.write_text("id,v\n" + "\n".join(lines) + "\n")
        plan = make_plan(LocalSource(path), params(), 300)
        assert plan.types == ["bigint", "numeric" if value == "1.5" else "text"], (value, plan)
        assert 250 <= plan.sampled <= 1300
    path.write_text("id,v\n" + "\n".join(rows) + "\n")
    assert make_plan(LocalSource(path), params(), 300).types == ["bigint", "bigint"]


def test_a_head_sample_longer_than_the_first_read_stays_in_order(tmp_path):
    wide = "x" * 400  # 6,667 records of ~400 bytes: more than the first MiB read
    path = tmp_path / "wide.csv"
    path.write_text("id,note\n" + "".join(f"{i},{wide}\n" for i in range(1, 8001)) + "9001,tail\n")
    plan = make_plan(LocalSource(path), params(), 20_000)
    assert plan.types == ["bigint", "text"] and plan.sampled >= 6000

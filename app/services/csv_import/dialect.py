"""The CSV dialect — delimiter, quote, header — sniffed from the head of the file.

Like DuckDB's sniffer: every candidate dialect parses the same sample, and the one under which
the most records agree on one field count (and that count is largest) wins::

    candidates   delimiter , ; TAB |   ×   quote " '
    score        (records with the most common field count, that count, earlier candidate)
    header       the first record is a header unless its values fit the types the rest of
                 the sample has (a typed column whose first value is not of its type: header)

Explicit options are never second-guessed: only what the params leave unset is sniffed. The
sniffer also remembers which delimiter the file *looks* like, so that a parse failure under
an explicit, wrong delimiter can say so.
"""

from __future__ import annotations

import collections
import csv
import io
from dataclasses import asdict, dataclass
from typing import Any

from app.services.csv_import import scan as csv_scan

DELIMITERS = (",", ";", "\t", "|")
QUOTES = ('"', "'")
SNIFF_RECORDS = 200
SNIFF_BYTES = 64 * 1024
NAMES = {",": "`,`", ";": "`;`", "\t": "tab", "|": "`|`"}


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    quote: str
    header: bool
    looks: str | None = None  # the delimiter the file looks like, when it is not ``delimiter``

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dialect:
        return cls(data["delimiter"], data["quote"], bool(data["header"]), data.get("looks"))

    def hint(self) -> str:
        """What to add to a field-count error: the dialect the file seems to have instead."""
        return f" — the file looks {NAMES.get(self.looks, repr(self.looks))}-separated" if self.looks else ""


def sample_text(head: bytes, encoding: str) -> str:
    """The first SNIFF_BYTES of the file as text, without its last (maybe cut) line."""
    piece = head[:SNIFF_BYTES]
    if len(head) > SNIFF_BYTES and b"\n" in piece:
        piece = piece[: piece.rfind(b"\n") + 1]
    return piece.decode(encoding, "replace")


def _records(text: str, delimiter: str, quote: str) -> list[list[str]] | None:
    rows: list[list[str]] = []
    parsed = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quote, strict=False)
    try:
        for row in parsed:
            if row:
                rows.append(row)
            if len(rows) >= SNIFF_RECORDS:
                break
    except csv.Error:
        return None
    return rows


def _score(rows: list[list[str]]) -> tuple[int, int]:
    if not rows:
        return (0, 0)
    width, agreeing = collections.Counter(len(r) for r in rows).most_common(1)[0]
    return (agreeing if width > 1 else 0, width)


def _parity_ok(text: str, quote: str) -> bool:
    """The loaders cut records where the quote count is even: a quote that also occurs inside
    words (an apostrophe in O'Brien) would cut them wrongly."""
    return all(line.count(quote) % 2 == 0 for line in text.splitlines()[:SNIFF_RECORDS])


def best_delimiter(text: str, quote: str, allowed: tuple[str, ...] = DELIMITERS) -> tuple[str, tuple[int, int]]:
    scored = []
    for rank, delimiter in enumerate(allowed):
        rows = _records(text, delimiter, quote)
        if rows is not None:
            scored.append((_score(rows), -rank, delimiter))
    if not scored:
        return allowed[0], (0, 0)
    score, _, delimiter = max(scored)
    return (delimiter, score) if score[0] else (allowed[0], score)


def has_header(rows: list[list[str]], null: str) -> bool:
    """A header unless the first record's values fit the types of the records after it."""
    if len(rows) < 2:
        return True  # one record alone: a header-only file is the likelier reading
    first, rest = rows[0], rows[1:]
    width = len(first)
    sample = [[None if v == null else v for v in row] for row in rest if len(row) == width]
    if not sample:
        return True
    types = csv_scan.infer_types(sample, width)
    typed = [i for i, t in enumerate(types) if t != "text"]
    if not typed:
        return True  # all text: nothing tells them apart; most files have a header
    for index in typed:
        value = first[index]
        if value in ("", null):
            continue
        if csv_scan.merge_type(types[index], csv_scan.value_type(value)) != types[index]:
            return True
    return False


def sniff(
    text: str,
    delimiter: str | None,
    quote: str | None,
    header: bool | None,
    null: str,
    usable: Any = None,
) -> Dialect:
    """The dialect of ``text`` (the head of the file): explicit choices kept, the rest guessed.

    ``usable(delimiter, quote)`` may refuse a candidate that the other params rule out.
    """

    def allowed(d: str, q: str) -> bool:
        return d != q and (usable is None or usable(d, q))

    quotes = (quote,) if quote is not None else QUOTES
    options = []
    for rank, q in enumerate(quotes):
        if quote is None and q != '"' and ('"' in text or not _parity_ok(text, q)):
            continue  # a single quote only where nothing speaks for the double one
        candidates = (delimiter,) if delimiter is not None else tuple(d for d in DELIMITERS if allowed(d, q))
        if not candidates:
            continue
        d, score = best_delimiter(text, q, candidates)
        options.append((score, -rank, d, q))
    if not options:
        return Dialect(delimiter or ",", quote or '"', True if header is None else header)
    _, _, chosen_delimiter, chosen_quote = max(options)
    looks, looks_score = best_delimiter(text, chosen_quote)
    own_score = _score(_records(text, chosen_delimiter, chosen_quote) or [])
    hint = looks if looks != chosen_delimiter and looks_score > own_score else None
    if header is None:
        header = has_header(_records(text, chosen_delimiter, chosen_quote) or [], null)
    return Dialect(chosen_delimiter, chosen_quote, header, hint)

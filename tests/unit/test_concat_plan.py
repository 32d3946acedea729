"""The parts of a tus final on S3 (s3store.plan_concat): every rule S3 sets on a multipart
upload holds, and only the pieces where partials meet travel through the service."""

from __future__ import annotations

import itertools

import pytest

from app.services.files.s3store import COPY_MAX_BYTES, plan_concat

MiB = 1 << 20
PART = 5 * MiB


def _check(sizes: list[int], plan: list[list[tuple[int, int, int]]]) -> None:
    flat = [piece for part in plan for piece in part]
    # Every byte once, in order: the ranges tile each file and follow the files' order.
    expected = [(i, size) for i, size in enumerate(sizes) if size]
    covered: dict[int, int] = {}
    for (index, first, end), following in itertools.zip_longest(flat, flat[1:]):
        assert first == covered.get(index, 0) and end > first
        covered[index] = end
        if following is not None:
            assert following[0] >= index
    assert sorted(covered.items()) == expected
    for part in plan[:-1]:  # S3: every part but the last holds at least the minimum
        assert sum(end - first for _, first, end in part) >= PART
    for part in plan:
        assert sum(end - first for _, first, end in part) <= COPY_MAX_BYTES
        if len(part) > 1:  # gathered parts (read and re-sent) stay small
            assert sum(end - first for _, first, end in part) <= PART


@pytest.mark.parametrize(
    "sizes",
    [
        [12 * MiB, 3 * MiB, 9 * MiB],
        [1, 1, 1],
        [PART, PART],
        [PART - 1, 1, PART - 1],
        [0, 7 * MiB, 0, 1],
        [4 * MiB] * 10,
        [COPY_MAX_BYTES * 2 + 3, 2 * MiB],
        [],
    ],
)
def test_the_plan_tiles_every_byte_in_order_within_s3s_part_rules(sizes):
    _check(sizes, plan_concat(sizes, PART))


def test_large_partials_are_copied_whole_and_small_pieces_gathered():
    plan = plan_concat([12 * MiB, 3 * MiB, 9 * MiB], PART)
    assert plan == [[(0, 0, 12 * MiB)], [(1, 0, 3 * MiB), (2, 0, 2 * MiB)], [(2, 2 * MiB, 9 * MiB)]]
    assert plan_concat([0, 0], PART) == []

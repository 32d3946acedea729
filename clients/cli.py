"""``tsm``: the command line client."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("tsm: the command line client is not available in this version yet", file=sys.stderr)
    return 2

"""Fail when any module of app/ or clients/ imports itself back, type-only imports included.

import-linter keeps the layers; this keeps each layer free of cycles inside it, which layers
alone do not forbid.
"""

from __future__ import annotations

import sys

import grimp


def cycles(package: str) -> list[tuple[str, ...]]:
    graph = grimp.build_graph(package)
    found: set[tuple[str, ...]] = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                ring = (importer, *back)
                start = ring.index(min(ring[:-1]))
                found.add(ring[start:-1] + ring[:start] + (ring[start],))
    return sorted(found)


def main() -> int:
    rings = [ring for package in ("app", "clients") for ring in cycles(package)]
    for ring in rings:
        print("import cycle: " + " -> ".join(ring))
    print(f"{len(rings)} import cycles")
    return 1 if rings else 0


if __name__ == "__main__":
    sys.exit(main())

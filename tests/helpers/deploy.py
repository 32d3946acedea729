"""The Dockerfile read as a container engine reads it: instructions, the runtime stage, exec forms."""

from __future__ import annotations

import json
import re

from tests.helpers.server import ROOT


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def exec_form(instruction: str) -> list[str]:
    args = next(a for op, a in runtime_stage() if op == instruction)
    return json.loads(args[args.index("CMD") + 3 :] if instruction == "HEALTHCHECK" else args)

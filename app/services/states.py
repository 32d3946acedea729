"""The task state machine.

    queued ──claim──▶ running ──────────────▶ succeeded | failed
      │  ▲              │  ▲    (error: retry → queued, or failed)
      │  │       pause  ▼  │ resume
      │  │           pausing ──runner stops at checkpoint──▶ paused
      │  └──────────────────── resume ──────────────────────────┘
      └─ cancel (queued, running, pausing, paused) ─▶ cancelling ─cleanup─▶ cancelled

A request against a running task is recorded in ``control`` and the state becomes
``pausing``/``cancelling``; the runner acts at its next checkpoint. Each transition is one
conditional UPDATE, so racing requests cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUED, RUNNING, PAUSING, PAUSED = "queued", "running", "pausing", "paused"
CANCELLING, CANCELLED, SUCCEEDED, FAILED = "cancelling", "cancelled", "succeeded", "failed"

ALL_STATES = (QUEUED, RUNNING, PAUSING, PAUSED, CANCELLING, CANCELLED, SUCCEEDED, FAILED)
TERMINAL = frozenset({CANCELLED, SUCCEEDED, FAILED})
HELD_BY_RUNNER = frozenset({RUNNING, PAUSING, CANCELLING})  # states in which a lease may be live
ACTIVE = frozenset({QUEUED, RUNNING, PAUSING, CANCELLING})  # count toward an owner's limit

PAUSE, CANCEL = "pause", "cancel"


@dataclass(frozen=True)
class Rule:
    """From any of ``sources`` a request moves the task to ``target`` with ``control`` set."""

    sources: tuple[str, ...]
    target: str
    control: str | None
    release_lease: bool = False


@dataclass(frozen=True)
class Action:
    rules: tuple[Rule, ...]
    already: frozenset[str]  # states where the request is already in effect: answer, change nothing


ACTIONS: dict[str, Action] = {
    "pause": Action(
        rules=(Rule((QUEUED,), PAUSED, None, release_lease=True), Rule((RUNNING,), PAUSING, PAUSE)),
        already=frozenset({PAUSING, PAUSED}),
    ),
    "resume": Action(
        # A pause the runner has not acted on yet is simply withdrawn.
        rules=(Rule((PAUSED,), QUEUED, None), Rule((PAUSING,), RUNNING, None)),
        already=frozenset({QUEUED, RUNNING}),
    ),
    "cancel": Action(
        rules=(
            # Nobody runs these: clear any stale lease so a runner claims the cleanup at once.
            Rule((QUEUED, PAUSED), CANCELLING, CANCEL, release_lease=True),
            Rule((RUNNING, PAUSING), CANCELLING, CANCEL),
        ),
        already=frozenset({CANCELLING, CANCELLED}),
    ),
}

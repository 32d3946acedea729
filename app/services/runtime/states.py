"""The task state machine.

    queued ──claim──▶ running ────────────────────────────────────────▶ succeeded
      │  ▲              │  ▲    error: retry → queued; on the last attempt (or its runner
      │  │       pause  ▼  │    lost on it) → failing ──cleanup──▶ failed
      │  │           pausing ──runner stops at checkpoint──▶ paused
      │  └──────────────────── resume ──────────────────────────┘
      └─ cancel (queued, running, pausing, paused) ─▶ cancelling ─cleanup─▶ cancelled

A request against a running task is recorded in ``control`` and the state becomes
``pausing``/``cancelling``; the runner acts at its next checkpoint. Each transition is one
conditional UPDATE, so racing requests cannot both win.

``failing`` is the twin of ``cancelling``: whichever replica claims it runs the kind's cleanup
under a lease (again after a crash, so cleanups are idempotent), then a fenced move ends it
``failed`` with its error kept. Like a failed task, it answers 409 to every control request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TaskState(StrEnum):
    """A task's ``state`` column; the values are the strings stored and sent."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    FAILING = "failing"
    FAILED = "failed"


class Control(StrEnum):
    """A task's ``control`` column: the request its runner acts on at the next checkpoint."""

    PAUSE = "pause"
    CANCEL = "cancel"


# Module-level names, so the rest of the runtime reads ``S.RUNNING``.
QUEUED, RUNNING, PAUSING, PAUSED, CANCELLING, CANCELLED, SUCCEEDED, FAILING, FAILED = TaskState
PAUSE, CANCEL = Control

ALL_STATES = tuple(TaskState)
TERMINAL = frozenset({CANCELLED, SUCCEEDED, FAILED})
HELD_BY_RUNNER = frozenset({RUNNING, PAUSING, CANCELLING, FAILING})  # states in which a lease may be live
# Still holding what they made (a staging table, a partial file): they count toward the limits.
ACTIVE = frozenset({QUEUED, RUNNING, PAUSING, CANCELLING, FAILING})
# A runner claims these to run the kind's cleanup; the task then ends in the mapped state.
AFTER_CLEANUP: dict[str, TaskState] = {CANCELLING: CANCELLED, FAILING: FAILED}


@dataclass(frozen=True)
class Rule:
    """From any of ``sources`` a request moves the task to ``target`` with ``control`` set."""

    sources: tuple[TaskState, ...]
    target: TaskState
    control: Control | None
    release_lease: bool = False


@dataclass(frozen=True)
class Action:
    rules: tuple[Rule, ...]
    already: frozenset[TaskState]  # states where the request is already in effect: answer, change nothing


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

"""The task runtime: one owner for how a task runs.

    engine   claim loop, run a kind, settle how it ended       (imports all below, none import it)
    leases   every write on ``tasks`` fenced by a runner's lease
    context  TaskContext, what a running kind sees; RuntimeDeps, what the engine shares
    upkeep   heartbeat, reaper, progress writer
    states   TaskState and the control rules;  kinds: the plug-in API;  bus, events: wake-ups
    tasks    tasks as the API sees them: create, find, control, watch

A kind plugs in through :mod:`app.services.runtime.kinds` alone (``TaskKind``, ``task_kind``,
``KindParams``, ``TaskContext``).
"""

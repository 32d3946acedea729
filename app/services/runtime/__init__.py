"""The task runtime: engine, leases and fenced writes, task context, upkeep, states, kinds, bus.

A kind plugs in through :mod:`app.services.runtime.kinds` (``TaskKind``, ``task_kind``,
``KindParams``) and sees only its :class:`~app.services.runtime.runner.TaskContext`.
"""

"""What ``tsm`` shows: rich progress bars on stderr, tables or JSON on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress
from rich.progress import Task as RichTask
from rich.table import Table
from rich.text import Text

from clients._base import ByteProgress, TaskProgress
from clients.models import FileInfo, Progress, Task

stdout = Console(soft_wrap=True)
if not stdout.is_terminal:
    stdout = Console(soft_wrap=True, width=250)  # piped: never wrap table rows
stderr = Console(stderr=True, soft_wrap=True)


def plain(value: Any) -> Any:
    """Models and dataclasses → JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def emit_json(value: Any, *, line: bool = False) -> None:
    text = json.dumps(plain(value), separators=(",", ":")) if line else json.dumps(plain(value), indent=2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def human_bytes(count: float | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def _percent(task: Task) -> str:
    p = task.progress
    if p.percent is not None:
        return f"{p.percent:.0f}%"
    return f"{p.done:g} {p.unit}".strip() if p.done else ""


def tasks_table(tasks: list[Task]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "KIND", "STATE", "PROGRESS", "CREATED"):
        table.add_column(column, no_wrap=column == "ID")
    for task in tasks:
        created = task.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(task.id, task.kind, task.state, _percent(task), created)
    return table


def files_table(files: list[FileInfo]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "SIZE", "STATE", "ORIGIN", "CREATED"):
        table.add_column(column, no_wrap=column == "ID")
    for item in files:
        created = item.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if item.created_at else ""
        size = human_bytes(item.length)
        if item.state == "uploading" and item.length:
            size = f"{human_bytes(item.offset)} / {size}"
        table.add_row(item.id, item.filename or "", size, item.state, item.origin or "", created)
    return table


def show_task(task: Task) -> None:
    p = task.progress
    lines = [
        ("id", task.id),
        ("kind", task.kind),
        ("state", task.state + (f" (control: {task.control})" if task.control else "")),
        ("progress", f"{p.done:g}/{p.total:g} {p.unit}" if p.total else f"{p.done:g} {p.unit}"),
        ("percent", f"{p.percent}%" if p.percent is not None else ""),
        ("rate", f"{p.rate:.1f} {p.unit}/s" if p.rate else ""),
        ("eta", f"{p.eta_seconds:.0f}s" if p.eta_seconds is not None else ""),
        ("attempts", f"{task.attempts}/{task.max_attempts}"),
        ("params", json.dumps(task.params)),
        ("result", json.dumps(task.result) if task.result is not None else ""),
        ("error", task.error or ""),
        ("created", task.created_at.isoformat()),
        ("finished", task.finished_at.isoformat() if task.finished_at else ""),
    ]
    for key, value in lines:
        if value:
            stdout.print(f"[bold]{key:>9}[/bold]  {value}", highlight=False)


class _TaskRate(ProgressColumn):
    """Rate and ETA as the server measures them (units per second over the last seconds)."""

    def render(self, task: RichTask) -> Text:
        rate, eta, unit = task.fields.get("rate"), task.fields.get("eta"), task.fields.get("unit", "")
        speed = f"{human_bytes(rate)}/s" if rate and unit == "B" else f"{rate:,.1f} {unit}/s" if rate else ""
        parts = [speed, f"ETA {eta:,.0f}s" if eta is not None else ""]
        return Text("  ".join(p for p in parts if p), style="progress.data.speed")


class Bars:
    """Progress bars on stderr; invisible when stderr is not a terminal or output is JSON/quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and stderr.is_terminal
        self.last: tuple[float, float | None] = (0, None)  # the latest (done, total), for messages

    @contextmanager
    def bytes(self, label: str) -> Iterator[ByteProgress]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with RichProgress(*columns, console=stderr, disable=not self.enabled, transient=False) as bar:
            job = bar.add_task(label, total=None)

            def update(done: int, total: int | None) -> None:
                self.last = (done, total)
                bar.update(job, completed=done, total=total)

            yield update

    @contextmanager
    def task(self, label: str) -> Iterator[TaskProgress]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[shown]}"),
            _TaskRate(),
        )
        with RichProgress(*columns, console=stderr, disable=not self.enabled) as bar:
            job = bar.add_task(label, total=None, unit="", shown="", rate=None, eta=None)

            def update(p: Progress) -> None:
                self.last = (p.done, p.total)
                if p.unit in ("bytes", "B"):  # an import's progress is bytes of its file
                    shown = f"{human_bytes(p.done)}/{human_bytes(p.total)}"
                else:
                    shown = f"{p.done:,.0f}/{p.total:,.0f} {p.unit}" if p.total else f"{p.done:,.0f} {p.unit}"
                state = (p.model_extra or {}).get("state")  # progress events carry the task's state
                label_now = f"{label} ({state})" if state else label
                bar.update(
                    job,
                    completed=p.done,
                    total=p.total,
                    unit="B" if p.unit == "bytes" else p.unit,
                    shown=shown,
                    rate=p.rate,
                    eta=p.eta_seconds,
                    description=label_now,
                )

            yield update

"""What ``tsm`` shows: rich progress bars on stderr, tables or JSON on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
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
)
from rich.progress import Progress as RichProgress
from rich.progress import Task as RichTask
from rich.table import Table
from rich.text import Text

from clients._base import ByteProgress, TaskProgress
from clients.models import CsvPreview, FileInfo, Progress, Task

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


def human_count(count: float | None) -> str:
    """``1234567`` → ``1,234,567``."""
    return "?" if count is None else f"{count:,.0f}"


def human_duration(seconds: float | None) -> str:
    """``0.42`` → ``0.4s``, ``75`` → ``1m 15s``, ``7322`` → ``2h 2m``."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def human_amount(value: float | None, unit: str) -> str:
    """An amount in a task's unit: bytes in binary units, anything else with thousands separators."""
    if unit in ("bytes", "B"):
        return human_bytes(value)
    return f"{human_count(value)} {unit}".strip()


def human_rate(rate: float | None, unit: str) -> str:
    if not rate:
        return ""
    return f"{human_bytes(rate)}/s" if unit in ("bytes", "B") else f"{rate:,.1f} {unit}/s"


def _percent(task: Task) -> str:
    p = task.progress
    if p.percent is not None:
        return f"{p.percent:.0f}%"
    return human_amount(p.done, p.unit) if p.done else ""


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


def show_preview(preview: CsvPreview) -> None:
    """The dialect in one line, then the first rows under their column names and inferred types."""
    dialect = preview.dialect
    names = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}
    delimiter = names.get(str(dialect.get("delimiter")), repr(dialect.get("delimiter")))
    header = "a header line" if dialect.get("header") else "no header line"
    quote, sampled = dialect.get("quote"), preview.sampled_records
    print(f"{delimiter}-separated, quote {quote!s}, {header}; types from {sampled:,} records")
    table = Table(box=None, pad_edge=False)
    for column in preview.columns:
        table.add_column(f"{column['name']}\n[dim]{column['type']}[/dim]", overflow="fold")
    for row in preview.rows:
        table.add_row(*("" if value is None else value for value in row))
    stdout.print(table)


def progress_text(p: Progress) -> str:
    """``63.4 MiB / 63.4 MiB``, ``1,500,000 / 1,500,000 rows``."""
    if p.total:
        done, total = human_amount(p.done, p.unit), human_amount(p.total, p.unit)
        unit = "" if p.unit in ("bytes", "B") else f" {p.unit}"
        return f"{done.removesuffix(unit)} / {total}" if unit else f"{done} / {total}"
    return human_amount(p.done, p.unit)


def is_state(state: str) -> str:
    """``task X <is_state>``: "succeeded", "failed", "was cancelled", or "is <state>" while it lives."""
    return {"succeeded": "succeeded", "failed": "failed", "cancelled": "was cancelled"}.get(state, f"is {state}")


def outcome(task: Task) -> str:
    """What a finished import or export did, in words: rows, rejects, size, duration and rate."""
    result = task.result or {}
    if task.kind == "import_csv" and "rows" in result:
        parts = [f"{human_count(result['rows'])} rows imported into {result.get('table')}"]
        rejected = result.get("rejected") or 0
        parts.append(f"{human_count(rejected)} rejected")
        if result.get("bytes") is not None:
            parts.append(f"from {human_bytes(result['bytes'])}")
        if result.get("seconds") is not None:
            parts.append(f"in {human_duration(result['seconds'])}")
        if result.get("rows_per_second"):
            parts.append(f"({human_count(result['rows_per_second'])} rows/s)")
        return ", ".join(parts[:2]) + (" " + " ".join(parts[2:]) if parts[2:] else "")
    if task.kind == "export_csv" and "file_id" in result:
        rows = result.get("rows")
        size = result.get("bytes") if result.get("bytes") is not None else result.get("size")
        text = f"{human_count(rows)} rows" if rows is not None else "exported"
        if size is not None:
            text += f", {human_bytes(size)}"
        return f"{text} in file {result['file_id']}"
    return ""


def reject_hint(task: Task) -> str:
    """How to fetch an import's reject file, or "" when it has none."""
    file_id = (task.result or {}).get("reject_file_id")
    if not isinstance(file_id, str):
        return ""
    return f"rejected records are in file {file_id}; download them with: tsm download {file_id}"


def show_task(task: Task) -> None:
    p = task.progress
    lines = [
        ("id", task.id),
        ("kind", task.kind),
        ("state", task.state + (f" (control: {task.control})" if task.control else "")),
        ("progress", progress_text(p)),
        ("percent", f"{p.percent:.1f}%" if p.percent is not None else ""),
        ("rate", human_rate(p.rate, p.unit)),
        ("eta", human_duration(p.eta_seconds) if p.eta_seconds is not None else ""),
        ("outcome", outcome(task)),
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
        parts = [human_rate(rate, unit), f"ETA {human_duration(eta)}" if eta is not None else ""]
        return Text("  ".join(p for p in parts if p), style="progress.data.speed")


class _ByteRate(ProgressColumn):
    """Bytes per second in the same binary units as the sizes beside it (rich's own is decimal)."""

    def render(self, task: RichTask) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{human_bytes(speed)}/s", style="progress.data.speed")


class Bars:
    """Progress bars on stderr; invisible when stderr is not a terminal or output is JSON/quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and stderr.is_terminal
        self.last: tuple[float, float | None] = (0, None)  # the latest (done, total), for messages
        self.note: Callable[[str], None] = lambda _text: None  # a word on the current bar ("retrying …")

    @contextmanager
    def bytes(self, label: str) -> Iterator[ByteProgress]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            _ByteRate(),
            TimeRemainingColumn(),
        )
        with RichProgress(*columns, console=stderr, disable=not self.enabled, transient=False) as bar:
            job = bar.add_task(label, total=None, visible=False)  # shown once something has moved

            def update(done: int, total: int | None) -> None:
                self.last = (done, total)
                bar.update(job, completed=done, total=total, visible=True)

            def note(text: str) -> None:
                bar.update(job, description=f"{label} [yellow]({text})[/yellow]" if text else label)

            self.note = note
            try:
                yield update
            finally:
                self.note = lambda _text: None

    @contextmanager
    def task(self, label: str) -> Iterator[TaskProgress]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[shown]}"),
            _TaskRate(),
        )
        with RichProgress(*columns, console=stderr, disable=not self.enabled) as bar:
            job = bar.add_task(label, total=None, unit="", shown="", rate=None, eta=None, visible=False)

            def update(p: Progress) -> None:
                self.last = (p.done, p.total)
                shown = progress_text(p)
                rows = (p.model_extra or {}).get("rows")  # an import's progress is bytes; rows beside
                if isinstance(rows, int | float):
                    shown += f"  {human_count(rows)} rows"
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
                    visible=True,
                )

            yield update

"""``tsm``: drive Task State Manager from a shell.

    tsm upload FILE                     tsm tasks ls | show | pause | resume | cancel | watch ID
    tsm download ID [-o PATH]           tsm tasks start KIND [-p key=value …] [--wait]
    tsm import FILE --table T [--wait]  tsm files ls | show ID | rm ID …
    tsm export TABLE [-o PATH]          tsm kinds

Server and key come from ``--server``/``--token`` or ``TSM_SERVER``/``TSM_TOKEN``. ``--json``
prints machine-readable results on stdout; progress and errors always go to stderr.
Ctrl-C stops a transfer cleanly (run the same command again to resume); during a wait for a
server task it offers to pause the task or leave it running.

Exit codes (see ``EXIT_CODES``): 0 ok, 1 other error, 2 bad usage or input, 3 server unreachable,
4 authentication, 5 not found, 6 conflict with the current state, 7 task ended failed/cancelled,
8 integrity check failed, 9 timed out, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from clients import errors as E
from clients._cli_output import (
    Bars,
    emit_json,
    files_table,
    human_bytes,
    human_duration,
    is_state,
    outcome,
    reject_hint,
    show_preview,
    show_task,
    stdout,
    tasks_table,
)
from clients.client import Client
from clients.models import Event, FileInfo, Task

OK, FAILURE, USAGE, UNREACHABLE, AUTH, NOT_FOUND, CONFLICT, TASK_ENDED, INTEGRITY, TIMEOUT = range(10)
INTERRUPTED = 130
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (E.ConnectionFailed, UNREACHABLE),
    (E.Unauthorized, AUTH),
    (E.Forbidden, AUTH),
    (E.NotFound, NOT_FOUND),
    (E.Gone, NOT_FOUND),
    (E.Conflict, CONFLICT),
    (E.Locked, CONFLICT),
    (E.PreconditionFailed, CONFLICT),
    (E.BadRequest, USAGE),
    (E.Unprocessable, USAGE),
    (E.TaskEnded, TASK_ENDED),
    (E.IntegrityError, INTEGRITY),
    (E.WaitTimeout, TIMEOUT),
]
try:
    VERSION = metadata.version("task-state-manager")
except metadata.PackageNotFoundError:  # run from a source tree
    VERSION = "0.1.0"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PREFIX = re.compile(r"^[0-9a-f-]{1,36}$")
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def size(text: str) -> int:
    """``8M``, ``512k``, ``1.5GiB``, ``1000`` → bytes (powers of 1024)."""
    match = SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 8M, 512K, 1G)")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2).lower() or "_"))


def param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


class Session:
    """One invocation: the client, the output mode, and what to say when interrupted."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = args.json
        self.client = Client(args.server, args.token, retries=args.retries, timeout=args.timeout)
        self.bars = Bars(enabled=not (args.json or args.quiet))
        self.on_interrupt: Callable[[], None] = lambda: None
        self.client.operations.on_retry = lambda text: self.bars.note(f"retrying: {text}" if text else "")

    def resolve(self, what: str, given: str) -> str:
        """A full id from any unique prefix of one of your tasks' or files' ids."""
        given = given.strip().lower()
        if UUID.match(given) or not PREFIX.match(given):
            return given
        listing = self.client.iter_tasks if what == "task" else self.client.iter_files
        found = sorted({item.id for item in listing() if item.id.startswith(given)})
        if not found:
            raise E.NotFound(f"no {what} whose id starts with {given!r}", status=404, title="Not Found")
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (" …" if len(found) > 5 else "")
            raise E.BadRequest(
                f"{what} id prefix {given!r} is ambiguous: {len(found)} match ({shown}); give more characters",
                status=400,
                title="Ambiguous id",
            )
        return found[0]

    def say(self, message: str) -> None:
        if not self.args.quiet:
            print(message, file=sys.stderr)

    def transfer_interrupted(self, verb: str, hint: str = "run the same command again to resume") -> Callable[[], None]:
        def note() -> None:
            done, total = self.bars.last
            moved = f" after {human_bytes(done)} of {human_bytes(total)}" if total else ""
            self.say(f"{verb} interrupted{moved}; {hint}")

        return note

    def wait(self, task_id: str, until: str | tuple[str, ...] = ("succeeded", "failed", "cancelled")) -> Task:
        """Wait with a progress bar; Ctrl-C offers to pause the task or leave it running."""
        self.on_interrupt = lambda: self._interrupted_wait(task_id)
        with self.bars.task(f"task {task_id[:8]}") as update:
            task = self.client.wait(task_id, until, on_progress=update)
        self.on_interrupt = lambda: None
        return task

    def _interrupted_wait(self, task_id: str) -> None:
        if not sys.stdin.isatty():
            self.say(f"stopped waiting; task {task_id} is still running (tsm tasks pause {task_id} to pause it)")
            return
        print(f"\nPause task {task_id}? [p]ause / [L]eave it running: ", end="", file=sys.stderr, flush=True)
        try:
            answer = input().strip().lower()
        except (KeyboardInterrupt, EOFError):
            answer = ""
        if answer.startswith("p"):
            try:
                task = self.client.pause(task_id)
            except E.Conflict:  # it ended (or was paused elsewhere) while the question was open
                task = self.client.get_task(task_id)
                self.say(f"task {task_id} {is_state(task.state)}; there is nothing to pause")
                return
            self.say(f"task {task_id} is {task.state}; resume it with: tsm tasks resume {task_id}")
        else:
            self.say(f"task {task_id} left running; watch it with: tsm tasks watch {task_id}")

    def output(self, value: Any, human: Callable[[], None]) -> None:
        if self.json:
            emit_json(value)
        else:
            human()


# ---- commands ------------------------------------------------------------------------------


def cmd_upload(s: Session) -> int:
    a = s.args
    s.on_interrupt = s.transfer_interrupted("upload")
    checksum = None if a.checksum == "none" else a.checksum
    with s.bars.bytes(f"upload {os.path.basename(a.file)}") as update:
        result = s.client.upload(
            a.file, checksum=checksum, chunk_size=a.chunk_size, limit_rate=a.limit_rate, on_progress=update
        )
    resumed = f" (resumed at {human_bytes(result.resumed_from)})" if result.resumed_from else ""
    s.output(result, lambda: print(f"uploaded {a.file} as {result.file_id}{resumed}"))
    return OK


def cmd_download(s: Session) -> int:
    a = s.args
    a.id = s.resolve("file", a.id)
    s.on_interrupt = s.transfer_interrupted("download")
    with s.bars.bytes(f"download {a.id[:8]}") as update:
        result = s.client.download(
            a.id, a.output, verify=not a.no_verify, overwrite=a.force, limit_rate=a.limit_rate, on_progress=update
        )
    resumed = f" (resumed at {human_bytes(result.resumed_from)})" if result.resumed_from else ""
    checks = f", verified {' and '.join(result.verified)}" if result.verified else ""
    s.output(result, lambda: print(f"downloaded {result.path}, {human_bytes(result.size)}{resumed}{checks}"))
    return OK


def cmd_import(s: Session) -> int:
    a = s.args
    s.on_interrupt = s.transfer_interrupted("upload")
    params = dict(a.param or [])
    with s.bars.bytes(f"upload {os.path.basename(a.file)}") as update:
        task = s.client.import_csv(a.file, a.table, mode=a.mode, on_upload_progress=update, **params)
    s.on_interrupt = lambda: None
    if a.wait:
        s.say(f"import task {task.id} started")
        task = s.wait(task.id, "succeeded")
    s.output(task, lambda: report(task, "import"))
    return OK


def report(task: Task, what: str) -> None:
    """A task's line: its state, and for a finished import or export what it did."""
    print(f"{what} task {task.id} {is_state(task.state)}" + (f": {done}" if (done := outcome(task)) else ""))
    if hint := reject_hint(task):
        print(hint)


def cmd_export(s: Session) -> int:
    a = s.args
    task_id = s.resolve("task", a.task) if a.task else None
    task_id = task_id or s.client.create_task("export_csv", {"table": a.table, **dict(a.param or [])}).id
    s.say(f"export task {task_id} started" if not a.task else f"export task {task_id}")
    task = s.wait(task_id, "succeeded")
    file_id = (task.result or {}).get("file_id")
    if not isinstance(file_id, str):
        raise E.ProtocolError(f"export task {task_id} succeeded without a file_id in its result")
    s.on_interrupt = s.transfer_interrupted("download", f"resume with: tsm export {a.table} --task {task_id}")
    with s.bars.bytes(f"download {a.table}.csv") as update:
        result = s.client.download(file_id, a.output, overwrite=a.force, on_progress=update)
    rows = (task.result or {}).get("rows")
    counted = f"{rows:,} rows, " if isinstance(rows, int) else ""
    took = (task.finished_at - task.started_at).total_seconds() if task.finished_at and task.started_at else None
    timing = f" (export took {human_duration(took)})" if took is not None else ""
    line = f"exported {a.table} to {result.path}: {counted}{human_bytes(result.size)}{timing}"
    s.output({"task": task, "download": result}, lambda: print(line))
    return OK


def cmd_tasks(s: Session) -> int:
    a, c = s.args, s.client
    if a.action == "ls":
        items: list[Task]
        page: dict[str, Any]
        if a.all:
            items = list(c.iter_tasks(state=a.state, kind=a.kind))
            page = {"items": items, "next_cursor": None}
        else:
            got = c.list_tasks(state=a.state, kind=a.kind, limit=a.limit, cursor=a.cursor)
            items, page = got.items, {"items": got.items, "next_cursor": got.next_cursor}
        s.output(page, lambda: stdout.print(tasks_table(items)))
        return OK
    if a.action == "start":
        task = c.create_task(a.id, dict(a.param or []), max_attempts=a.max_attempts)
        if a.wait:
            s.say(f"task {task.id} started")
            task = s.wait(task.id, "succeeded")
        s.output(task, lambda: report(task, task.kind))
        return OK
    a.id = s.resolve("task", a.id)
    if a.action == "watch":
        return _watch(s, a.id)
    action = {"show": c.get_task, "pause": c.pause, "resume": c.resume, "cancel": c.cancel}[a.action]
    task = action(a.id)
    if a.action != "show" and getattr(a, "wait", False):
        target = {"pause": ("paused",), "resume": ("running", "succeeded"), "cancel": ("cancelled",)}[a.action]
        task = s.wait(task.id, (*target, "succeeded", "failed", "cancelled"))
    s.output(task, lambda: show_task(task) if a.action == "show" else print(f"task {task.id} {is_state(task.state)}"))
    return OK


def _watch(s: Session, task_id: str) -> int:
    if not s.json:
        task = s.wait(task_id)
        print(f"task {task.id} {is_state(task.state)}" + (f": {task.error}" if task.error else ""))
        if done := outcome(task):
            print(done)
        if hint := reject_hint(task):
            print(hint)
        return OK if task.state == "succeeded" else TASK_ENDED
    s.on_interrupt = lambda: s._interrupted_wait(task_id)
    last: Event | None = None
    for last in s.client.events(task_id):
        emit_json({"event": last.type, "id": last.id, "data": last.data}, line=True)
    final = last.task if last is not None else None
    return OK if final is not None and final.state == "succeeded" else TASK_ENDED


def cmd_files(s: Session) -> int:
    a, c = s.args, s.client
    filters = {k: v for k, v in {"state": a.state, "origin": a.origin}.items() if v} if a.action == "ls" else {}
    if a.action == "ls":
        items: list[FileInfo]
        page: dict[str, Any]
        if a.all:
            items = list(c.iter_files(**filters))
            page = {"items": items, "next_cursor": None}
        else:
            got = c.list_files(limit=a.limit, cursor=a.cursor, **filters)
            items, page = got.items, {"items": got.items, "next_cursor": got.next_cursor}
        s.output(page, lambda: stdout.print(files_table(items)))
    elif a.action == "show":
        info = c.file_info(s.resolve("file", a.ids[0]))
        s.output(info, lambda: stdout.print_json(info.model_dump_json()))
    elif a.action == "preview":
        preview = c.preview_csv(s.resolve("file", a.ids[0]), rows=a.rows, **dict(a.param or []))
        s.output(preview, lambda: show_preview(preview))
    else:
        a.ids = [s.resolve("file", file_id) for file_id in a.ids]
        for file_id in a.ids:
            c.delete_file(file_id)
        s.output({"deleted": a.ids}, lambda: print(f"deleted {', '.join(a.ids)}"))
    return OK


def cmd_kinds(s: Session) -> int:
    kinds = s.client.kinds()

    def human() -> None:
        for kind in kinds:
            print(f"{kind.name:<16} {kind.description}")

    s.output(kinds, human)
    return OK


# ---- parser and entry point ----------------------------------------------------------------


def add_listing(parser: argparse.ArgumentParser, *filters: str) -> None:
    """The options every `ls` shares: its filters, then paging."""
    for option in filters:
        parser.add_argument(option, help=FILTERS[option])
    parser.add_argument("--limit", type=int, default=50, help="items per page, 1-500 (default 50)")
    parser.add_argument("--cursor", help="the next_cursor of the previous page (default: the first page)")
    parser.add_argument("--all", action="store_true", help="follow the cursor to the end (default: one page)")


FILTERS = {
    "--state": "only this state (tasks: queued, running, pausing, paused, cancelling, cancelled, succeeded, "
    "failing, failed; files: uploading, complete …) (default: all)",
    "--kind": "only this task kind, see `tsm kinds` (default: all)",
    "--origin": "only files of this origin: upload, export, rejects … (default: all)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsm", description="Task State Manager command line. Any unique prefix of an id is accepted."
    )
    parser.add_argument("--version", action="version", version=f"tsm {VERSION}")
    parser.add_argument(
        "--server",
        default=os.environ.get("TSM_SERVER"),
        help="server URL; http:// is assumed without a scheme (default: $TSM_SERVER, else http://127.0.0.1:8000)",
    )
    parser.add_argument("--token", default=os.environ.get("TSM_TOKEN"), help="API key (default: $TSM_TOKEN, none)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout (default: text)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes (default: shown)")
    parser.add_argument("--retries", type=int, default=5, help="retries on network errors (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per network operation (default 30)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("upload", help="upload a file (resumable: run again to continue)")
    up.add_argument("file", help="the local file to upload")
    up.add_argument(
        "--checksum",
        default="auto",
        choices=("auto", "sha256", "sha1", "md5", "none"),
        help="per-chunk checksum: auto, sha256, sha1, md5 or none (default auto: the best the server offers)",
    )
    up.add_argument("--chunk-size", type=size, default=None, help="bytes per request, e.g. 8M (default 8M)")
    up.add_argument("--limit-rate", type=size, default=None, help="max bytes per second, e.g. 2M (default: no limit)")
    up.set_defaults(run=cmd_upload)

    down = sub.add_parser("download", help="download a file (resumable: run again to continue)")
    down.add_argument("id", help="the file id (or a unique prefix of it)")
    down.add_argument(
        "-o", "--output", help="file or folder to write (default: the file's name, in the current folder)"
    )
    down.add_argument("--limit-rate", type=size, default=None, help="max bytes per second, e.g. 2M (default: no limit)")
    down.add_argument("--no-verify", action="store_true", help="skip the sha256 check (default: verify)")
    down.add_argument("-f", "--force", action="store_true", help="replace an existing file (default: refuse)")
    down.set_defaults(run=cmd_download)

    imp = sub.add_parser("import", help="import a CSV file (or an uploaded file id) into a table")
    imp.add_argument("file", help="a local CSV file (uploaded first) or the id of an uploaded file")
    imp.add_argument("--table", required=True, help="target table (required)")
    imp.add_argument(
        "--mode",
        choices=("create", "replace", "append"),
        help="create fails if the table exists; replace or append to it (default create)",
    )
    imp.add_argument(
        "-p",
        "--param",
        type=param,
        action="append",
        help="extra import parameter key=value, repeatable (default: none)",
    )
    imp.add_argument(
        "--wait", action="store_true", help="wait until the import has finished (default: return once started)"
    )
    imp.set_defaults(run=cmd_import)

    exp = sub.add_parser("export", help="export a table to CSV and download it")
    exp.add_argument("table", help="the table to export")
    exp.add_argument("-o", "--output", help="file or folder to write (default: TABLE.csv, in the current folder)")
    exp.add_argument(
        "-p",
        "--param",
        type=param,
        action="append",
        help="extra export parameter key=value, repeatable (default: none)",
    )
    exp.add_argument("--task", help="pick up an existing export task instead of starting one (default: start one)")
    exp.add_argument("-f", "--force", action="store_true", help="replace an existing file (default: refuse)")
    exp.set_defaults(run=cmd_export)

    tasks = sub.add_parser("tasks", help="list, inspect and control tasks").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add_listing(tasks.add_parser("ls", help="list your tasks, newest first"), "--state", "--kind")
    for name, text in (("show", "show one task"), ("watch", "follow a task's progress until it ends")):
        tasks.add_parser(name, help=text).add_argument("id", help="the task id (or a unique prefix of it)")
    for name in ("pause", "resume", "cancel"):
        control = tasks.add_parser(name, help=f"{name} a task")
        control.add_argument("id", help="the task id (or a unique prefix of it)")
        control.add_argument(
            "--wait", action="store_true", help="wait until the request has taken effect (default: return at once)"
        )
    start = tasks.add_parser("start", help="start a task of any kind")
    start.add_argument("id", metavar="KIND", help="a task kind; `tsm kinds` lists them")
    start.add_argument(
        "-p", "--param", type=param, action="append", help="task parameter key=value, repeatable (default: none)"
    )
    start.add_argument("--max-attempts", type=int, help="runs allowed before it fails (default: the server's)")
    start.add_argument("--wait", action="store_true", help="wait until it has finished (default: return once started)")
    for parser_ in tasks.choices.values():
        parser_.set_defaults(run=cmd_tasks)

    files = sub.add_parser("files", help="list, inspect and delete files").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add_listing(files.add_parser("ls", help="list your files, newest first"), "--state", "--origin")
    files.add_parser("show", help="show one file").add_argument(
        "ids", nargs=1, metavar="ID", help="the file id (or a unique prefix of it)"
    )
    preview = files.add_parser("preview", help="show how import would read a CSV file: dialect, columns, types, rows")
    preview.add_argument("ids", nargs=1, metavar="ID", help="the file id (or a unique prefix of it)")
    preview.add_argument("--rows", type=int, default=10, help="data records to show (default: 10)")
    preview.add_argument(
        "-p",
        "--param",
        action="append",
        type=param,
        metavar="KEY=VALUE",
        help="a reading option: delimiter, quote, header, encoding, null (default: sniffed)",
    )
    files.add_parser("rm", help="delete files (or cancel unfinished uploads)").add_argument(
        "ids", nargs="+", metavar="ID", help="file ids (or unique prefixes)"
    )
    for parser_ in files.choices.values():
        parser_.set_defaults(run=cmd_files)

    sub.add_parser("kinds", help="list the task kinds the server runs").set_defaults(run=cmd_kinds)
    return parser


def describe_error(exc: E.TSMError, args: argparse.Namespace) -> str:
    """The error line; a bare "404 Not Found: Not Found" names what was looked for."""
    text = str(exc)
    if isinstance(exc, E.NotFound) and exc.detail.strip().lower() in ("not found", exc.title.strip().lower()):
        ids = getattr(args, "ids", None) or [getattr(args, "id", None) or getattr(args, "file", None)]
        what = {"files": "file", "download": "file", "import": "file"}.get(args.command, "task")
        named = ", ".join(str(i) for i in ids if i)
        if named:
            text = f"{exc.status} {exc.title}: no {what} {named}"
    return text


def exit_code(exc: BaseException) -> int:
    return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), FAILURE)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    session = Session(args)
    run: Callable[[Session], int] = args.run
    try:
        return run(session)
    except KeyboardInterrupt:
        session.on_interrupt()
        return INTERRUPTED
    except E.TSMError as exc:
        print(f"tsm: error: {describe_error(exc, args)}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:  # a local file: missing input, unwritable output
        text = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        print(f"tsm: error: {text}", file=sys.stderr)
        return FAILURE
    finally:
        session.client.close()


if __name__ == "__main__":
    raise SystemExit(main())

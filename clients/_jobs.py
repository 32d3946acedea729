"""Imports and exports: the ``import_csv`` / ``export_csv`` task kinds, with the transfers around them.

import_csv(path)  = dry run {table, mode…} ─▶ upload (resumable) ─▶ create task import_csv {file_id, …}
                    [─▶ wait]; a refused task deletes the upload it would have read
import_csv(id)    =                       create task import_csv {file_id, table, mode…} [─▶ wait]
export_csv(table) = create task export_csv {table…} ─▶ wait succeeded ─▶ download result.file_id
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

from clients._base import ByteProgress, TaskProgress
from clients._core import Op
from clients._download import DownloadOps
from clients._tasks import TaskOps
from clients.errors import ProtocolError, TSMError
from clients.models import CsvPreview, DownloadResult, Task


class Operations(TaskOps, DownloadOps):
    """Every operation: tasks, files and transfers, and the imports and exports built from them."""

    def import_csv(
        self,
        /,
        source: str | os.PathLike[str],
        table: str,
        *,
        mode: str | None = None,
        wait: bool = False,
        on_upload_progress: ByteProgress | None = None,
        on_progress: TaskProgress | None = None,
        **params: Any,
    ) -> Op[Task]:
        """Import a CSV into ``table``: ``source`` is a local path (uploaded first) or a file id.

        Extra keyword arguments are passed to the ``import_csv`` kind as parameters. With
        ``wait=True`` returns once the task has succeeded (:class:`TaskEnded` otherwise).
        ``on_upload_progress(done, total)``: bytes of the upload; ``on_progress(progress)``: the
        import task's :class:`Progress` while waiting, in the task's unit.
        """
        file_id = str(source)
        if not Path(source).is_file() and any(sep in file_id for sep in "/\\."):
            # Looks like a path, not an id: say so instead of sending the server a bogus file id.
            raise FileNotFoundError(errno.ENOENT, "No such file", file_id)
        params = {"table": table, **params}
        if mode is not None:
            params["mode"] = mode
        if not Path(source).is_file():
            task = yield from self.create_task("import_csv", {"file_id": file_id, **params})
        else:
            # Table, mode, params, limits: everything but the file is checked before a byte is sent.
            yield from self.check_task("import_csv", params)
            uploaded = yield from self.upload(source, on_progress=on_upload_progress)
            try:
                task = yield from self.create_task("import_csv", {"file_id": uploaded.file_id, **params})
            except TSMError:
                with contextlib.suppress(TSMError):  # leave no orphaned upload behind
                    yield from self.delete_file(uploaded.file_id)
                raise
        if wait:
            task = yield from self.wait(task.id, "succeeded", on_progress=on_progress)
        return task

    def preview_csv(self, /, file_id: str, *, rows: int = 20, **options: Any) -> Op[CsvPreview]:
        """How ``import_csv`` would read an uploaded file: the dialect (sniffed unless given in
        ``options``: delimiter, quote, header, encoding, null), the columns and their inferred
        types, and the first ``rows`` records. Nothing is imported."""
        query = {"file_id": file_id, "rows": rows, **{k: _query_value(v) for k, v in options.items()}}
        return (yield from self.request_json("GET", "/previews/csv", CsvPreview.model_validate, params=query))

    def export_csv(
        self,
        /,
        table: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        on_progress: TaskProgress | None = None,
        on_download_progress: ByteProgress | None = None,
        **params: Any,
    ) -> Op[DownloadResult]:
        """Export ``table`` to CSV on the server, wait for it, then download it to ``dest``.

        ``on_progress(progress)``: the export task's :class:`Progress` (its unit: rows);
        ``on_download_progress(done, total)``: bytes of the download.
        """
        task = yield from self.create_task("export_csv", {"table": table, **params})
        return (yield from self._fetch_export(task.id, dest, on_progress, on_download_progress))

    def _fetch_export(
        self,
        task_id: str,
        dest: str | os.PathLike[str] | None,
        on_progress: TaskProgress | None,
        on_download_progress: ByteProgress | None,
    ) -> Op[DownloadResult]:
        task = yield from self.wait(task_id, "succeeded", on_progress=on_progress)
        file_id = (task.result or {}).get("file_id")
        if not isinstance(file_id, str):
            raise ProtocolError(f"export task {task.id} succeeded without a file_id in its result")
        return (yield from self.download(file_id, dest, on_progress=on_download_progress))

    def fetch_export(
        self,
        task_id: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        on_progress: TaskProgress | None = None,
        on_download_progress: ByteProgress | None = None,
    ) -> Op[DownloadResult]:
        """Wait for an existing ``export_csv`` task and download its file (to pick up after Ctrl-C).

        ``on_progress(progress)``: the export task's :class:`Progress` (its unit: rows);
        ``on_download_progress(done, total)``: bytes of the download.
        """
        return (yield from self._fetch_export(task_id, dest, on_progress, on_download_progress))


def _query_value(value: Any) -> str:
    """A query string value as the server parses it (booleans as true/false)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)

"""Imports and exports: the ``import_csv`` / ``export_csv`` task kinds, with the transfers around them.

import_csv(path)  = upload (resumable) ─▶ create task import_csv {file_id, table, mode…} [─▶ wait]
import_csv(id)    =                       create task import_csv {file_id, table, mode…} [─▶ wait]
export_csv(table) = create task export_csv {table…} ─▶ wait succeeded ─▶ download result.file_id
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clients._base import ProgressCallback
from clients._core import Op, operation
from clients._download import TransfersAPI
from clients._tasks import TasksAPI
from clients.errors import ProtocolError
from clients.models import DownloadResult, Progress, Task


class JobsAPI(TasksAPI, TransfersAPI):
    @operation
    def import_csv(
        self,
        source: str | os.PathLike[str],
        table: str,
        *,
        mode: str | None = None,
        wait: bool = False,
        on_upload_progress: ProgressCallback | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        **params: Any,
    ) -> Op[Task]:
        """Import a CSV into ``table``: ``source`` is a local path (uploaded first) or a file id.

        Extra keyword arguments are passed to the ``import_csv`` kind as parameters. With
        ``wait=True`` returns once the task has succeeded (:class:`TaskEnded` otherwise).
        """
        file_id = str(source)
        if not Path(source).is_file() and any(sep in file_id for sep in "/\\."):
            # Looks like a path, not an id: say so instead of sending the server a bogus file id.
            raise FileNotFoundError(errno.ENOENT, "No such file", file_id)
        if Path(source).is_file():
            uploaded = yield from TransfersAPI.upload.fn(self, source, on_progress=on_upload_progress)
            file_id = uploaded.file_id
        params = {"file_id": file_id, "table": table, **params}
        if mode is not None:
            params["mode"] = mode
        task = yield from TasksAPI.create_task.fn(self, "import_csv", params)
        if wait:
            task = yield from TasksAPI.wait.fn(self, task.id, "succeeded", on_progress=on_progress)
        return task

    @operation
    def export_csv(
        self,
        table: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_download_progress: ProgressCallback | None = None,
        **params: Any,
    ) -> Op[DownloadResult]:
        """Export ``table`` to CSV on the server, wait for it, then download it to ``dest``."""
        task = yield from TasksAPI.create_task.fn(self, "export_csv", {"table": table, **params})
        return (yield from self._fetch_export(task.id, dest, on_progress, on_download_progress))

    def _fetch_export(
        self,
        task_id: str,
        dest: str | os.PathLike[str] | None,
        on_progress: Callable[[Progress], None] | None,
        on_download_progress: ProgressCallback | None,
    ) -> Op[DownloadResult]:
        task = yield from TasksAPI.wait.fn(self, task_id, "succeeded", on_progress=on_progress)
        file_id = (task.result or {}).get("file_id")
        if not isinstance(file_id, str):
            raise ProtocolError(f"export task {task.id} succeeded without a file_id in its result")
        return (yield from TransfersAPI.download.fn(self, file_id, dest, on_progress=on_download_progress))

    @operation
    def fetch_export(
        self,
        task_id: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_download_progress: ProgressCallback | None = None,
    ) -> Op[DownloadResult]:
        """Wait for an existing ``export_csv`` task and download its file (to pick up after Ctrl-C)."""
        return (yield from self._fetch_export(task_id, dest, on_progress, on_download_progress))

"""Python client for Task State Manager: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both run one implementation of the API, so they behave identically. Each layer imports only
those below it:

    cli.py, _cli_output.py     the ``tsm`` command line: commands, bars, tables
    client.py                  Client, AsyncClient: the public calls (ClientAPI), one driver each
    _bind.py                   a public method made from an operation generator
    _jobs.py                   Operations: every operation; imports and exports
    _download.py               the download       (on the file operations of _files.py)
    _tasks.py, _files.py       task operations; file operations and the tus upload
    _base.py, _drivers.py      Core (settings, request helper); the blocking and asyncio drivers
    _core.py, errors.py,       the sans-IO commands operations yield; the exception tree;
    store.py, models.py        the resume store; the typed results
"""

from clients.client import AsyncClient, Client
from clients.errors import (
    APIError,
    BadRequest,
    ChecksumMismatch,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    IntegrityError,
    Locked,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ProtocolError,
    RangeNotSatisfiable,
    ServerError,
    TaskEnded,
    TooManyRequests,
    TSMError,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
    WaitTimeout,
)
from clients.models import (
    TERMINAL_STATES,
    CsvPreview,
    DownloadResult,
    Event,
    FileInfo,
    Kind,
    Page,
    Progress,
    Task,
    TaskCheck,
    UploadResult,
)

__all__ = [
    "TERMINAL_STATES",
    "APIError",
    "AsyncClient",
    "BadRequest",
    "ChecksumMismatch",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CsvPreview",
    "DownloadResult",
    "Event",
    "FileInfo",
    "Forbidden",
    "Gone",
    "IntegrityError",
    "Kind",
    "Locked",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Progress",
    "ProtocolError",
    "RangeNotSatisfiable",
    "ServerError",
    "TSMError",
    "Task",
    "TaskCheck",
    "TaskEnded",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "UploadResult",
    "WaitTimeout",
]

"""Checkpoint layouts are stored JSON: a task checkpointed by an older build must resume.

The TypedDicts name the keys the kinds write; these tests pin them to the stored layout, so a
renamed key fails here rather than in a resumed task (or in the watch stream, which reads an
import's ``rows``).
"""

from __future__ import annotations

from app.services.csv_export.kind import ExportCheckpoint
from app.services.csv_import.loader import CHECKPOINT_VERSION, ImportCheckpoint
from app.services.csv_import.source import SourceFingerprint

IMPORT_KEYS = {
    "v",
    "phase",
    "offset",
    "end",
    "line",
    "rows",
    "rejects",
    "reject_bytes",
    "columns",
    "types",
    "renamed",
    "source",
    "seconds",
    "rows_per_second",
}
EXPORT_KEYS = {"file_id", "filename", "key", "position", "offset", "rows", "total", "exact", "session"}


def test_import_checkpoint_keeps_its_stored_keys() -> None:
    assert CHECKPOINT_VERSION == 1
    assert ImportCheckpoint.__required_keys__ == IMPORT_KEYS
    assert ImportCheckpoint.__optional_keys__ == {
        "dialect",
        "inferred",
        "start",
        "first_line",
        "fallbacks",
        "reject_multipart",
        "loaded",
    }
    assert SourceFingerprint.__required_keys__ == {"size", "mtime_ns", "sha256_head_tail"}


def test_export_checkpoint_keeps_its_stored_keys() -> None:
    assert ExportCheckpoint.__required_keys__ == EXPORT_KEYS
    assert ExportCheckpoint.__optional_keys__ == {"finished", "multipart"}

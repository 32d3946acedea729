"""Prometheus metrics. Counters live here so that every module increments the same ones."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

BYTES_UPLOADED = Counter("tsm_bytes_uploaded", "Bytes received by upload PATCH requests.")
BYTES_DOWNLOADED = Counter("tsm_bytes_downloaded", "Bytes sent by file downloads.")
ROWS_IMPORTED = Counter("tsm_rows_imported", "Rows committed by import tasks.")
ROWS_EXPORTED = Counter("tsm_rows_exported", "Rows written by export tasks.")
CHECKPOINT_SECONDS = Histogram(
    "tsm_checkpoint_seconds", "Time to commit one checkpoint (with its batch).", ["kind"]
)

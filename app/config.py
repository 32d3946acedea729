"""Settings: every knob is an environment variable with the ``TSM_`` prefix (see ``.env.example``)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_STORAGE = Path("storage")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TSM_", env_file=".env", extra="ignore")

    # Where the service keeps its own state. Empty = SQLite file inside the storage dir.
    database_url: str = ""
    storage_dir: Path = DEFAULT_STORAGE
    # Where file bytes live: empty = the storage dir's files/ folder; s3://bucket/prefix = object
    # storage (pip install 'task-state-manager[s3]'), shared by replicas that share nothing else.
    storage_url: str = Field("", pattern=r"^(|s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?)$")
    # S3 endpoint (SeaweedFS, MinIO, ...); empty = AWS. Region and keys; empty keys = the AWS chain.
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # A single full or one-range GET of a file on S3 answers 307 to a presigned URL (the bytes then
    # flow from the store, not through the service); off: every byte is streamed by the service.
    s3_presigned_redirects: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False

    # Security
    auth_required: bool = False
    # Origins whose pages may call the API from a browser (tus-js-client, Uppy): "https://a,https://b",
    # or "*". Empty: no CORS headers at all, so browsers allow only the console's own origin.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Task engine
    # 0: this replica serves the API only and runs no task (workers are other replicas).
    max_concurrent_tasks: int = Field(4, ge=0)
    max_active_tasks_per_owner: int = Field(100, ge=1)
    lease_seconds: float = Field(30.0, gt=0)
    poll_interval: float = Field(1.0, gt=0)
    progress_interval: float = Field(0.5, gt=0)
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    max_attempts: int = Field(3, ge=1)
    retry_backoff_seconds: float = Field(2.0, ge=0)
    kind_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Data namespace for imported tables (PostgreSQL schema prefix / SQLite file folder)
    data_namespace: str = Field("data", pattern=r"^[a-z][a-z0-9_]{0,15}$")

    # Limits
    max_upload_bytes: int = Field(100 * 1024**3, ge=1)
    max_open_uploads_per_owner: int = Field(20, ge=1)
    max_storage_bytes_per_owner: int = Field(500 * 1024**3, ge=1)
    upload_expiry_seconds: int = Field(7 * 24 * 3600, ge=60)
    max_chunk_bytes: int = Field(8 * 1024**3, ge=1)
    # How often each replica looks for expired unfinished uploads to remove.
    upload_sweep_seconds: float = Field(60.0, gt=0)
    # Every request body but upload bytes (tus has the limits above): larger answers 413.
    max_json_body_bytes: int = Field(1024**2, ge=1024)

    # Imports / exports
    # Largest import batch (one COPY + checkpoint per batch); a pause cancels a running batch.
    import_batch_bytes: int = Field(32 * 1024**2, ge=1024)
    # PostgreSQL COPY streams one import loads with at once (0: as many as this machine has
    # cores, at most 4; one stream keeps one server core busy, so more only help with more).
    import_parallel: int = Field(0, ge=0, le=16)
    export_page_rows: int = Field(50_000, ge=1)
    # PostgreSQL exports: pages COPYed at once, each on its own connection (one snapshot);
    # 0: as for imports.
    export_parallel: int = Field(0, ge=0, le=16)
    # Records an import samples (spread over head, middle and tail) to infer its column types.
    import_sample_records: int = Field(20_000, ge=1)

    @field_validator("kind_modules", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        # Environment variables are plain strings: accept "a.b,c.d" as well as JSON lists.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def import_streams(self) -> int:
        return _streams(self.import_parallel)

    @property
    def export_streams(self) -> int:
        return _streams(self.export_parallel)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.storage_dir / 'tsm.sqlite3').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()


MOST_STREAMS_BY_DEFAULT = 4


def _streams(setting: int) -> int:
    """Parallel COPY streams: the setting, or (0) one per core of this machine, up to a few."""
    return setting or max(1, min(os.cpu_count() or 1, MOST_STREAMS_BY_DEFAULT))

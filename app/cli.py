"""``tsm-server``: run the service, apply migrations, manage API keys.

tsm-server [run] [--host H] [--port P] [--workers N]   serve (settings from TSM_* variables / .env)
tsm-server migrate                    bring the database schema up to date
tsm-server keys create OWNER [--admin]
tsm-server keys list
tsm-server keys revoke KEY_ID
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from app import __version__
from app.config import Settings, get_settings
from app.db import Database
from app.errors import TSMError
from app.logs import configure_logging
from app.migrate import upgrade
from app.services.owners import keys

logger = logging.getLogger("tsm")

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def bind_plan(settings: Settings) -> tuple[str, int, list[str]]:
    """Host and worker count to serve with, and the warnings that explain any change."""
    host, workers, warnings = settings.host, settings.workers, []
    if not settings.auth_required and host not in LOOPBACK:
        warnings.append(
            f"authentication is off, so binding to 127.0.0.1 instead of {host}; "
            "set TSM_AUTH_REQUIRED=true to serve other hosts"
        )
        host = "127.0.0.1"
    if settings.is_sqlite and workers > 1:
        warnings.append("SQLite serves one process; starting 1 worker (use PostgreSQL to scale out)")
        workers = 1
    return host, workers, warnings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn runs this service (bench/drain_server.py measures a bare app under the same)."""
    host, workers, _warnings = bind_plan(settings)
    return {
        "factory": True,
        "host": host,
        "port": settings.port,
        "workers": workers,
        "proxy_headers": True,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds) + 5,
        "log_config": None,
        "http": "app.http.server:ZeroCopyProtocol",  # httptools, larger body messages, sendfile
    }


def serve(settings: Settings) -> None:
    import uvicorn

    for warning in bind_plan(settings)[2]:
        print(f"warning: {warning}", file=sys.stderr)
    configure_logging(settings)  # the supervising process logs in the same format as the workers
    uvicorn.run("app.main:create_app", **uvicorn_options(settings))


async def _with_database(settings: Settings, action: Callable[[Database], Awaitable[Any]]) -> Any:
    settings.storage_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    try:
        await upgrade(database.engine)
        return await action(database)
    finally:
        await database.dispose()


async def _create_key(database: Database, owner: str, role: str) -> str:
    async with database.sessionmaker.begin() as session:
        row, full_key = await keys.create_key(session, owner, role)
    print(f"created key {row.id} for {row.owner} ({row.role}); it is shown only once:")
    return full_key


async def _list_keys(database: Database) -> None:
    async with database.sessionmaker() as session:
        for row in await keys.list_keys(session):
            status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            print(f"{row.id}  {row.owner:<20} {row.role:<6} created {row.created_at:%Y-%m-%d %H:%M}  {status}")


async def _revoke_key(database: Database, key_id: str) -> None:
    async with database.sessionmaker.begin() as session:
        await keys.revoke_key(session, key_id)
    print(f"revoked {key_id}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsm-server", description="Task State Manager server.")
    parser.add_argument("--version", action="version", version=f"tsm-server {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="serve the API (the default)")
    run.add_argument("--host", help="address to bind (default: TSM_HOST, 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on, 1-65535 (default: TSM_PORT, 8000)")
    run.add_argument("--workers", type=int, help="worker processes, 1 or more (default: TSM_WORKERS, 1)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    key_parser = sub.add_parser("keys", help="manage API keys")
    key_sub = key_parser.add_subparsers(dest="keys_command", required=True)
    create = key_sub.add_parser("create", help="create a key for OWNER and print it once")
    create.add_argument("owner")
    create.add_argument("--admin", action="store_true", help="the key may see and act on everything")
    key_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = key_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    overrides = {k: v for k in ("host", "port", "workers") if (v := getattr(args, k, None)) is not None}
    if overrides:
        try:
            settings = Settings.model_validate({**settings.model_dump(), **overrides})
        except ValidationError as exc:
            for error in exc.errors():
                print(f"error: --{error['loc'][0]}: {error['msg']}", file=sys.stderr)
            return 2
    try:
        if args.command in (None, "run"):
            serve(settings)
        elif args.command == "migrate":
            asyncio.run(_with_database(settings, lambda _db: asyncio.sleep(0)))
            print("database schema is up to date")
        elif args.keys_command == "create":
            role = "admin" if args.admin else "user"
            print(asyncio.run(_with_database(settings, lambda db: _create_key(db, args.owner, role))))
        elif args.keys_command == "list":
            asyncio.run(_with_database(settings, _list_keys))
        elif args.keys_command == "revoke":
            asyncio.run(_with_database(settings, lambda db: _revoke_key(db, args.key_id)))
    except TSMError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    return 0

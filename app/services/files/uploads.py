"""tus uploads: create, report, append (PATCH) and terminate, owner-scoped and replica-safe.

One PATCH at a time per upload, across replicas, through a lease on the row:

    UPDATE files SET lock_token = :new, lock_expires_at = now + lease
     WHERE id = :id AND offset = :client_offset AND state IN (uploading, complete)
       AND (lock_token IS NULL OR lock_expires_at < now)       -- 0 rows → 409 / 423

While the body streams, a heartbeat renews the lease and (when no checksum is pending) commits
the offset up to the last fdatasync (on S3: the last acknowledged part, with the part list).
The final UPDATE is fenced by the token, so a writer that lost its lease can never move the
offset. Offsets only ever name bytes already in the store (app/services/files/store.py).

Each lock and progress update is one statement that commits on its own (one round trip: a
PATCH pays two), built once. They commit without waiting for the database's WAL flush
(PostgreSQL ``synchronous_commit = off``, set inside the statement): a database crash can only
lose the newest of them, which moves an offset back, never ahead of the disk — the client gets
a 409, HEADs, and resends the difference. The commit that completes an upload does wait: a
client that was told "done" stops sending and could not repair a lost completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Update, bindparam, func, or_, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database
from app.errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    Forbidden,
    Gone,
    InsufficientStorage,
    Locked,
    NotFound,
    PayloadTooLarge,
)
from app.models import File, new_id, utcnow
from app.services.files import writer
from app.services.files.catalog import COMPLETE, DELETED, EXPIRED, FINAL, PARTIAL, UPLOADING, WRITING, find_file
from app.services.files.store import ByteStore
from app.services.files.sweeper import compute_sha256_later
from app.services.owners.keys import Principal
from app.services.owners.limits import check_open_uploads, check_storage, hold_quota

logger = logging.getLogger("tsm.uploads")

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class PatchRequest:
    offset: int
    length: int | None = None  # Upload-Length sent with a PATCH (creation-defer-length)
    checksum: tuple[str, bytes] | None = None
    content_length: int | None = None


def _check_size(settings: Settings, length: int) -> None:
    if length > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"Upload-Length {length} is larger than the maximum upload size of {settings.max_upload_bytes} bytes",
            headers={"Tus-Max-Size": str(settings.max_upload_bytes)},
        )


async def create_upload(
    database: Database,
    settings: Settings,
    store: ByteStore,
    principal: Principal,
    *,
    length: int | None,
    metadata: dict[str, str | None],
    filename: str | None,
    content_type: str | None,
    concat: str | None = None,
) -> File:
    """A new, empty upload (row + room in the store), after every limit has been checked.

    ``length`` None is a deferred length; ``filename`` and ``content_type`` come already made safe;
    ``concat`` "partial" marks a part of a later final upload (services/files/concat.py).
    """
    if length is not None:
        _check_size(settings, length)
    async with database.sessionmaker() as session:
        await check_open_uploads(session, principal.owner, settings.max_open_uploads_per_owner)
        await check_storage(session, settings, principal.owner, length or 0, what="this upload")
        now = utcnow()
        row = File(
            owner=principal.owner,
            origin="upload",
            filename=filename,
            content_type=content_type,
            metadata_=metadata,
            length=length,
            offset=0,
            state=COMPLETE if length == 0 else UPLOADING,
            expires_at=None if length == 0 else now + timedelta(seconds=settings.upload_expiry_seconds),
            created_at=now,
            updated_at=now,
            completed_at=now if length == 0 else None,
            sha256=EMPTY_SHA256 if length == 0 else None,  # complete at once: nothing to hash later
            concat=concat,
        )
        session.add(row)
        await session.flush()
        row.multipart = await store.create(row.id, empty=length == 0)
        try:
            await session.commit()
        except BaseException:
            # No row will ever name this room: give it back (an open multipart upload costs storage).
            await _forget_room(store, row)
            raise
    return row


async def _forget_room(store: ByteStore, row: File) -> None:
    try:
        await asyncio.shield(store.delete(row.id, row.multipart))
    except Exception:  # best effort: the bucket's lifecycle rule for stale multipart uploads is the backstop
        logger.warning("could not remove the store's room for upload %s", row.id, exc_info=True)


def is_expired(row: File) -> bool:
    return row.state == UPLOADING and row.expires_at is not None and row.expires_at <= utcnow()


async def get_upload(session: AsyncSession, principal: Principal, file_id: str) -> File:
    """The caller's tus upload; 404 when unknown, 410 once terminated or expired."""
    row = await find_file(session, principal, file_id)
    if row is None or row.origin != "upload":
        raise NotFound(f"no upload with id {file_id!r}")
    if row.state == DELETED:
        raise Gone(f"upload {file_id} was terminated")
    if row.state == EXPIRED or is_expired(row):
        raise Gone(f"upload {file_id} expired before it was finished")
    return row


async def _acquire(
    database: Database, settings: Settings, principal: Principal, file_id: str, request: PatchRequest
) -> tuple[str, File]:
    """Take the upload's lock in one conditional UPDATE; explain with 404/409/410/423 when it fails."""
    now = utcnow()
    token = new_id()
    params = {
        "b_id": file_id,
        "b_owner": principal.owner,
        "b_offset": request.offset,
        "b_now": now,
        "b_token": token,
        "b_expires": now + timedelta(seconds=settings.lease_seconds),
    }
    async with database.autocommit() as session:
        statement = _acquire_statement(database.is_postgres, principal.is_admin)
        row = (await session.execute(statement, params)).scalar_one_or_none()
    if row is not None:
        return token, row
    async with database.sessionmaker() as session:
        fresh = await get_upload(session, principal, file_id)
    if fresh.concat == FINAL:
        raise Forbidden("a final upload is made of its partial uploads: it takes no PATCH")
    if fresh.offset != request.offset:
        raise _offset_conflict(request.offset, fresh.offset)
    raise Locked(
        "another PATCH is writing to this upload right now; wait for it to finish, then HEAD for the offset",
        headers={"Retry-After": "1"},
    )


def _offset_conflict(sent: int, actual: int) -> Conflict:
    return Conflict(
        f"Upload-Offset {sent} does not match the upload's current offset {actual}; HEAD, then PATCH from there",
        headers={"Upload-Offset": str(actual)},
        current_offset=actual,
    )


@functools.cache
def _acquire_statement(postgres: bool, admin: bool) -> Update:
    """Built once, run with bound parameters: a PATCH's two statements cost little CPU."""
    now: BindParameter[Any] = bindparam("b_now")
    return (
        update(File)
        .where(
            File.id == bindparam("b_id"),
            true() if admin else File.owner == bindparam("b_owner"),  # Principal.sees, as a parameter
            File.origin == "upload",
            File.offset == bindparam("b_offset"),
            File.state.in_((UPLOADING, COMPLETE)),
            or_(File.expires_at.is_(None), File.expires_at > now),
            or_(File.lock_token.is_(None), File.lock_expires_at < now),
            or_(File.concat.is_(None), File.concat != FINAL),
            _no_wal_wait(postgres),
        )
        .values(lock_token=bindparam("b_token"), lock_expires_at=bindparam("b_expires"), lock_reserve=None)
        .returning(File)
        .execution_options(synchronize_session=False)
    )


@functools.cache
def _fenced_statement(postgres: bool, wait_for_wal: bool, names: tuple[str, ...]) -> Update:
    values = {name: bindparam(f"v_{name}", type_=getattr(File, name).type) for name in names}
    return (
        update(File)
        .where(
            File.id == bindparam("b_id"),
            File.lock_token == bindparam("b_token"),
            true() if wait_for_wal else _no_wal_wait(postgres),
        )
        .values(values)
        .returning(File)
        .execution_options(synchronize_session=False)
    )


def _no_wal_wait(postgres: bool) -> ColumnElement[bool]:
    """A WHERE term that, on PostgreSQL, is ``SET LOCAL synchronous_commit TO OFF`` for the
    statement's own transaction (so it needs no round trip of its own); elsewhere nothing."""
    return func.set_config("synchronous_commit", "off", True).is_not(None) if postgres else true()


async def _fenced_update(
    database: Database, file_id: str, token: str, *, wait_for_wal: bool = False, **values: Any
) -> File | None:
    statement = _fenced_statement(database.is_postgres, wait_for_wal, tuple(sorted(values)))
    params = {"b_id": file_id, "b_token": token, **{f"v_{name}": value for name, value in values.items()}}
    async with database.autocommit() as session:
        return (await session.execute(statement, params)).scalar_one_or_none()


async def _release(
    database: Database, file_id: str, token: str, *, wait_for_wal: bool = False, **values: Any
) -> File | None:
    return await _fenced_update(
        database,
        file_id,
        token,
        wait_for_wal=wait_for_wal,
        lock_token=None,
        lock_expires_at=None,
        lock_reserve=None,
        **values,
    )


async def _heartbeat(
    database: Database, settings: Settings, file_id: str, token: str, state: writer.WriteState, commit: bool
) -> None:
    """Renew the lease; commit the durable offset so progress shows (and survives a crash)."""
    committed = state.start
    while True:
        await asyncio.sleep(settings.lease_seconds / 3)
        now = utcnow()
        values: dict[str, Any] = {"lock_expires_at": now + timedelta(seconds=settings.lease_seconds)}
        durable, multipart = state.durable, state.multipart  # read together: they agree
        if commit and durable > committed:
            values.update(offset=durable, updated_at=now)
            if multipart is not None:
                values["multipart"] = multipart
        try:
            row = await _fenced_update(database, file_id, token, **values)
        except Exception:  # a database hiccup must not kill the upload; the next beat retries
            logger.warning("could not renew the lock of upload %s", file_id, exc_info=True)
            continue
        if row is None:
            state.lock_lost = True
            return
        committed = max(committed, durable) if commit else committed


async def _prepare_file(store: ByteStore, row: File, database: Database, token: str) -> None:
    """Bytes past the committed offset are leftovers of a crashed writer: the store cuts them off."""
    short = await store.prepare(row)
    if short is not None:
        await _release(database, row.id, token, offset=short)
        raise Conflict("the upload's stored bytes are shorter than its offset; HEAD for the offset and resume")


async def append(
    database: Database,
    settings: Settings,
    store: ByteStore,
    principal: Principal,
    file_id: str,
    request: PatchRequest,
    chunks: AsyncIterator[bytes],
) -> File:
    """Write one PATCH body at ``request.offset``; returns the row with its new offset."""
    token, row = await _acquire(database, settings, principal, file_id, request)
    try:
        length, limit, message = await _limits(database, settings, row, token, request)
        return await _write(database, settings, store, row, token, request, length, limit, message, chunks)
    except BaseException:
        # Free the upload at once (a no-op if already released); the next PATCH trims unacknowledged bytes.
        with contextlib.suppress(Exception):
            await asyncio.shield(_release(database, row.id, token))
        raise


async def _limits(
    database: Database, settings: Settings, row: File, token: str, request: PatchRequest
) -> tuple[int | None, int, str]:
    """The upload's length after this PATCH, and how many body bytes it may carry (with why)."""
    length = row.length
    if request.length is not None:
        if row.length is None:
            if request.length < row.offset:
                raise BadRequest(f"Upload-Length {request.length} is smaller than the offset {row.offset}")
            _check_size(settings, request.length)
            length = request.length
        elif request.length != row.length:
            raise BadRequest(f"Upload-Length is already {row.length} and cannot change")
    room = (length if length is not None else settings.max_upload_bytes) - row.offset
    limit = min(room, settings.max_chunk_bytes)
    message = (
        f"the body would pass the upload's length ({length} bytes)"
        if length is not None and room <= settings.max_chunk_bytes
        else f"a PATCH body may carry at most {limit} bytes here"
    )
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Content-Length {request.content_length}: {message}")
    if row.length is None:  # the quota could not be taken at creation: take it now
        async with database.sessionmaker() as session:
            limit, message = await hold_quota(
                session, settings, row, token, length, limit, message, request.content_length
            )
            await session.commit()
    return length, limit, message


async def _write(
    database: Database,
    settings: Settings,
    store: ByteStore,
    row: File,
    token: str,
    request: PatchRequest,
    length: int | None,
    limit: int,
    message: str,
    chunks: AsyncIterator[bytes],
) -> File:
    await _prepare_file(store, row, database, token)
    state = writer.WriteState(start=row.offset, durable=row.offset, multipart=row.multipart)
    checksum = writer.new_hasher(request.checksum[0]) if request.checksum else None
    state.hashers = [checksum] if checksum is not None else []
    beat = asyncio.create_task(_heartbeat(database, settings, row.id, token, state, commit=checksum is None))
    too_large: PayloadTooLarge | None = None
    try:
        complete = await store.receive(
            row, state, chunks, limit=limit, limit_message=message, expected=request.content_length, length=length
        )
    except PayloadTooLarge as exc:
        too_large, complete = exc, False
    except writer.LockLost:
        await _drop_unclaimed(store, row, state)
        raise Locked("this PATCH lost the upload's lock to another request; HEAD for the offset") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the server's disk is full; HEAD for the offset and retry later") from None
        raise
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    # A chunk under a checksum is all or nothing: cut short, too large or wrong → discarded.
    if (
        checksum is not None
        and request.checksum is not None
        and (not complete or checksum.digest() != request.checksum[1])
    ):
        await store.discard(row, state)
        await _release(database, row.id, token, offset=row.offset, length=length)
        if too_large is not None:
            raise too_large
        if complete:
            raise ChecksumMismatch(
                f"the body's {request.checksum[0]} does not match Upload-Checksum; "
                f"the chunk was discarded and the offset stays {row.offset}"
            )
        return row
    now = utcnow()
    offset = state.durable
    done = length is not None and offset >= length
    values: dict[str, Any] = {"offset": offset, "length": length, "updated_at": now}
    if state.multipart is not None:
        values["multipart"] = state.multipart
    if done:
        await _name_every_part(database, row.id, token, offset, state)
        await store.finish(row.id, state.multipart)  # one whole object before anyone sees `complete`
        values.update(state=COMPLETE, completed_at=now, expires_at=None, multipart=None)
    elif offset > row.offset:
        values["expires_at"] = now + timedelta(seconds=settings.upload_expiry_seconds)
    # Completion is the one commit a client cannot recover from losing (it stops sending): wait for it.
    updated = await _release(database, row.id, token, wait_for_wal=done, **values)
    if updated is None:
        await _drop_unclaimed(store, row, state)
        raise Locked("this PATCH lost the upload's lock to another request; HEAD for the offset")
    await store.settled(row, state)
    if done and row.concat != PARTIAL:  # off the request path (a partial is not hashed: its final will be)
        compute_sha256_later(database, store, row.id)
    if too_large is not None:
        raise PayloadTooLarge(f"{too_large.detail}; the bytes before the limit were kept (offset {offset})")
    return updated


async def _drop_unclaimed(store: ByteStore, row: File, state: writer.WriteState) -> None:
    """A PATCH that lost its lock never got its outcome into the row: what it alone wrote (on S3,
    a new tail object) is nobody's, so it goes (best effort; the row's own tail stays)."""
    try:
        await asyncio.shield(store.abandon(row, state))
    except Exception:
        logger.warning("could not remove what a PATCH that lost its lock wrote to upload %s", row.id, exc_info=True)


async def _name_every_part(database: Database, file_id: str, token: str, offset: int, state: writer.WriteState) -> None:
    """On S3 the row lists every part before they become one object: a crash between the two
    leaves offset == length, which start-up (or the next PATCH) completes again."""
    if state.multipart is None:
        return
    if await _fenced_update(database, file_id, token, offset=offset, multipart=state.multipart) is None:
        raise Locked("this PATCH lost the upload's lock to another request; HEAD for the offset")


async def terminate(
    database: Database, settings: Settings, store: ByteStore, principal: Principal, file_id: str
) -> None:
    """tus termination: the row becomes a `deleted` tombstone and the bytes are removed."""
    async with database.sessionmaker() as session:
        row = await find_file(session, principal, file_id)
        if row is None:
            raise NotFound(f"no file with id {file_id!r}")
        if row.state in (DELETED, EXPIRED):
            raise Gone(f"file {file_id} was already removed")
        if row.state == WRITING:
            raise Conflict("the server is still writing this file; cancel its task instead", current_state=WRITING)
        now = utcnow()
        result = await session.execute(
            update(File)
            .where(
                File.id == row.id,
                File.state.in_((UPLOADING, COMPLETE)),
                or_(File.lock_token.is_(None), File.lock_expires_at < now),
            )
            .values(state=DELETED, updated_at=now, lock_token=None, lock_expires_at=None, expires_at=None)
        )
        await session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult; execute() is typed as the base Result
        raise Locked("a PATCH is writing to this upload right now; try again when it has finished")
    await store.delete(row.id, row.multipart)

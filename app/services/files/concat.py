"""tus concatenation: a final upload made of the caller's finished partial uploads.

    POST Upload-Concat: partial        an ordinary upload, marked partial (uploads.create_upload)
    POST Upload-Concat: final;<urls>   one transaction, under the owner's lock:
        every partial the caller's, partial, complete, not claimed by a live final (else 4xx)
        ──▶ partials.concat_into = final, and they (and the new final row) take one lock token
    then, holding that lease (renewed for all of them by one UPDATE … WHERE lock_token):
        store.concatenate (local: copy_file_range + fsync; S3: UploadPartCopy) ──▶ durable
        ──▶ one commit: final complete, partials deleted (tombstones: HEAD 410); their bytes go

A partial is consumed by its final: the owner's quota counts its bytes once, in the final (while
the final is assembled both count; the final needs no room of its own). Holding the partials'
lock keeps a PATCH or DELETE off them while their bytes are read (423).

Asking for the same final again (a lost 201) answers the final already made.
A final whose assembly died (a crash, a lost lease) never completes: its lock lapses, and a
new final naming the same partials takes them over (the dead one expires, its bytes are swept).
Unfinished partials are refused (409): this server does not offer concatenation-unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database
from app.errors import Conflict, Gone, Locked, NotFound, PayloadTooLarge
from app.models import File, new_id, utcnow
from app.services.files.catalog import COMPLETE, DELETED, EXPIRED, FINAL, PARTIAL, UPLOADING
from app.services.files.store import ByteStore
from app.services.files.sweeper import compute_sha256_later
from app.services.files.uploads import EMPTY_SHA256
from app.services.owners.keys import Principal
from app.services.owners.limits import lock_owner

logger = logging.getLogger("tsm.uploads")


async def create_final(
    database: Database,
    settings: Settings,
    store: ByteStore,
    principal: Principal,
    part_ids: list[str],
    *,
    metadata: dict[str, str | None],
    filename: str | None,
    content_type: str | None,
) -> File:
    """Claim the partials, write their concatenation, and return the complete final's row."""
    token, final_id = new_id(), new_id()
    now = utcnow()
    async with database.sessionmaker() as session:
        await lock_owner(session, principal.owner)  # one claim at a time per owner
        again = await _made_already(session, principal, part_ids)
        if again is not None:
            return again
        parts = await _claimable(session, settings, principal, part_ids)
        length = sum(int(part.length or 0) for part in parts)
        if length > settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"the partial uploads add up to {length} bytes, more than the maximum upload size of "
                f"{settings.max_upload_bytes} bytes",
                headers={"Tus-Max-Size": str(settings.max_upload_bytes)},
            )
        lease = now + timedelta(seconds=settings.lease_seconds)
        empty = length == 0  # nothing to copy: complete at once, as an empty upload is
        claim: dict[str, Any] = {"state": DELETED} if empty else {"lock_token": token, "lock_expires_at": lease}
        claimed = await session.execute(
            update(File)
            .where(File.id.in_(part_ids), File.state == COMPLETE, _unlocked(now))
            .values(concat_into=final_id, lock_reserve=None, updated_at=now, **claim)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != len(part_ids):  # type: ignore[attr-defined]  # a CursorResult
            raise Locked("a request is writing to one of the partial uploads right now; retry when it is done")
        final = File(
            id=final_id,
            owner=principal.owner,
            origin="upload",
            filename=filename,
            content_type=content_type,
            metadata_=metadata,
            length=length,
            offset=0,
            state=COMPLETE if empty else UPLOADING,
            concat=FINAL,
            concat_parts=list(part_ids),
            lock_token=None if empty else token,
            lock_expires_at=None if empty else lease,
            expires_at=None if empty else now + timedelta(seconds=settings.upload_expiry_seconds),
            created_at=now,
            updated_at=now,
            completed_at=now if empty else None,
            sha256=EMPTY_SHA256 if empty else None,
        )
        session.add(final)
        await session.flush()
        final.multipart = await store.create(final_id, empty=empty)
        try:
            await session.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(store.delete(final_id, final.multipart))
            raise
    if empty:
        await _drop_partials(store, part_ids)
        return final
    sources = [(part.id, int(part.length or 0)) for part in parts]
    return await _assemble(database, settings, store, final, token, sources)


async def _made_already(session: AsyncSession, principal: Principal, part_ids: list[str]) -> File | None:
    """The complete final of exactly these partials: a client that lost the 201 and asks again
    gets the same final (its partials are gone, it could not make another one)."""
    first = await session.get(File, part_ids[0])
    if first is None or first.owner != principal.owner or first.state != DELETED or first.concat_into is None:
        return None
    final = await session.get(File, first.concat_into)
    if final is None or final.owner != principal.owner or final.state != COMPLETE or final.concat_parts != part_ids:
        return None
    return final


def _unlocked(now: Any) -> Any:
    return or_(File.lock_token.is_(None), File.lock_expires_at < now)


async def _claimable(
    session: AsyncSession, settings: Settings, principal: Principal, part_ids: list[str]
) -> list[File]:
    """The partials, in order, each checked; a final that died holding one gives it up."""
    # Owner-scoped even for an admin: a final is made of its owner's own partials only.
    query = select(File).where(File.id.in_(part_ids), File.owner == principal.owner, File.origin == "upload")
    rows = {row.id: row for row in (await session.execute(query)).scalars()}
    parts = []
    for part_id in part_ids:
        row = rows.get(part_id)
        if row is None:
            raise NotFound(f"no upload with id {part_id!r}")
        if row.state == DELETED and row.concat_into is not None:
            raise Gone(f"partial upload {part_id} was already concatenated into final upload {row.concat_into}")
        if row.state in (DELETED, EXPIRED):
            raise Gone(f"partial upload {part_id} was terminated or expired")
        if row.concat != PARTIAL:
            raise Conflict(f"upload {part_id} is not a partial upload (create it with `Upload-Concat: partial`)")
        if row.state != COMPLETE:
            raise Conflict(
                f"partial upload {part_id} has {row.offset} of {row.length if row.length is not None else '?'} "
                "bytes: finish every partial upload before creating the final one"
            )
        if row.concat_into is not None:
            await _release_dead_final(session, row)
        parts.append(row)
    return parts


async def _release_dead_final(session: AsyncSession, part: File) -> None:
    """``part`` was claimed by another final: 409 while that one lives, else it expires now."""
    now = utcnow()
    other = await session.get(File, part.concat_into)
    if other is not None and other.state == UPLOADING and other.lock_expires_at and other.lock_expires_at >= now:
        raise Conflict(f"partial upload {part.id} is being concatenated into final upload {other.id} right now")
    if other is not None and other.state == UPLOADING:  # its bytes are removed by the sweeper
        await session.execute(
            update(File).where(File.id == other.id, _unlocked(now)).values(state=EXPIRED, updated_at=now)
        )


async def _assemble(
    database: Database, settings: Settings, store: ByteStore, final: File, token: str, sources: list[tuple[str, int]]
) -> File:
    beat = asyncio.create_task(_keep_lease(database, settings, token))
    try:
        await store.concatenate(final.id, final.multipart, sources)
    except BaseException:
        with contextlib.suppress(Exception):  # the partials are free again; the final will expire
            await asyncio.shield(_give_up(database, final.id, token))
        raise
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    done = await _complete(database, final, token, [source for source, _ in sources])
    await _drop_partials(store, [source for source, _ in sources])
    compute_sha256_later(database, store, final.id)
    return done


async def _drop_partials(store: ByteStore, part_ids: list[str]) -> None:
    """No row names these bytes any more (best effort)."""
    for part_id in part_ids:
        try:
            await store.delete(part_id, None)
        except Exception:
            logger.warning("could not remove the bytes of partial upload %s", part_id, exc_info=True)


async def _keep_lease(database: Database, settings: Settings, token: str) -> None:
    """Renew the lock of the final and all its partials (they share the token) while it is written."""
    while True:
        await asyncio.sleep(settings.lease_seconds / 3)
        try:
            async with database.sessionmaker() as session:
                await session.execute(
                    update(File)
                    .where(File.lock_token == token)
                    .values(lock_expires_at=utcnow() + timedelta(seconds=settings.lease_seconds))
                )
                await session.commit()
        except Exception:  # the next beat retries; completion is fenced by the token anyway
            logger.warning("could not renew the lock of a final upload", exc_info=True)


async def _complete(database: Database, final: File, token: str, part_ids: list[str]) -> File:
    """One commit, fenced by the token: the final is complete and its partials are gone."""
    now = utcnow()
    free: dict[str, Any] = {"lock_token": None, "lock_expires_at": None, "updated_at": now}
    async with database.sessionmaker() as session:
        done = (
            await session.execute(
                update(File)
                .where(File.id == final.id, File.lock_token == token, File.state == UPLOADING)
                .values(state=COMPLETE, offset=final.length, completed_at=now, expires_at=None, multipart=None, **free)
                .returning(File)
                .execution_options(synchronize_session=False)
            )
        ).scalar_one_or_none()
        consumed = await session.execute(
            update(File)
            .where(File.id.in_(part_ids), File.lock_token == token, File.state == COMPLETE)
            .values(state=DELETED, **free)
            .execution_options(synchronize_session=False)
        )
        if done is None or consumed.rowcount != len(part_ids):  # type: ignore[attr-defined]  # a CursorResult
            await session.rollback()
            raise Conflict("the final upload lost its partial uploads to another final while it was written")
        await session.commit()
    return done


async def _give_up(database: Database, final_id: str, token: str) -> None:
    async with database.sessionmaker() as session:
        now = utcnow()
        await session.execute(
            update(File).where(File.id == final_id, File.lock_token == token).values(state=EXPIRED, updated_at=now)
        )
        await session.execute(
            update(File).where(File.lock_token == token).values(lock_token=None, lock_expires_at=None)
        )
        await session.commit()

"""API keys: ``tsm_<id>_<secret>``, shown once, stored as a SHA-256 of the secret.

The id finds the row; the secret is compared in constant time, so neither a wrong id nor a
wrong secret can be told apart by timing or by message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import ColumnElement, SQLColumnExpression, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound, Unprocessable
from app.models import ApiKey, utcnow

OWNER_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
KEY_PATTERN = re.compile(r"^tsm_([a-z0-9]{12})_([A-Za-z0-9_-]{20,100})$")
ROLES = ("user", "admin")
# Compared against when the id is unknown, so that path costs the same as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class Principal:
    owner: str
    role: str = "user"
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees(self, owner_column: SQLColumnExpression[str]) -> ColumnElement[bool]:
        """The one owner filter: rows of this principal's owner, or every row for an admin."""
        return true() if self.is_admin else owner_column == self.owner


def validate_owner(owner: str) -> str:
    if not OWNER_PATTERN.fullmatch(owner):
        raise Unprocessable(
            f"owner {owner!r} must be 1-32 characters: lowercase letters, digits and _, starting with a letter"
        )
    return owner


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(session: AsyncSession, owner: str, role: str = "user") -> tuple[ApiKey, str]:
    """Make a key; returns the row and the full key, which is never stored or shown again."""
    validate_owner(owner)
    if role not in ROLES:
        raise Unprocessable(f"role must be one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(id=key_id, owner=owner, role=role, secret_hash=_hash(secret), created_at=utcnow())
    session.add(row)
    await session.flush()
    return row, f"tsm_{key_id}_{secret}"


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list((await session.execute(select(ApiKey).order_by(ApiKey.created_at))).scalars())


async def revoke_key(session: AsyncSession, key_id: str) -> None:
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult; execute() is typed as the base Result
        raise NotFound(f"no active key with id {key_id!r}")


async def authenticate(session: AsyncSession, presented: str) -> Principal | None:
    """The principal a presented key stands for, or None (unknown, malformed, wrong or revoked)."""
    match = KEY_PATTERN.fullmatch(presented)
    key_id, secret = match.groups() if match else ("", presented)
    row = None
    if match:
        row = (await session.execute(select(ApiKey).where(ApiKey.id == key_id))).scalar_one_or_none()
    expected = row.secret_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(_hash(secret), expected) or row is None or row.revoked_at is not None:
        return None
    return Principal(owner=row.owner, role=row.role, key_id=row.id)

"""API keys: created once and shown once, stored as their sha256, revocable; and the caller
a request acts as.

A key owns what it creates (models, jobs, and so their certificates).  A key of role
``admin`` sees and acts on every object; a ``user`` key only on its own.  A server that does
not require keys (one listening on loopback only) has no identities: every caller is the
local user, who sees everything, and what it creates has no owner.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .tables import KEY_ROLES, ApiKey, utcnow

KEY_PREFIX = "nnv_"


@dataclass(frozen=True)
class Caller:
    """Who a request acts as: ``key_id`` None for the local user of a server without
    required keys (who sees everything); ``admin`` sees every object."""

    key_id: str | None
    name: str | None = None
    admin: bool = False

    @property
    def sees_all(self) -> bool:
        return self.admin or self.key_id is None

    @property
    def owner(self) -> str | None:
        """The owner recorded on what this caller creates."""
        return self.key_id


LOCAL_USER = Caller(key_id=None, name=None, admin=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def find_key(session: Session, key: str) -> ApiKey | None:
    """The active key row for ``key``; None when it is unknown or revoked."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == hash_key(key)))
    return row if row is not None and row.revoked_at is None else None


def caller_of(row: ApiKey) -> Caller:
    return Caller(key_id=row.id, name=row.name, admin=row.role == "admin")


def create_key(session: Session, name: str, role: str = "user") -> tuple[ApiKey, str]:
    """A new key row and the key itself (the only time it is known in the clear)."""
    if role not in KEY_ROLES:
        raise ValueError(f"role must be one of {', '.join(KEY_ROLES)}; got {role!r}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=key[:12], key_sha256=hash_key(key), role=role)
    session.add(row)
    return row, key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all())


def revoke_key(session: Session, ident: str) -> ApiKey | None:
    """Revoke the key whose id, name or shown prefix is ``ident``; None if there is none."""
    row = session.scalars(select(ApiKey).where(
        or_(ApiKey.id == ident, ApiKey.name == ident, ApiKey.prefix == ident))).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row

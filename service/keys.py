"""API keys: created once and shown once, stored as their sha256, revocable."""

from __future__ import annotations

import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .api.deps import hash_key
from .tables import ApiKey, utcnow

KEY_PREFIX = "nnv_"


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """A new key row and the key itself (the only time it is known in the clear)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=key[:12], key_sha256=hash_key(key))
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

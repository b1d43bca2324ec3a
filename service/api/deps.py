"""Dependencies shared by the routers: settings, a database session, the queue, API keys."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..engine import ModelCache
from ..queues import JobQueue
from ..settings import ServiceSettings
from ..tables import ApiKey

API_KEY_HEADER = "X-API-Key"
_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue  # type: ignore[no-any-return]


def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache  # type: ignore[no-any-return]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]


def require_key(settings: SettingsDep, session: SessionDep,
                key: Annotated[str | None, Security(_key_header)]) -> str | None:
    """For writes: the caller's key name, checked when the settings require keys."""
    if not settings.keys_required:
        return None
    if not key:
        raise HTTPException(401, f"an API key is required: send it in the {API_KEY_HEADER} "
                                 "header (create one with `nnverify keys create --name NAME`)")
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == hash_key(key)))
    if row is None or row.revoked_at is not None:
        raise HTTPException(403, "the API key is invalid or has been revoked")
    return row.name


WriteKey = Annotated[str | None, Depends(require_key)]

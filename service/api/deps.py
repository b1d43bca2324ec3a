"""Dependencies shared by the routers: settings, a database session, the queue, and the
caller (API keys).

Where the settings require keys (a server listening beyond loopback) every request but the
health probes needs a valid key: 401 without one, 403 for an unknown or revoked one.  Reads
(GET) take the key from the ``X-API-Key`` header or from the dashboard's login cookie (an
EventSource or a browser tab cannot send a header); writes only from the header, so that a
cross-site form can never write with a browser's cookie.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from ..engine import ModelCache
from ..keys import LOCAL_USER, Caller, caller_of, find_key
from ..queues import JobQueue
from ..settings import ServiceSettings

API_KEY_HEADER = "X-API-Key"
API_KEY_COOKIE = "nnverify_key"  # set by the dashboard's login form (HTTP-only, same-site)
key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                          description="An API key (`nnverify keys create --name NAME`); "
                                      "required when the server listens beyond loopback.")


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue  # type: ignore[no-any-return]


def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache  # type: ignore[no-any-return]


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]
KeyHeader = Annotated[str | None, Security(key_header)]


def authenticate(settings: ServiceSettings, session: Session, key: str | None) -> Caller:
    """The caller a key stands for; the local user where keys are not required (a key
    sent anyway is not looked at: such a server has no identities)."""
    if not settings.keys_required:
        return LOCAL_USER
    if not key:
        raise HTTPException(401, f"an API key is required: send it in the {API_KEY_HEADER} "
                                 "header (create one with `nnverify keys create --name NAME`)")
    row = find_key(session, key.strip())
    if row is None:
        raise HTTPException(403, "the API key is invalid or has been revoked")
    return caller_of(row)


def read_key(request: Request, header: str | None) -> str | None:
    """The key of a read: the header, else the dashboard's login cookie."""
    return header or request.cookies.get(API_KEY_COOKIE)


def read_caller(request: Request, settings: SettingsDep, session: SessionDep,
                key: KeyHeader) -> Caller:
    return authenticate(settings, session, read_key(request, key))


def write_caller(settings: SettingsDep, session: SessionDep, key: KeyHeader) -> Caller:
    return authenticate(settings, session, key)


ReadCaller = Annotated[Caller, Depends(read_caller)]
WriteCaller = Annotated[Caller, Depends(write_caller)]

"""Access to the pages: the API's key check, with the key from the X-API-Key header or from
the cookie the login form sets.  Without required keys (a loopback server) pages are open."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import RedirectResponse

from ..api.deps import API_KEY_HEADER, SessionDep, SettingsDep, require_key

COOKIE = "nnverify_key"


class LoginRequired(Exception):
    """The page needs an API key the request did not carry (or carried a bad one)."""

    def __init__(self, next_path: str):
        self.next_path = next_path


def safe_next(path: str | None) -> str:
    """A local path to go back to after login (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//"):
        return "/"
    return path


async def login_redirect(_request: Request, exc: LoginRequired) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(safe_next(exc.next_path))}", status_code=303)


def request_key(request: Request) -> str | None:
    return request.headers.get(API_KEY_HEADER) or request.cookies.get(COOKIE)


def page_access(request: Request, settings: SettingsDep, session: SessionDep) -> str | None:
    """The caller's key name (None when keys are not required); else off to the login page."""
    try:
        return require_key(settings, session, request_key(request))
    except HTTPException:
        raise LoginRequired(request.url.path) from None


PageKey = Annotated[str | None, Depends(page_access)]


def check_login_key(settings: SettingsDep, session: SessionDep, key: str) -> str | None:
    """The message to show for a key the login form was given; None when it is good."""
    try:
        require_key(settings, session, key.strip())
    except HTTPException as exc:
        return str(exc.detail)
    return None

"""Access to the pages and protection of their forms.

Access: the API's key check, with the key from the X-API-Key header or from the cookie the
login form sets; without required keys (a loopback server) pages are open.  A page shows
what the API would show the same key (``service.services``' ownership rule).

Forms (every POST): a signed double-submit CSRF token.  A page sets a random nonce in an
HTTP-only, same-site cookie and puts ``nonce.HMAC(secret, nonce | login)`` in each form;
a POST is accepted only when its token's nonce is the cookie's, the signature is the
server's for the login the request carries (a token of one login is no good for another),
and its Origin (else Referer), when sent, is this server.  The secret is the settings'
``secret_key``, else a random one kept in the data directory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from ..api.deps import API_KEY_COOKIE, API_KEY_HEADER, SessionDep, SettingsDep, authenticate
from ..keys import Caller
from ..settings import ServiceSettings

COOKIE = API_KEY_COOKIE
CSRF_COOKIE = "nnverify_csrf"
CSRF_FIELD = "csrf_token"
SECRET_FILE = "secret_key"


class LoginRequired(Exception):
    """The page needs an API key the request did not carry (or carried a bad one)."""

    def __init__(self, next_path: str):
        self.next_path = next_path


class CsrfRefused(Exception):
    """A form POST without a valid token, or from another site."""

    def __init__(self, reason: str):
        self.reason = reason


def safe_next(path: str | None) -> str:
    """A local path to go back to after login (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def login_redirect(_request: Request, exc: LoginRequired) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(safe_next(exc.next_path))}", status_code=303)


def request_key(request: Request) -> str | None:
    return request.headers.get(API_KEY_HEADER) or request.cookies.get(COOKIE)


def page_access(request: Request, settings: SettingsDep, session: SessionDep) -> Caller:
    """The caller (the local user when keys are not required); else off to the login page."""
    try:
        return authenticate(settings, session, request_key(request))
    except HTTPException:
        raise LoginRequired(request.url.path) from None


PageCaller = Annotated[Caller, Depends(page_access)]


def check_login_key(settings: SettingsDep, session: SessionDep, key: str) -> str | None:
    """The message to show for a key the login form was given; None when it is good."""
    try:
        authenticate(settings, session, key.strip() or None)
    except HTTPException as exc:
        return str(exc.detail)
    return None


# -- CSRF --------------------------------------------------------------------------------
def server_secret(settings: ServiceSettings) -> bytes:
    """The settings' secret, else the data directory's (created at first use, 0600)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _secret(request: Request) -> bytes:
    state = request.app.state
    if getattr(state, "csrf_secret", None) is None:
        try:
            state.csrf_secret = server_secret(state.settings)
        except FileExistsError:  # another process created it first
            state.csrf_secret = server_secret(state.settings)
    return state.csrf_secret  # type: ignore[no-any-return]


def _signature(secret: bytes, nonce: str, login: str | None) -> str:
    binding = hashlib.sha256((login or "").encode()).hexdigest()
    return hmac.new(secret, f"{nonce}|{binding}".encode(), hashlib.sha256).hexdigest()


def csrf_nonce(request: Request) -> tuple[str, bool]:
    """The request's nonce, and whether it is new (then the page sets the cookie)."""
    nonce = request.cookies.get(CSRF_COOKIE, "")
    if len(nonce) == 32 and all(c in "0123456789abcdef" for c in nonce):
        return nonce, False
    return secrets.token_hex(16), True


def csrf_token(request: Request, nonce: str) -> str:
    """The token forms on this page carry, for the login the request carries."""
    return f"{nonce}.{_signature(_secret(request), nonce, request.cookies.get(COOKIE))}"


def set_csrf_cookie(request: Request, response: Response, nonce: str) -> None:
    response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def same_origin(request: Request) -> bool:
    """Whether the request's Origin (else Referer), when it sends one, is this server."""
    origin = request.headers.get("origin")
    source = origin if origin is not None else request.headers.get("referer")
    if source is None:
        return True  # neither sent (a privacy setting): the token decides
    parts = urlsplit(source)
    host = request.headers.get("host", "")
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


async def csrf_protect(request: Request) -> None:
    """For every form POST: refuse another site's request and a missing or bad token."""
    if request.method != "POST":
        return
    if not same_origin(request):
        raise CsrfRefused("the form was sent from another site")
    form = await request.form()
    token = form.get(CSRF_FIELD)
    nonce = request.cookies.get(CSRF_COOKIE, "")
    if not isinstance(token, str) or "." not in token or not nonce:
        raise CsrfRefused("the form carries no valid token (reload the page and try again)")
    given_nonce, signature = token.split(".", 1)
    expected = _signature(_secret(request), nonce, request.cookies.get(COOKIE))
    if not (hmac.compare_digest(given_nonce, nonce) and hmac.compare_digest(signature, expected)):
        raise CsrfRefused("the form's token is not valid for this session (reload the page "
                          "and try again)")

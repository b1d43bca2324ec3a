"""The dashboard: server-rendered pages at ``/`` over the same database and service code as
the API (DESIGN.md: Dashboard).  ``mount_dashboard(app)`` adds its routes and static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .auth import LoginRequired, login_redirect
from .routes import router

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static/dashboard"


def mount_dashboard(app: FastAPI) -> None:
    """Serve the pages, their assets (no CDN: it works offline) and the login redirect."""
    app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.add_exception_handler(LoginRequired, login_redirect)  # type: ignore[arg-type]


__all__ = ["STATIC_DIR", "mount_dashboard", "router"]

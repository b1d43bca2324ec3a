"""The FastAPI application: routers under /api/v1, JSON errors, start-up and shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import migrate
from .api import certificates, events, health, jobs, models
from .api.deps import ReadCaller, get_settings, read_caller
from .api.schemas import AUTH_ERRORS, error_responses
from .dashboard import mount_dashboard
from .dashboard.auth import CsrfRefused
from .dashboard.routes import csrf_refused
from .db import ensure_data_dir, make_engine, session_factory
from .engine import ModelCache
from .metrics import ServiceMetrics
from .metrics import router as metrics_router
from .queues import JobQueue, make_queue
from .reconciler import Reconciler
from .recovery import requeue_abandoned
from .services import ServiceError
from .settings import ServiceSettings

API_PREFIX = "/api/v1"
BODY_SLACK = 64 * 1024  # multipart headers and boundaries around an uploaded file


def create_app(settings: ServiceSettings, queue: JobQueue | None = None,
               run_migrations: bool = True) -> FastAPI:
    """The API for ``settings``.  ``queue`` defaults to the backend the settings name and is
    created at start-up; migrations run at start-up unless told otherwise."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            migrate.upgrade(settings)
        owned = queue is None
        app.state.queue = make_queue(settings) if owned else queue
        requeue_abandoned(app.state.sessions, settings, app.state.queue)
        app.state.reconciler = Reconciler(app.state.sessions, settings, app.state.queue,
                                          on_pass=app.state.metrics.count_repairs)
        app.state.reconciler.start()
        try:
            yield
        finally:
            app.state.reconciler.stop()
            if owned:
                app.state.queue.shutdown()
            app.state.engine.dispose()

    app = FastAPI(title="nnverify", version="0.1.0", lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  description="Neural-network verification: upload an ONNX model, submit a "
                              "property, poll the job, fetch its certificate.  Where the "
                              "server listens beyond loopback every request but the health "
                              "probes needs an API key (X-API-Key); a key sees only what it "
                              "created, an admin key everything.")
    app.state.settings = settings
    ensure_data_dir(settings)
    app.state.engine = make_engine(settings.sqlalchemy_url)
    app.state.sessions = session_factory(app.state.engine)
    app.state.model_cache = ModelCache()
    app.state.queue = queue
    app.state.metrics = ServiceMetrics(app.state.sessions, lambda: app.state.queue)
    for module in (models, jobs, events, certificates, health):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(metrics_router, dependencies=[Depends(metrics_access)])
    _add_openapi_route(app)
    _add_error_handlers(app)
    mount_dashboard(app)
    app.add_exception_handler(CsrfRefused, csrf_refused)  # type: ignore[arg-type]
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + BODY_SLACK,
                       message=f"the request body is larger than the upload limit of "
                               f"{settings.max_upload_mb:g} MB (NNVERIFY_MAX_UPLOAD_MB)")
    app.add_middleware(HostAllowList, names=settings.allowed_host_names)
    return app


def metrics_access(request: Request) -> None:
    """/metrics: open where keys are not required, else any valid key."""
    settings = get_settings(request)
    if settings.keys_required:
        with request.app.state.sessions() as session:
            read_caller(request, settings, session, request.headers.get("X-API-Key"))


def _add_openapi_route(app: FastAPI) -> None:
    """``/openapi.json``, behind the key check of every read (the dashboard's ``/docs``
    renders it as a page, with no script from elsewhere)."""

    build = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, saying whether this server requires the key: without required
        keys no operation lists the X-API-Key security requirement."""
        if app.openapi_schema is None:
            schema = build()
            if not app.state.settings.keys_required:
                for item in schema.get("paths", {}).values():
                    for operation in item.values():
                        operation.pop("security", None)
                schema.get("components", {}).pop("securitySchemes", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False,
             responses=error_responses(*AUTH_ERRORS))
    def openapi_json(_caller: ReadCaller) -> JSONResponse:
        return JSONResponse(app.openapi())


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"detail": "<what is wrong>"}``: 400 for a body that does not
    parse, 422 for one that parses but does not fit the schema (a wrong type, a value out of
    range, a missing or unknown field)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=headers or None)

    @app.exception_handler(ServiceError)
    async def refused(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse({"detail": "malformed request: the body is not JSON: "
                                           + describe_errors(errors)}, status_code=400)
        return JSONResponse({"detail": "invalid request: " + describe_errors(errors)},
                            status_code=422)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal server error ({type(exc).__name__})"},
                            status_code=500)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (a 405's Allow header; the
    router itself names only the first route that matched the path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _child = route.matches(request.scope)
        if match != Match.NONE and isinstance(getattr(route, "methods", None), set | frozenset):
            methods |= set(route.methods)
    return sorted(methods)


def describe_errors(errors: Any) -> str:
    """One line per pydantic error: where, then what."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class HostAllowList:
    """400 for a request whose Host header is not one of ``names`` (None: any): a page
    served from another name that resolves to this machine (DNS rebinding) gets nothing."""

    def __init__(self, app: ASGIApp, names: frozenset[str] | None):
        self.app, self.names = app, names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.names is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if host_name(host) not in self.names:
            response = JSONResponse(
                {"detail": f"this server does not answer to the host {host[:100]!r} "
                           "(NNVERIFY_ALLOWED_HOSTS)"}, status_code=400)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """The name of a Host header without its port: ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BodyLimit:
    """413 for a request body over ``limit`` bytes: at once when its declared length is too
    large, else as soon as the bytes read pass the limit (chunked uploads)."""

    def __init__(self, app: ASGIApp, limit: int, message: str):
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": self.message}, status_code=413,
                                    headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise StarletteHTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)

"""The pages: overview, models, a model, a job, login, the API reference; and the form
handlers, which call the service layer (``service.services``) as the API does, so pages and
API upload, create, cancel and see the same way.  Every form POST is checked for CSRF
(``auth.csrf_protect``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from .. import services
from ..api.deps import ModelCacheDep, QueueDep, SessionDep, SettingsDep
from ..api.models import read_upload
from ..jobspec import JobSpec
from ..keys import Caller
from ..states import FINISHED
from ..tables import Certificate, Job, ModelRecord, PropertyRecord
from . import queries
from .auth import (
    COOKIE,
    CSRF_FIELD,
    CsrfRefused,
    PageCaller,
    check_login_key,
    csrf_nonce,
    csrf_protect,
    csrf_token,
    safe_next,
    set_csrf_cookie,
)
from .forms import FormError, job_body
from .reference import api_reference
from .views import (
    bound_plots,
    counterexample_views,
    final_point,
    lipschitz_view,
    number_text,
    proof_view,
)

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals.update(OUTCOMES=queries.OUTCOMES, urlencode=urlencode,
                             CSRF_FIELD=CSRF_FIELD)
templates.env.filters["num"] = number_text
MAX_PROPERTY_CHARS = 20_000
LIPSCHITZ_FORM_TIMEOUT = "30"


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page; its forms carry the CSRF token of the request's nonce (set as a cookie when
    the request had none)."""
    settings = request.app.state.settings
    nonce, new = csrf_nonce(request)
    context.setdefault("keys_required", settings.keys_required)
    context["csrf_token"] = csrf_token(request, nonce)
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    if new:
        set_csrf_cookie(request, response, nonce)
    return response


def not_found(request: Request, what: str) -> HTMLResponse:
    return page(request, "error.html", 404, title="Not found", message=what)


async def csrf_refused(request: Request, exc: CsrfRefused) -> HTMLResponse:
    """403 for a form POST that fails the CSRF check (registered by the app)."""
    return page(request, "error.html", 403, title="Form refused", message=exc.reason)


@router.get("/", response_class=HTMLResponse, name="dashboard")
def overview(request: Request, session: SessionDep, caller: PageCaller,
             model: str | None = None, verdict: str | None = None, since: str | None = None,
             until: str | None = None,
             page_no: Annotated[str | None, Query(alias="page")] = None) -> HTMLResponse:
    filters = queries.Filters.parse(model, verdict, since, until, _int(page_no, 1), caller)
    return page(request, "overview.html", title="Overview", filters=filters,
                counts=queries.verdict_counts(session, filters),
                models=queries.model_names(session, caller),
                matrix=queries.verdict_matrix(session, filters),
                jobs=queries.job_page(session, filters),
                lipschitz=queries.lipschitz_jobs(session, filters))


def _int(text: str | None, default: int) -> int:
    try:
        return max(1, min(int(text), queries.MAX_PAGE)) if text else default
    except ValueError:
        return default


@router.get("/models", response_class=HTMLResponse, name="dashboard_models")
def models_page(request: Request, session: SessionDep, caller: PageCaller,
                error: str | None = None, status_code: int = 200) -> HTMLResponse:
    rows, _total = services.list_models(session, caller, queries.MAX_MODELS_SHOWN, 0)
    return page(request, "models.html", status_code, title="Models", rows=rows, error=error)


@router.post("/models", response_class=HTMLResponse)
async def upload_form(request: Request, session: SessionDep, settings: SettingsDep,
                      cache: ModelCacheDep, caller: PageCaller,
                      file: Annotated[UploadFile, File()]) -> Response:
    """The upload form: the service's upload, then the model's page."""
    try:
        data = await read_upload(file, settings.max_upload_bytes)
        row, _new = await run_in_threadpool(services.store_model, session, caller, data,
                                            file.filename or "", cache)
    except services.ServiceError as exc:
        return models_page(request, session, caller, error=exc.detail,
                           status_code=exc.status)
    return RedirectResponse(f"/models/{row.id}", status_code=303)


@router.get("/models/{model_id}", response_class=HTMLResponse, name="dashboard_model")
def model_page(model_id: str, request: Request, session: SessionDep, caller: PageCaller,
               form: dict[str, str] | None = None, error: str | None = None,
               status_code: int = 200) -> HTMLResponse:
    try:
        row = services.get_model(session, caller, model_id)
    except services.NotFound:
        return not_found(request, f"There is no model with id {model_id}.")
    filters = queries.Filters.parse(None, None, None, None,
                                    _int(request.query_params.get("page"), 1), caller)
    certs, _total = services.list_model_certificates(session, caller, row.id, 100, 0)
    return page(request, "model.html", status_code, title=row.filename or row.id[:12],
                model=row, summary=row.summary, certificates=certs,
                jobs=queries.job_page(session, filters, model=row.id),
                form=form or {"kind": "vnnlib", "timeout": "60"}, error=error,
                lipschitz_timeout=LIPSCHITZ_FORM_TIMEOUT)


@router.post("/models/{model_id}/jobs", response_class=HTMLResponse)
async def submit_form(model_id: str, request: Request, session: SessionDep,
                      settings: SettingsDep, queue: QueueDep, cache: ModelCacheDep,
                      caller: PageCaller) -> Response:
    """The property form: the service's job creation, then the job's page."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    try:
        body = job_body(model_id, form)
        job = await run_in_threadpool(services.create_job, session, caller, body, settings,
                                      queue, cache)
    except FormError as exc:
        return model_page(model_id, request, session, caller, form, str(exc), 400)
    except services.NotFound as exc:
        return not_found(request, exc.detail)
    except services.ServiceError as exc:
        return model_page(model_id, request, session, caller, form, exc.detail, exc.status)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def _job_context(session: SessionDep, caller: Caller, job: Job,
                 cert_id: str | None) -> dict[str, Any]:
    model = session.get(ModelRecord, job.model_id)
    prop = session.execute(select(PropertyRecord.format, PropertyRecord.text)
                           .where(PropertyRecord.id == job.property_id)).first()
    cert = session.get(Certificate, cert_id) if cert_id else None
    input_shape = (model.summary or {}).get("input", {}).get("shape", []) if model else []
    text = prop.text if prop else ""
    spec = _spec(job)
    return {"job": job, "model": model, "certificate": cert, "kind": job.kind,
            "lipschitz": lipschitz_view(spec, job.result, job.progress,
                                        prop.format if prop else "")
            if job.kind == "lipschitz" and spec is not None else None,
            "outcome": queries.outcome(job.state, job.verdict),
            "finished": job.state in FINISHED, "plots": bound_plots(job.progress, job.result),
            "final_point": final_point(job.result),
            "counterexamples": counterexample_views(job.result, input_shape),
            "property_format": prop.format if prop else "",
            "property_text": text[:MAX_PROPERTY_CHARS],
            "property_truncated": len(text) > MAX_PROPERTY_CHARS,
            "certificate_json": json.dumps(cert.body, indent=2) if cert else None,
            "proof": proof_view(cert, job.result)}


def _spec(job: Job) -> JobSpec | None:
    try:
        return JobSpec.from_stored(job.options)
    except ValueError:  # a row this version cannot read: the page shows the rest
        return None


@router.get("/jobs/{job_id}", response_class=HTMLResponse, name="dashboard_job")
def job_page(job_id: str, request: Request, session: SessionDep, caller: PageCaller,
             error: str | None = None, status_code: int = 200) -> HTMLResponse:
    try:
        job, cert_id = services.get_job(session, caller, job_id)
    except services.NotFound:
        return not_found(request, f"There is no job with id {job_id}.")
    return page(request, "job.html", status_code, title=f"Job {job_id[:8]}", error=error,
                **_job_context(session, caller, job, cert_id))


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_form(job_id: str, request: Request, session: SessionDep,
                caller: PageCaller) -> Response:
    """The cancel button: the service's cancel, then back to the job's page."""
    try:
        services.cancel_job(session, caller, job_id)
    except services.NotFound as exc:
        return not_found(request, exc.detail)
    except services.ServiceError as exc:
        return job_page(job_id, request, session, caller, exc.detail, exc.status)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}/certificate.json", name="dashboard_certificate")
def certificate_download(job_id: str, request: Request, session: SessionDep,
                         caller: PageCaller) -> Response:
    try:
        cert = services.job_certificate(session, caller, job_id)
    except services.NotFound:
        cert = None
    if cert is None:
        return not_found(request, f"Job {job_id} has no certificate (yet).")
    return Response(json.dumps(cert.body, indent=2), media_type="application/json",
                    headers={"Content-Disposition":
                             f'attachment; filename="certificate-{job_id}.json"'})


@router.get("/docs", response_class=HTMLResponse, name="api_reference")
def docs_page(request: Request, _caller: PageCaller) -> HTMLResponse:
    """The API reference, rendered here from the OpenAPI schema (no script, no CDN)."""
    return page(request, "api.html", title="API reference",
                api=api_reference(request.app.openapi()))


@router.get("/login", response_class=HTMLResponse, name="dashboard_login")
def login_page(request: Request, next: str = "/", error: str | None = None,
               status_code: int = 200) -> HTMLResponse:
    return page(request, "login.html", status_code, title="Sign in", next=safe_next(next),
                error=error)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, settings: SettingsDep, session: SessionDep,
          api_key: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
    """Check the key as the API does, then keep it in an HTTP-only, same-site cookie."""
    problem = check_login_key(settings, session, api_key)
    if problem:
        return login_page(request, next, problem, 403)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(COOKIE, api_key.strip(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response

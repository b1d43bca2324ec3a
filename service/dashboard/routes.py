"""The pages: overview, models, a model, a job, login; and the form handlers, which call the
API's own route functions so pages and API create, upload and cancel the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import (
    APIRouter,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from ..api import jobs as api_jobs
from ..api import models as api_models
from ..api.deps import ModelCacheDep, QueueDep, SessionDep, SettingsDep
from ..lipschitz_jobs import job_kind
from ..states import FINISHED
from ..tables import Certificate, Job, ModelRecord, PropertyRecord
from . import queries
from .auth import COOKIE, PageKey, check_login_key, safe_next
from .forms import FormError, job_body
from .views import bound_plots, counterexample_views, final_point, lipschitz_view

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals.update(OUTCOMES=queries.OUTCOMES, urlencode=urlencode)
MAX_PROPERTY_CHARS = 20_000
LIPSCHITZ_FORM_TIMEOUT = "30"


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings = request.app.state.settings
    context.setdefault("keys_required", settings.keys_required)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def not_found(request: Request, what: str) -> HTMLResponse:
    return page(request, "error.html", 404, title="Not found", message=what)


@router.get("/", response_class=HTMLResponse, name="dashboard")
def overview(request: Request, session: SessionDep, _key: PageKey, model: str | None = None,
             verdict: str | None = None, since: str | None = None, until: str | None = None,
             page_no: Annotated[str | None, Query(alias="page")] = None) -> HTMLResponse:
    filters = queries.Filters.parse(model, verdict, since, until, _int(page_no, 1))
    return page(request, "overview.html", title="Overview", filters=filters,
                counts=queries.verdict_counts(session, filters),
                models=queries.model_names(session),
                matrix=queries.verdict_matrix(session, filters),
                jobs=queries.job_page(session, filters),
                lipschitz=queries.lipschitz_jobs(session, filters))


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


@router.get("/models", response_class=HTMLResponse, name="dashboard_models")
def models_page(request: Request, session: SessionDep, _key: PageKey,
                error: str | None = None, status_code: int = 200) -> HTMLResponse:
    rows = session.scalars(select(ModelRecord).order_by(ModelRecord.created_at.desc())).all()
    return page(request, "models.html", status_code, title="Models", rows=rows, error=error)


@router.post("/models", response_class=HTMLResponse)
async def upload_form(request: Request, session: SessionDep, settings: SettingsDep,
                      cache: ModelCacheDep, key: PageKey,
                      file: Annotated[UploadFile, File()]) -> Response:
    """The upload form: the API's upload, then the model's page."""
    try:
        model = await api_models.upload_model(request=request, response=Response(),
                                               session=session, settings=settings,
                                               cache=cache, _key=key, file=file)
    except HTTPException as exc:
        return models_page(request, session, key, error=str(exc.detail),
                           status_code=exc.status_code)
    return RedirectResponse(f"/models/{model.id}", status_code=303)


@router.get("/models/{model_id}", response_class=HTMLResponse, name="dashboard_model")
def model_page(model_id: str, request: Request, session: SessionDep, _key: PageKey,
               form: dict[str, str] | None = None, error: str | None = None,
               status_code: int = 200) -> HTMLResponse:
    row = session.get(ModelRecord, model_id)
    if row is None:
        return not_found(request, f"There is no model with id {model_id}.")
    filters = queries.Filters.parse(None, None, None, None,
                                    _int(request.query_params.get("page"), 1))
    certs = session.execute(select(Certificate.id, Certificate.job_id, Certificate.verdict,
                                   Certificate.created_at)
                            .where(Certificate.model_id == model_id)
                            .order_by(Certificate.created_at.desc()).limit(100)).all()
    return page(request, "model.html", status_code, title=row.filename or model_id[:12],
                model=row, summary=row.summary, certificates=certs,
                jobs=queries.job_page(session, filters, model=model_id),
                form=form or {"kind": "vnnlib", "timeout": "60"}, error=error,
                lipschitz_timeout=LIPSCHITZ_FORM_TIMEOUT)


@router.post("/models/{model_id}/jobs", response_class=HTMLResponse)
async def submit_form(model_id: str, request: Request, session: SessionDep,
                      settings: SettingsDep, queue: QueueDep, cache: ModelCacheDep,
                      key: PageKey) -> Response:
    """The property form: the API's job creation, then the job's page."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    try:
        body = job_body(model_id, form)
        job = api_jobs.create_job(body=body, request=request, response=Response(),
                                  session=session, settings=settings, queue=queue, cache=cache,
                                  _key=key)
    except FormError as exc:
        return model_page(model_id, request, session, key, form, str(exc), 400)
    except HTTPException as exc:
        if exc.status_code == 404:
            return not_found(request, str(exc.detail))
        return model_page(model_id, request, session, key, form, str(exc.detail),
                          exc.status_code)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def _job_context(session: SessionDep, job: Job) -> dict[str, Any]:
    model = session.get(ModelRecord, job.model_id)
    prop = session.execute(select(PropertyRecord.format, PropertyRecord.text)
                           .where(PropertyRecord.id == job.property_id)).first()
    cert = session.scalar(select(Certificate).where(Certificate.job_id == job.id))
    input_shape = (model.summary or {}).get("input", {}).get("shape", []) if model else []
    text = prop.text if prop else ""
    kind = job_kind(job.options)
    return {"job": job, "model": model, "certificate": cert, "kind": kind,
            "lipschitz": lipschitz_view(job.options, job.result, job.progress,
                                        prop.format if prop else "")
            if kind == "lipschitz" else None,
            "outcome": queries.outcome(job.state, job.verdict),
            "finished": job.state in FINISHED, "plots": bound_plots(job.progress, job.result),
            "final_point": final_point(job.result),
            "counterexamples": counterexample_views(job.result, input_shape),
            "property_format": prop.format if prop else "",
            "property_text": text[:MAX_PROPERTY_CHARS],
            "property_truncated": len(text) > MAX_PROPERTY_CHARS,
            "certificate_json": json.dumps(cert.body, indent=2) if cert else None}


@router.get("/jobs/{job_id}", response_class=HTMLResponse, name="dashboard_job")
def job_page(job_id: str, request: Request, session: SessionDep, _key: PageKey,
             error: str | None = None, status_code: int = 200) -> HTMLResponse:
    job = session.get(Job, job_id)
    if job is None:
        return not_found(request, f"There is no job with id {job_id}.")
    return page(request, "job.html", status_code, title=f"Job {job_id[:8]}", error=error,
                **_job_context(session, job))


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_form(job_id: str, request: Request, session: SessionDep, key: PageKey) -> Response:
    """The cancel button: the API's cancel, then back to the job's page."""
    try:
        api_jobs.cancel_job(job_id=job_id, request=request, session=session, _key=key)
    except HTTPException as exc:
        if exc.status_code == 404:
            return not_found(request, str(exc.detail))
        return job_page(job_id, request, session, key, str(exc.detail), exc.status_code)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}/certificate.json", name="dashboard_certificate")
def certificate_download(job_id: str, request: Request, session: SessionDep,
                         _key: PageKey) -> Response:
    cert = session.scalar(select(Certificate).where(Certificate.job_id == job_id))
    if cert is None:
        return not_found(request, f"Job {job_id} has no certificate (yet).")
    return Response(json.dumps(cert.body, indent=2), media_type="application/json",
                    headers={"Content-Disposition":
                             f'attachment; filename="certificate-{job_id}.json"'})


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

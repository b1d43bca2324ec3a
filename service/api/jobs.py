"""/jobs: create (validated against the model, enqueued after commit), get, cancel, list."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import ValidationError

from .. import services
from ..jobspec import JobKind
from ..keys import Caller
from ..tables import Job
from .deps import (
    KeyHeader,
    ModelCacheDep,
    QueueDep,
    ReadCaller,
    SessionDep,
    SettingsDep,
    WriteCaller,
    authenticate,
    read_key,
)
from .models import Limit, Offset
from .schemas import AUTH_ERRORS, JobCreate, JobList, JobPublic, ProgressPublic, error_responses

router = APIRouter(prefix="/jobs", tags=["jobs"])
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def job_public(job: Job, request: Request, certificate_id: str | None) -> JobPublic:
    cert_url = (str(request.url_for("get_certificate", certificate_id=certificate_id))
                if certificate_id else None)
    return JobPublic(
        id=job.id, url=str(request.url_for("get_job", job_id=job.id)), kind=job.kind,
        owner=job.owner, model_id=job.model_id, property_id=job.property_id, state=job.state,
        verdict=job.verdict, message=job.message, cancel_requested=job.cancel_requested,
        options=job.options, progress=_progress(job), result=job.result,
        certificate_url=cert_url, worker=job.worker, device=job.device, attempts=job.attempts,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        seconds=job.seconds)


def _progress(job: Job) -> ProgressPublic | None:
    """The job's progress; None where the stored value is not one (no one row's data may
    break a list)."""
    if not isinstance(job.progress, dict):
        return None
    try:
        return ProgressPublic.model_validate(job.progress)
    except ValidationError:
        return None


@router.post("", status_code=202, response_model=JobPublic,
             responses=error_responses(*AUTH_ERRORS, 404, 409, 413, 422, 503))
def create_job(body: JobCreate, request: Request, response: Response, session: SessionDep,
               settings: SettingsDep, queue: QueueDep, cache: ModelCacheDep,
               caller: WriteCaller) -> JobPublic:
    """Check the property (or the Lipschitz region) against the model, store the job,
    then queue it (202, with its URL in Location)."""
    job = services.create_job(session, caller, body, settings, queue, cache)
    url = str(request.url_for("get_job", job_id=job.id))
    response.headers["Location"] = url
    return job_public(job, request, None)


@router.get("/{job_id}", response_model=JobPublic, name="get_job",
            responses=error_responses(*AUTH_ERRORS, 404, 422))
async def get_job(job_id: str, request: Request, key: KeyHeader) -> JobPublic:
    """The job's state, progress, and its result and certificate link once finished.

    The path every client polls, so it runs on the event loop: one primary-key lookup
    (well under a millisecond) costs less than the four worker-thread hops of a sync
    endpoint with a session dependency, whose threads also contend for the GIL under load
    (bench/service_load.py: p99 30 ms -> 13 ms, saturation 309 -> 1009 requests/s)."""
    return job_view(request, job_id, key)


def job_view(request: Request, job_id: str, key: str | None = None,
             caller: Caller | None = None) -> JobPublic:
    """The job as ``caller`` (else the request's key) sees it; 404 when it cannot."""
    with request.app.state.sessions() as session:
        if caller is None:
            caller = authenticate(request.app.state.settings, session, read_key(request, key))
        try:
            job, cert_id = services.get_job(session, caller, job_id)
        except services.NotFound as exc:
            raise HTTPException(404, exc.detail) from None
        return job_public(job, request, cert_id)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic,
             responses=error_responses(*AUTH_ERRORS, 404, 409, 422))
def cancel_job(job_id: str, request: Request, session: SessionDep,
               caller: WriteCaller) -> JobPublic:
    """Cancel a queued job at once; ask a running job's worker to stop."""
    return job_public(services.cancel_job(session, caller, job_id), request, None)


@router.get("", response_model=JobList, responses=error_responses(*AUTH_ERRORS, 422))
def list_jobs(request: Request, session: SessionDep, caller: ReadCaller,
              model: Annotated[str | None, Query(max_length=64)] = None,
              state: JobState | None = None,
              verdict: Annotated[str | None, Query(max_length=16)] = None,
              kind: JobKind | None = None, limit: Limit = 50, offset: Offset = 0) -> JobList:
    """The caller's jobs (an admin's: all), newest first, filtered."""
    filters = services.JobFilters(model=model, state=state, verdict=verdict, kind=kind)
    jobs, certs, total = services.list_jobs(session, caller, filters, limit, offset)
    return JobList(items=[job_public(j, request, certs.get(j.id)) for j in jobs],
                   total=total, limit=limit, offset=offset)

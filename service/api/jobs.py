"""/jobs: create (validated against the model, enqueued after commit), get, cancel, list."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from verifier.errors import ModelError
from verifier.importer.onnx_import import Model

from ..engine import canonical_property_text, engine_settings, parse_property
from ..lipschitz_jobs import REGION_FORMAT, job_kind, region_text, validate_job
from ..settings import ServiceSettings
from ..states import FINISHED, transition
from ..tables import JOB_KINDS, JOB_STATES, Certificate, Job, PropertyRecord, kind_column
from .deps import ModelCacheDep, QueueDep, SessionDep, SettingsDep, WriteKey
from .models import get_model_row, unexpected_model_error
from .schemas import JobCreate, JobList, JobPublic, ProgressPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_public(job: Job, request: Request, certificate_id: str | None) -> JobPublic:
    cert_url = (str(request.url_for("get_certificate", certificate_id=certificate_id))
                if certificate_id else None)
    return JobPublic(
        id=job.id, url=str(request.url_for("get_job", job_id=job.id)),
        kind=job_kind(job.options), model_id=job.model_id,
        property_id=job.property_id, state=job.state, verdict=job.verdict, message=job.message,
        cancel_requested=job.cancel_requested, options=job.options,
        progress=ProgressPublic(**job.progress) if job.progress else None, result=job.result,
        certificate_url=cert_url, worker=job.worker, device=job.device, attempts=job.attempts,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        seconds=job.seconds)


def _certificate_ids(session: Session, job_ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(Certificate.job_id, Certificate.id)
                           .where(Certificate.job_id.in_(job_ids))).all()
    return {job_id: cert_id for job_id, cert_id in rows}


def _get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    return job


def _store_property(session: Session, fmt: str, text: str) -> str:
    prop_id = hashlib.sha256(f"{fmt}\n{text}".encode()).hexdigest()
    if session.get(PropertyRecord, prop_id) is None:
        session.add(PropertyRecord(id=prop_id, format=fmt, text=text))
        session.flush()  # the job's foreign key needs the row first
    return prop_id


def _validated_options(body: JobCreate, settings: ServiceSettings) -> dict[str, Any]:
    options = body.options.model_dump()
    if options["timeout"] > settings.max_job_timeout:
        raise HTTPException(422, f"options.timeout {options['timeout']:g} s is above the "
                                 f"server's limit of {settings.max_job_timeout:g} s")
    if settings.worker_backend == "local" and str(options["device"]).startswith("cuda") \
            and not torch.cuda.is_available():
        raise HTTPException(422, f"options.device {options['device']!r}: this server's "
                                 "workers have no CUDA device; use \"cpu\"")
    try:
        engine_settings(options)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise HTTPException(422, f"invalid options: {exc}") from None
    return options


def _property_text(body: JobCreate) -> tuple[str, str]:
    """The job's property record: the property as given, or a lipschitz job's region."""
    if body.property is not None:
        fmt = body.property.format
        return fmt, canonical_property_text(fmt, body.property.value)
    lip = body.lipschitz
    assert lip is not None  # JobCreate checked that one of the two is there
    return REGION_FORMAT, region_text(lip.center, lip.lower, lip.upper)


def _check_job(body: JobCreate, fmt: str, text: str, options: dict[str, Any],
               model: Model) -> None:
    """422 when the property (verify) or the Lipschitz parameters do not fit the model."""
    try:
        if body.kind == "lipschitz":
            validate_job(fmt, text, options, model)
        else:
            parse_property(fmt, text, model)
    except ValueError as exc:
        what = "lipschitz job" if body.kind == "lipschitz" else "property"
        raise HTTPException(422, f"invalid {what}: {exc}") from None
    except Exception as exc:  # a parser failure it did not foresee: still a clear 422
        what = "lipschitz job" if body.kind == "lipschitz" else "property"
        raise HTTPException(422, f"the {what} cannot be read (an internal error, please "
                                 f"report it): {type(exc).__name__}: {exc}") from None


@router.post("", status_code=202, response_model=JobPublic)
def create_job(body: JobCreate, request: Request, response: Response, session: SessionDep,
               settings: SettingsDep, queue: QueueDep, cache: ModelCacheDep,
               _key: WriteKey) -> JobPublic:
    """Check the property (or the Lipschitz region) against the model, store the job,
    then queue it."""
    row = get_model_row(session, body.model_id)
    try:
        model = cache.get(row.id, lambda: row.onnx_bytes)
    except ModelError as exc:  # stored before the engine changed what it accepts
        raise HTTPException(422, f"the model cannot be verified: {exc}") from None
    except Exception as exc:  # an importer failure it did not foresee: still a clear 422
        raise HTTPException(422, unexpected_model_error(exc)) from None
    fmt, text = _property_text(body)
    options = dict(body.options.model_dump(), kind=body.kind)
    if body.lipschitz is not None:
        options["lipschitz"] = body.lipschitz.stored()
    _check_job(body, fmt, text, options, model)
    options.update(_validated_options(body, settings))
    job = Job(model_id=row.id, property_id=_store_property(session, fmt, text),
              options=options, message="")
    session.add(job)
    session.commit()
    _enqueue(session, queue, job)
    url = str(request.url_for("get_job", job_id=job.id))
    response.headers["Location"] = url
    return job_public(job, request, None)


def _enqueue(session: Session, queue: QueueDep, job: Job) -> None:
    """Send the committed job to the queue; a queue that refuses it fails the job (503)."""
    try:
        queue.enqueue(job.id)
    except Exception as exc:
        transition(session, job.id, "queued", "failed",
                   message=f"the job could not be queued: {exc}")
        session.commit()
        raise HTTPException(503, f"the job queue is unavailable: {exc}") from None


@router.get("/{job_id}", response_model=JobPublic, name="get_job")
async def get_job(job_id: str, request: Request) -> JobPublic:
    """The job's state, progress, and its result and certificate link once finished.

    The path every client polls, so it runs on the event loop: one primary-key lookup
    (well under a millisecond) costs less than the four worker-thread hops of a sync
    endpoint with a session dependency, whose threads also contend for the GIL under load
    (bench/service_load.py: p99 30 ms -> 13 ms, saturation 309 -> 1009 requests/s)."""
    return _job_view(request, job_id)


def _job_view(request: Request, job_id: str) -> JobPublic:
    with request.app.state.sessions() as session:
        row = session.execute(select(Job, Certificate.id)
                              .outerjoin(Certificate, Certificate.job_id == Job.id)
                              .where(Job.id == job_id)).first()
        if row is None:
            raise HTTPException(404, f"no job with id {job_id!r}")
        return job_public(row[0], request, row[1])


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic)
def cancel_job(job_id: str, request: Request, session: SessionDep,
               _key: WriteKey) -> JobPublic:
    """Cancel a queued job at once; ask a running job's worker to stop."""
    job = _get_job(session, job_id)
    for _ in range(3):
        if job.state in FINISHED:
            raise HTTPException(409, f"job {job_id!r} has already finished ({job.state}); "
                                     "there is nothing to cancel")
        done = (transition(session, job_id, "queued", "cancelled", cancel_requested=True,
                           message="cancelled before it started")
                if job.state == "queued" else _request_stop(session, job_id))
        session.commit()
        session.refresh(job)
        if done:
            break
    return job_public(job, request, None)


def _request_stop(session: Session, job_id: str) -> bool:
    done = session.execute(update(Job).where(Job.id == job_id, Job.state == "running")
                           .values(cancel_requested=True))
    return done.rowcount == 1  # type: ignore[attr-defined]


@router.get("", response_model=JobList)
def list_jobs(request: Request, session: SessionDep, model: str | None = None,
              state: str | None = None, verdict: str | None = None, kind: str | None = None,
              limit: int = 50, offset: int = 0) -> JobList:
    if state is not None and state not in JOB_STATES:
        raise HTTPException(400, f"state must be one of {', '.join(JOB_STATES)}; got {state!r}")
    if kind is not None and kind not in JOB_KINDS:
        raise HTTPException(400, f"kind must be one of {', '.join(JOB_KINDS)}; got {kind!r}")
    if not 1 <= limit <= 500 or offset < 0:
        raise HTTPException(400, "limit must be between 1 and 500 and offset at least 0")
    query = select(Job)
    for column, value in ((Job.model_id, model), (Job.state, state), (Job.verdict, verdict),
                          (kind_column(), kind)):
        if value is not None:
            query = query.where(column == value)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = session.scalars(query.order_by(Job.created_at.desc(), Job.id)
                           .limit(limit).offset(offset)).all()
    certs = _certificate_ids(session, [j.id for j in jobs])
    return JobList(items=[job_public(j, request, certs.get(j.id)) for j in jobs],
                   total=total, limit=limit, offset=offset)

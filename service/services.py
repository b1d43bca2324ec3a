"""The service layer: upload, create, cancel, delete, get and list, with the ownership rule,
shared by the API (``service.api``) and the dashboard (``service.dashboard``).

Ownership: a model or job records the key that created it (``owner``); a certificate is
its job's.  A caller that does not see everything (``Caller.sees_all``: an admin key, or the
local user of a server without required keys) sees only its own objects, and another key's
object is answered as if it did not exist (``NotFound``), for reads and writes alike.

Errors are ``ServiceError``s carrying the HTTP status they stand for; the API answers them
as JSON, the dashboard as a page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx
import torch
from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session

from verifier.errors import ModelError
from verifier.importer.onnx_import import Model

from .api.schemas import JobCreate
from .engine import (
    EngineModel,
    ModelCache,
    canonical_property_text,
    import_model,
    parse_property,
)
from .jobspec import JobSpec
from .keys import Caller
from .lipschitz_jobs import REGION_FORMAT, region_text, validate_job
from .queues import JobQueue
from .settings import ServiceSettings
from .states import FINISHED, transition
from .tables import ACTIVE_STATES, Certificate, Job, ModelRecord, PropertyRecord


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP status it answers with."""

    status = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class BadInput(ServiceError):
    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class TooLarge(ServiceError):
    status = 413


class Invalid(ServiceError):
    status = 422


class Unavailable(ServiceError):
    status = 503


# -- ownership ---------------------------------------------------------------------------
def owned_by(column: InstrumentedAttribute[str | None] | ColumnElement[Any],
             caller: Caller) -> list[ColumnElement[bool]]:
    """The WHERE clauses that keep the rows ``caller`` may see (none: all of them)."""
    return [] if caller.sees_all else [column == caller.key_id]


def model_id_for(owner: str | None, sha256: str) -> str:
    """A model's id: the bytes' sha256 without an owner, else a hash of owner and sha256
    (the same bytes give one model per key, and one key's id says nothing of another's)."""
    if owner is None:
        return sha256
    return hashlib.sha256(f"{owner}:{sha256}".encode()).hexdigest()


# -- models ------------------------------------------------------------------------------
def get_model(session: Session, caller: Caller, model_id: str) -> ModelRecord:
    """The model with this id, or the caller's own model with this sha256."""
    row = session.get(ModelRecord, model_id)
    if row is not None and (caller.sees_all or row.owner == caller.key_id):
        return row
    if caller.key_id is not None:
        own = session.scalar(select(ModelRecord).where(
            ModelRecord.sha256 == model_id, ModelRecord.owner == caller.key_id))
        if own is not None:
            return own
    raise NotFound(f"no model with id {model_id!r}")


def list_models(session: Session, caller: Caller, limit: int, offset: int
                ) -> tuple[Sequence[ModelRecord], int]:
    where = owned_by(ModelRecord.owner, caller)
    rows = session.scalars(select(ModelRecord).where(*where)
                           .order_by(ModelRecord.created_at.desc(), ModelRecord.id)
                           .limit(limit).offset(offset)).all()
    total = session.scalar(select(func.count()).select_from(ModelRecord).where(*where)) or 0
    return rows, total


def check_is_onnx(data: bytes) -> None:
    """400 for bytes that are not an ONNX model at all (the engine judges the rest)."""
    if not data:
        raise BadInput("the uploaded file is empty")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several unrelated types
        raise BadInput(f"the upload is not an ONNX model: it does not parse as ONNX "
                       f"protobuf ({exc})") from None
    if not proto.graph.node and not proto.graph.output:
        raise BadInput("the upload is not an ONNX model: no graph found (is the file "
                       "truncated?)")


def unexpected_model_error(exc: Exception) -> str:
    """The message for an import failure that is not a ModelError (an engine bug)."""
    return (f"the model cannot be imported (an internal error of the importer, please report "
            f"it with the model): {type(exc).__name__}: {exc}")


def import_checked(data: bytes) -> EngineModel:
    """The engine's model for uploaded bytes; 400 / 422 saying why it cannot be used."""
    check_is_onnx(data)
    try:
        return import_model(data)
    except ModelError as exc:
        raise Invalid(f"the model cannot be verified: {exc}") from None
    except Exception as exc:  # an importer failure it did not foresee: still a clear 422
        raise Invalid(unexpected_model_error(exc)) from None


def store_model(session: Session, caller: Caller, data: bytes, filename: str,
                cache: ModelCache) -> tuple[ModelRecord, bool]:
    """Import and store uploaded bytes for ``caller``: (the model, whether it is new).
    The same bytes from the same key give the same model (also when two uploads race)."""
    model = import_checked(data)
    model_id = model_id_for(caller.owner, model.sha256)
    existing = session.get(ModelRecord, model_id)
    if existing is not None:
        return existing, False
    summary = dict(model.describe(), n_inputs=model.n_inputs, n_outputs=model.n_outputs)
    row = ModelRecord(id=model_id, sha256=model.sha256, owner=caller.owner,
                      filename=filename[:255], size_bytes=len(data), onnx_bytes=data,
                      summary=summary)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # the same upload committed first
        session.rollback()
        return session.get_one(ModelRecord, model_id), False
    cache.get(model.sha256, lambda: data)
    return row, True


def delete_model(session: Session, caller: Caller, model_id: str) -> None:
    """Delete a model with its jobs and certificates; 409 while jobs on it are active.

    Atomic against a job created meanwhile: the model row is locked first (PostgreSQL:
    FOR UPDATE waits for a transaction inserting a job on it), and the model is deleted
    only where no active job refers to it, in the same statement (SQLite: under the write
    lock), so a job answered 202 is never deleted with its model."""
    row = get_model(session, caller, model_id)
    model_id = row.id
    session.execute(select(ModelRecord.id).where(ModelRecord.id == model_id)
                    .with_for_update())
    if _active_jobs(session, model_id):
        session.rollback()
        raise Conflict(_busy_model(model_id))
    active = exists().where(Job.model_id == model_id, Job.state.in_(ACTIVE_STATES))
    try:
        session.execute(delete(Certificate).where(Certificate.model_id == model_id))
        session.execute(delete(Job).where(Job.model_id == model_id,
                                          Job.state.not_in(ACTIVE_STATES)))
        gone = session.execute(delete(ModelRecord).where(ModelRecord.id == model_id, ~active))
        if gone.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(_busy_model(model_id))
        session.commit()
    except (Conflict, OperationalError):
        session.rollback()
        raise Conflict(_busy_model(model_id)) from None


def _active_jobs(session: Session, model_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(
        Job.model_id == model_id, Job.state.in_(ACTIVE_STATES))) or 0


def _busy_model(model_id: str) -> str:
    return (f"model {model_id!r} has queued or running jobs; cancel them or wait for them "
            "to finish first")


# -- jobs --------------------------------------------------------------------------------
def get_job(session: Session, caller: Caller, job_id: str) -> tuple[Job, str | None]:
    """The job and its certificate's id (None before it has one)."""
    row = session.execute(select(Job, Certificate.id)
                          .outerjoin(Certificate, Certificate.job_id == Job.id)
                          .where(Job.id == job_id, *owned_by(Job.owner, caller))).first()
    if row is None:
        raise NotFound(f"no job with id {job_id!r}")
    return row[0], row[1]


@dataclass(frozen=True)
class JobFilters:
    model: str | None = None
    state: str | None = None
    verdict: str | None = None
    kind: str | None = None


def list_jobs(session: Session, caller: Caller, filters: JobFilters, limit: int,
              offset: int) -> tuple[Sequence[Job], dict[str, str], int]:
    """A page of the caller's jobs, newest first: (jobs, certificate id by job id, total)."""
    query = select(Job).where(*owned_by(Job.owner, caller))
    for column, value in ((Job.model_id, filters.model), (Job.state, filters.state),
                          (Job.verdict, filters.verdict), (Job.kind, filters.kind)):
        if value is not None:
            query = query.where(column == value)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = session.scalars(query.order_by(Job.created_at.desc(), Job.id)
                           .limit(limit).offset(offset)).all()
    certs = session.execute(select(Certificate.job_id, Certificate.id)
                            .where(Certificate.job_id.in_([j.id for j in jobs]))).all()
    return jobs, {job_id: cert_id for job_id, cert_id in certs}, total


def create_job(session: Session, caller: Caller, body: JobCreate, settings: ServiceSettings,
               queue: JobQueue, cache: ModelCache) -> Job:
    """Check the property (or the Lipschitz region) against the model and the options
    against the server, store the job for ``caller``, commit, then queue it."""
    row = get_model(session, caller, body.model_id)
    model = _engine_model(cache, row)
    spec = body.spec()
    check_limits(spec, settings)
    fmt, text = property_text(body)
    check_job(spec, fmt, text, model)
    job = _insert_job(session, caller, row.id, spec, fmt, text)
    enqueue(session, queue, job)
    return job


def _engine_model(cache: ModelCache, row: ModelRecord) -> EngineModel:
    try:
        return cache.get(row.sha256, lambda: row.onnx_bytes)
    except ModelError as exc:  # stored before the engine changed what it accepts
        raise Invalid(f"the model cannot be verified: {exc}") from None
    except Exception as exc:  # an importer failure it did not foresee: still a clear 422
        raise Invalid(unexpected_model_error(exc)) from None


def check_limits(spec: JobSpec, settings: ServiceSettings) -> None:
    """422 for options this server refuses: a timeout over its limit, a CUDA device its
    local workers lack, settings the engine refuses."""
    if spec.timeout > settings.max_job_timeout:
        raise Invalid(f"options.timeout {spec.timeout:g} s is above the server's limit of "
                      f"{settings.max_job_timeout:g} s")
    if settings.worker_backend == "local" and spec.device.startswith("cuda") \
            and not torch.cuda.is_available():
        raise Invalid(f"options.device {spec.device!r}: this server's workers have no CUDA "
                      'device; use "cpu"')
    try:
        spec.engine_settings()
    except (ValueError, TypeError, RuntimeError) as exc:
        raise Invalid(f"invalid options: {exc}") from None


def property_text(body: JobCreate) -> tuple[str, str]:
    """The job's property record: the property as given, or a lipschitz job's region."""
    if body.property is not None:
        fmt = body.property.format
        return fmt, canonical_property_text(fmt, body.property.value)
    lip = body.lipschitz
    assert lip is not None  # JobCreate checked that one of the two is there
    return REGION_FORMAT, region_text(lip.center, lip.lower, lip.upper)


def check_job(spec: JobSpec, fmt: str, text: str, model: EngineModel) -> None:
    """422 when the property (verify) or the Lipschitz job does not fit the model."""
    what = "lipschitz job" if spec.kind == "lipschitz" else "property"
    if spec.kind == "lipschitz" and not isinstance(model, Model):
        raise Invalid("a Lipschitz job needs a model the engine can bound; it cannot import "
                      f"this one: {model.reason}")
    try:
        if spec.kind == "lipschitz" and isinstance(model, Model):
            validate_job(fmt, text, spec, model)
        else:
            parse_property(fmt, text, model)
    except ValueError as exc:
        raise Invalid(f"invalid {what}: {exc}") from None
    except Exception as exc:  # a parser failure it did not foresee: still a clear 422
        raise Invalid(f"the {what} cannot be read (an internal error, please report it): "
                      f"{type(exc).__name__}: {exc}") from None


def _insert_job(session: Session, caller: Caller, model_id: str, spec: JobSpec, fmt: str,
                text: str) -> Job:
    """Store the job; 409 when its model was deleted meanwhile (nothing is stored)."""
    prop_id = hashlib.sha256(f"{fmt}\n{text}".encode()).hexdigest()
    for _ in range(2):  # a second try when the same property was stored meanwhile
        try:
            if session.get(PropertyRecord, prop_id) is None:
                session.add(PropertyRecord(id=prop_id, format=fmt, text=text))
                session.flush()  # the job's foreign key needs the row first
        except IntegrityError:  # stored by another request meanwhile
            session.rollback()
            continue
        job = Job(model_id=model_id, owner=caller.owner, kind=spec.kind,
                  property_id=prop_id, options=spec.stored(), message="")
        session.add(job)
        try:
            session.commit()
            return job
        except IntegrityError:
            session.rollback()
            if session.get(ModelRecord, model_id) is None:
                break
    raise Conflict(f"model {model_id!r} was deleted while the job was being created; "
                   "no job was created")


def enqueue(session: Session, queue: JobQueue, job: Job) -> None:
    """Send the committed job to the queue; a queue that refuses it fails the job (503)."""
    try:
        queue.enqueue(job.id)
    except Exception as exc:
        transition(session, job.id, "queued", "failed",
                   message=f"the job could not be queued: {exc}")
        session.commit()
        raise Unavailable(f"the job queue is unavailable: {exc}") from None


def cancel_job(session: Session, caller: Caller, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running job's worker to stop; 409 once it has
    finished."""
    job, _cert = get_job(session, caller, job_id)
    for _ in range(3):
        if job.state in FINISHED:
            raise Conflict(f"job {job_id!r} has already finished ({job.state}); there is "
                           "nothing to cancel")
        done = (transition(session, job_id, "queued", "cancelled", cancel_requested=True,
                           message="cancelled before it started")
                if job.state == "queued" else _request_stop(session, job_id))
        session.commit()
        session.refresh(job)
        if done:
            break
    return job


def _request_stop(session: Session, job_id: str) -> bool:
    done = session.execute(update(Job).where(Job.id == job_id, Job.state == "running")
                           .values(cancel_requested=True))
    return done.rowcount == 1  # type: ignore[attr-defined]


# -- certificates ------------------------------------------------------------------------
def get_certificate(session: Session, caller: Caller, certificate_id: str) -> Certificate:
    row = session.scalar(select(Certificate).join(Job, Job.id == Certificate.job_id)
                         .where(Certificate.id == certificate_id,
                                *owned_by(Job.owner, caller)))
    if row is None:
        raise NotFound(f"no certificate with id {certificate_id!r}")
    return row


def job_certificate(session: Session, caller: Caller, job_id: str) -> Certificate | None:
    """The certificate of the caller's job ``job_id``; None before it has one."""
    get_job(session, caller, job_id)
    return session.scalar(select(Certificate).where(Certificate.job_id == job_id))


def list_model_certificates(session: Session, caller: Caller, model_id: str, limit: int,
                            offset: int) -> tuple[Sequence[Certificate], int]:
    """The certificates of the caller's jobs on the model, newest first."""
    model = get_model(session, caller, model_id)
    where = [Certificate.model_id == model.id, *owned_by(Job.owner, caller)]
    base = select(Certificate).join(Job, Job.id == Certificate.job_id).where(*where)
    rows = session.scalars(base.order_by(Certificate.created_at.desc(), Certificate.id)
                           .limit(limit).offset(offset)).all()
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    return rows, total


def certificate_properties(session: Session, certificate_ids: Sequence[str]
                           ) -> dict[str, tuple[str, str]]:
    """The property (id, format) each certificate is about, by certificate id."""
    rows = session.execute(select(Certificate.id, Job.property_id, PropertyRecord.format)
                           .join(Job, Job.id == Certificate.job_id)
                           .join(PropertyRecord, PropertyRecord.id == Job.property_id)
                           .where(Certificate.id.in_(certificate_ids))).all()
    return {cert_id: (prop_id, fmt) for cert_id, prop_id, fmt in rows}


def certificate_property(session: Session, caller: Caller,
                         certificate_id: str) -> PropertyRecord:
    """The property the caller's certificate is about (its text as stored: the bytes its
    ``property_sha256`` and its proof name)."""
    cert = get_certificate(session, caller, certificate_id)
    return session.scalars(select(PropertyRecord).join(Job, Job.property_id == PropertyRecord.id)
                           .where(Job.id == cert.job_id)).one()


def certificate_proof(session: Session, caller: Caller, certificate_id: str) -> bytes:
    """The proof file of the caller's certificate; 404 saying why when it has none."""
    cert = get_certificate(session, caller, certificate_id)
    if cert.proof_status == "checked" and cert.proof_data is not None:
        return cert.proof_data
    why = {"none": "none was searched", "rejected": "the checker rejected the one found",
           "unavailable": "none is available", "checked": "its file is missing"}
    reason = f": {cert.proof_reason}" if cert.proof_reason else ""
    raise NotFound(f"certificate {certificate_id!r} has no proof ("
                   f"{why.get(cert.proof_status, cert.proof_status)}){reason}")


def model_file(session: Session, caller: Caller, model_id: str) -> tuple[ModelRecord, bytes]:
    """The caller's model and its ONNX file's bytes, as uploaded."""
    row = get_model(session, caller, model_id)
    return row, row.onnx_bytes

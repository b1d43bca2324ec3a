"""The one job function, ``run_job``, run by every backend (local pool and Celery).

It receives a job id and a token, never data, and is idempotent.  The token is the job's
``attempts`` when the message was sent: a worker claims the job (queued -> running, one more
attempt) only if it is still queued on that token, in one guarded UPDATE, so of any number
of deliveries of one message (Redis's visibility-timeout redelivery, a re-send by the
reconciler) exactly one runs it; the others are acknowledged and dropped.  A running job is
never taken over by a delivery: the reconciler (``service.reconciler``) re-queues it once
its worker's heartbeat is stale.  Each attempt is fenced by its number, so an attempt that
was given up on can no longer write to the job.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, select, update

from verifier.certificate import make_certificate
from verifier.errors import ModelError
from verifier.importer.onnx_import import Model
from verifier.lipschitz import LipschitzProgress
from verifier.property import SpecError
from verifier.property.core import Property
from verifier.search.blackbox import OpaqueModel, verify_opaque
from verifier.verify import Progress, verify

from . import proofs
from .db import session_scope
from .engine import EngineModel, import_model, parse_property
from .jobspec import JobSpec
from .lipschitz_jobs import run_lipschitz
from .settings import ServiceSettings
from .states import transition
from .tables import Certificate, Job, ModelRecord, PropertyRecord, utcnow

log = logging.getLogger(__name__)


def worker_name(pid: int | None = None) -> str:
    """How a job records the process running it: ``host:pid`` (this process by default)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def run_job(job_id: str, settings: ServiceSettings | None = None,
            device: str | None = None, token: int | None = None) -> str:
    """Run job ``job_id`` to its end and return the job's state afterwards.

    ``settings`` default to those of the environment; ``device`` (a worker's own) overrides
    the device the job asked for; ``token`` is the attempt count the message was sent for
    (None: whichever, for callers outside the queues).  A message the job is not waiting
    for (finished, running, or re-queued since it was sent) runs nothing.
    """
    settings = settings or ServiceSettings()
    attempt = claim(job_id, settings, device, token)
    if attempt is None:
        return _state_of(job_id, settings)
    log.info("job started", extra={"job_id": job_id, "attempt": attempt})
    try:
        _run_attempt(job_id, attempt, settings, device)
    except Exception as exc:  # the job fails with the reason; the worker lives on
        log.exception("job failed", extra={"job_id": job_id, "attempt": attempt})
        with session_scope(settings) as s:
            transition(s, job_id, "running", "failed", attempt=attempt,
                       message=failure_message(exc))
    state = _state_of(job_id, settings)
    log.info("job ended", extra={"job_id": job_id, "attempt": attempt, "state": state})
    return state


def failure_message(exc: Exception) -> str:
    """Why a job failed, for its ``message``: the engine's own words for a model or property
    it refuses, else the internal error's type and message."""
    if isinstance(exc, ModelError):
        return f"the model cannot be verified: {exc}"
    if isinstance(exc, SpecError):
        return f"invalid property: {exc}"
    return f"internal error: {type(exc).__name__}: {exc}"


def _state_of(job_id: str, settings: ServiceSettings) -> str:
    with session_scope(settings) as s:
        return s.scalar(select(Job.state).where(Job.id == job_id)) or "missing"


def claim(job_id: str, settings: ServiceSettings, device: str | None,
          token: int | None = None) -> int | None:
    """Claim the queued job for a new attempt and return its number; None when this
    message is not the one the job waits for (it is then dropped).

    The UPDATE is guarded by state and attempt count, so two workers holding copies of one
    message cannot both win.  A job whose cancellation was asked for while it ran and which
    was then re-queued is cancelled instead.
    """
    with session_scope(settings) as s:
        job = s.get(Job, job_id)
        if job is None or job.state != "queued" or (token is not None and job.attempts != token):
            log.info("message dropped: the job is not waiting for it", extra={
                "job_id": job_id, "token": token, "state": job.state if job else "missing"})
            return None
        if job.cancel_requested:
            transition(s, job_id, "queued", "cancelled", message="cancelled before it started")
            return None
        attempt = job.attempts + 1
        now = utcnow()
        claimed = transition(
            s, job_id, "queued", "running", attempt=job.attempts, attempts=attempt,
            worker=worker_name(), device=device or JobSpec.from_stored(job.options).device,
            started_at=now, heartbeat_at=now, progress=None)
        return attempt if claimed else None


@dataclass
class Outcome:
    """What one run of a job stores: verdict ``error`` fails the job, any other succeeds
    it; the certificate is issued when there is one."""

    verdict: str
    message: str
    seconds: float
    result: dict[str, Any] | None
    certificate: dict[str, Any] | None
    proof: proofs.ProofRecord | None = None  # None: none searched (proofs.not_searched)


@dataclass(frozen=True)
class JobInputs:
    """What a run reads of its job: the model's bytes (and the engine's model of them) and
    the property's stored format and text."""

    onnx_bytes: bytes
    fmt: str
    text: str
    model: EngineModel = field(repr=False)


def _run_attempt(job_id: str, attempt: int, settings: ServiceSettings,
                 device: str | None) -> None:
    with session_scope(settings) as s:
        job = s.get_one(Job, job_id)
        spec = JobSpec.from_stored(job.options)
        onnx_bytes = s.get_one(ModelRecord, job.model_id).onnx_bytes
        prop_row = s.get_one(PropertyRecord, job.property_id)
        fmt, text = prop_row.format, prop_row.text
    monitor = JobMonitor(job_id, attempt, settings)
    monitor.start()  # heartbeats from now on: a large model's import must not look dead
    try:
        model = import_model(onnx_bytes)
        if settings.test_job_delay and not monitor.sleep(settings.test_job_delay):
            outcome = Outcome("unknown", "cancelled", 0.0, None, None)
        elif spec.kind == "lipschitz":
            outcome = _run_lipschitz(model, fmt, text, spec, monitor)
        else:
            inputs = JobInputs(onnx_bytes, fmt, text, model)
            outcome = _run_verify(inputs, spec, device, settings, monitor)
    finally:
        monitor.stop()
    _finish(job_id, attempt, settings, monitor, outcome)


def _run_verify(inputs: JobInputs, spec: JobSpec, device: str | None,
                settings: ServiceSettings, monitor: JobMonitor) -> Outcome:
    """Verify, then (a verified VNN-LIB property, proofs on) search and check a proof
    within the same run; under ``required`` the verdict stands only with a checked one."""
    model = inputs.model
    prop = parse_property(inputs.fmt, inputs.text, model)
    engine = spec.engine_settings(device)
    if engine.device == "cpu":  # a GPU's budget stays the engine's (85% of its memory)
        engine = dataclasses.replace(engine, memory_budget=settings.memory_per_worker)
    if isinstance(model, OpaqueModel):  # on onnxruntime alone (search/blackbox.py)
        result = verify_opaque(model, prop, engine.timeout)
    else:
        result = verify(model, prop, engine, progress=monitor.report,
                        cancel=monitor.cancelled.is_set)
    outcome = Outcome(result.verdict, result.message, result.seconds, result.to_dict(),
                      make_certificate(model, inputs.text, engine, result))
    outcome.proof = proofs.not_searched(settings.proofs, result.verdict, inputs.fmt)
    if outcome.proof is None and isinstance(model, OpaqueModel):
        outcome.proof = proofs.ProofRecord(
            "unavailable", "proofs cover models the engine can bound; this verdict comes "
                           "from evaluating the model on onnxruntime")
    if outcome.proof is None and not monitor.cancelled.is_set():  # (cancelled: see _finish)
        outcome.proof = _prove(inputs, prop, engine.device, settings, monitor, result.seconds)
    if settings.proofs == "required" and result.verdict == "verified" and \
            (outcome.proof is None or outcome.proof.status != "checked"):
        return _withheld(outcome, outcome.proof)
    return outcome


def _prove(inputs: JobInputs, prop: Property, device: str, settings: ServiceSettings,
           monitor: JobMonitor, elapsed: float) -> proofs.ProofRecord:
    """The proof search and check, reported as the stage "proof" (its elapsed time
    continues the verification's)."""
    start = time.monotonic()
    done = monitor.latest.domains_done if monitor.latest else 0

    def cancel() -> bool:  # called by the search at each step: progress, then the flag
        monitor.report(Progress("proof", elapsed + time.monotonic() - start,
                                domains_done=done))
        return monitor.cancelled.is_set()

    cancel()
    assert isinstance(inputs.model, Model)  # (a model run on onnxruntime alone has none)
    try:
        return proofs.search_and_check(inputs.model, prop, inputs.onnx_bytes, inputs.text,
                                       settings.proof_timeout, device, cancel)
    except Exception as exc:  # the verdict is the engine's; the proof is reported missing
        log.exception("proof search failed", extra={"job_id": monitor.job_id})
        return proofs.internal_error(exc, time.monotonic() - start)
    finally:
        cancel()


def _withheld(outcome: Outcome, record: proofs.ProofRecord | None) -> Outcome:
    """A verified outcome published as ``unknown`` for want of a checked proof."""
    record = record or proofs.ProofRecord("none", "the run was cancelled before its proof")
    message = proofs.withheld_message(record)
    result, certificate = proofs.withhold(outcome.result, outcome.certificate, message)
    return Outcome("unknown", message, outcome.seconds, result, certificate, record)


def _run_lipschitz(model: EngineModel, fmt: str, text: str, spec: JobSpec,
                   monitor: JobMonitor) -> Outcome:
    """The Lipschitz bracket under the job's deadline and cancel flag (on the CPU, in
    float64: the engine's Lipschitz code runs there whatever the device).  A bracket that
    is not finite fails the job with the reason (it bounds nothing), as does a model the
    engine cannot import (refused when the job is created, unless the engine changed)."""
    if isinstance(model, OpaqueModel):
        return Outcome("error", "a Lipschitz job needs a model the engine can bound; it "
                       f"cannot import this one: {model.reason}", 0.0, None, None)
    deadline = time.monotonic() + spec.timeout

    def stop() -> bool:
        return monitor.cancelled.is_set() or time.monotonic() >= deadline

    start = time.monotonic()
    try:
        run = run_lipschitz(model, fmt, text, spec, stop, monitor.report_lipschitz)
    except ValueError as exc:  # a job the engine refuses: it fails with the reason
        return Outcome("error", f"{type(exc).__name__}: {exc}", time.monotonic() - start,
                       None, None)
    return Outcome(run.verdict, run.message, time.monotonic() - start, run.result,
                   run.certificate)


def _finish(job_id: str, attempt: int, settings: ServiceSettings, monitor: JobMonitor,
            outcome: Outcome) -> None:
    """Store the outcome, unless a newer attempt has taken the job over."""
    fields: dict[str, Any] = {"result": outcome.result, "verdict": outcome.verdict,
                              "message": outcome.message, "seconds": outcome.seconds,
                              "progress": monitor.snapshot()}
    with session_scope(settings) as s:
        if monitor.cancelled.is_set() and not monitor.superseded.is_set():
            transition(s, job_id, "running", "cancelled", attempt=attempt,
                       **dict(fields, verdict=None, message="cancelled by request"))
            return
        target = "failed" if outcome.verdict == "error" else "succeeded"
        if transition(s, job_id, "running", target, attempt=attempt, **fields) and \
                target == "succeeded" and outcome.certificate is not None:
            job = s.get_one(Job, job_id)
            record = outcome.proof or proofs.ProofRecord(
                "none", f"a {job.kind} job's result has no proof file")
            s.execute(delete(Certificate).where(Certificate.job_id == job_id))
            s.add(Certificate(job_id=job_id, model_id=job.model_id, verdict=outcome.verdict,
                              body=outcome.certificate, **record.columns()))



class JobMonitor:
    """Carries progress and cancellation between the engine and the database.

    The engine's callbacks only touch memory; a thread writes the latest progress and a
    heartbeat every ``progress_interval`` seconds and reads the job's cancel flag.  If the
    job leaves this attempt (cancelled, or taken over by a new attempt) the engine is told
    to stop.
    """

    def __init__(self, job_id: str, attempt: int, settings: ServiceSettings):
        self.job_id, self.attempt, self.settings = job_id, attempt, settings
        self.cancelled = threading.Event()
        self.superseded = threading.Event()
        self._stop = threading.Event()
        self._latest: Progress | None = None
        self._written: Progress | None = None
        self._extra: dict[str, Any] = {}  # kind-specific progress (a Lipschitz bracket)
        self._history: list[dict[str, float]] = []  # bound against time and domains
        self._thread = threading.Thread(target=self._loop, name=f"job-{job_id}", daemon=True)

    HISTORY_POINTS = 200

    def report(self, progress: Progress) -> None:
        if progress.lower_bound is not None and math.isfinite(progress.lower_bound):
            self._history.append({"elapsed": progress.elapsed,
                                  "domains_done": progress.domains_done,
                                  "lower_bound": progress.lower_bound})
            if len(self._history) > self.HISTORY_POINTS:  # thin out, keep first and last
                self._history = self._history[:-1:2] + self._history[-1:]
        self._latest = progress

    def report_lipschitz(self, progress: LipschitzProgress) -> None:
        """A Lipschitz run's progress: its stage and splitting counts as usual, the bracket
        known so far as ``lipschitz_lower`` / ``lipschitz_upper``."""
        self._extra = {"lipschitz_lower": progress.lower, "lipschitz_upper": progress.upper}
        self.report(Progress(progress.stage, progress.elapsed, domains_open=progress.open,
                             domains_done=progress.leaves))

    @property
    def latest(self) -> Progress | None:
        """The last progress reported."""
        return self._latest

    def snapshot(self) -> dict[str, Any] | None:
        if self._latest is None:
            return None
        snap = {**asdict(self._latest), **self._extra}
        for key in ("lower_bound", "lipschitz_lower", "lipschitz_upper"):
            if snap.get(key) is not None and not math.isfinite(snap[key]):
                snap[key] = None  # JSON has no infinities
        return {**snap, "history": list(self._history)}

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless cancelled first; True when the wait ran out."""
        self.report(Progress("waiting", 0.0))
        return not self.cancelled.wait(seconds)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.progress_interval):
            try:
                self._tick()
            except Exception:  # a database hiccup must not kill the job; retry next tick
                time.sleep(self.settings.progress_interval)

    def _tick(self) -> None:
        latest = self._latest
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if latest is not None and latest is not self._written:
            values["progress"] = self.snapshot()
        with session_scope(self.settings) as s:
            row = s.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.state == "running",
                       Job.attempts == self.attempt)
                .values(**values)
                .returning(Job.cancel_requested)
                .execution_options(synchronize_session=False)).first()
        self._written = latest
        if row is None:
            self.superseded.set()
            self.cancelled.set()
        elif row[0]:
            self.cancelled.set()

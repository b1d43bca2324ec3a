"""Recovery: jobs whose worker vanished go back to the queue, and queued jobs whose message
was lost are sent again; never lost, never run twice.

The database is the truth; the broker only carries wake-up calls.  A running job is alive
while its worker's heartbeat (``Job.heartbeat_at``, written every ``progress_interval``)
is fresher than ``job_lease_seconds``; after that it is re-queued, its attempt counted (the
fence in ``service.states.transition`` stops the old attempt from writing if it was only
slow).  A queued job is waiting correctly while the queue holds a message for its current
attempt count (``in_flight``); one without is sent again.  Messages are idempotent
(``service.worker.claim``), so sending one too many is harmless and sending one too few is
what this module repairs.

For a queued job ``heartbeat_at`` is the time it was last (re-)queued: a job is not
re-sent while its sender may still be about to send it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .db import session_scope
from .queues import JobQueue, in_flight
from .settings import ServiceSettings
from .states import transition
from .tables import Job, utcnow

log = logging.getLogger(__name__)


@dataclass
class Repairs:
    """What one reconciliation pass did, by job id."""

    requeued: list[str] = field(default_factory=list)  # running, worker gone: queued again
    resent: list[str] = field(default_factory=list)  # queued, message lost: sent again
    failed: list[str] = field(default_factory=list)  # worker gone too often: given up
    cancelled: list[str] = field(default_factory=list)  # worker gone, cancel was asked

    @property
    def sent(self) -> list[str]:
        return self.requeued + self.resent


def requeue(session: Session, job: Job, settings: ServiceSettings, reason: str) -> str:
    """Take running ``job`` off its vanished worker: back to queued (the attempt counts),
    cancelled when that was asked, failed after ``max_attempts``.  Returns the new state,
    or "running" when the job moved on meanwhile (finished, or a newer attempt)."""
    fields: dict[str, Any]
    if job.cancel_requested:
        target, fields = "cancelled", {"message": "cancelled by request (its worker vanished)"}
    elif job.attempts >= settings.max_attempts:
        target, fields = "failed", {"message": f"gave up after {job.attempts} attempts: the "
                                               "worker running it kept vanishing"}
    else:
        target, fields = "queued", {"message": f"re-queued: {reason}", "heartbeat_at": utcnow()}
    if not transition(session, job.id, "running", target, attempt=job.attempts, **fields):
        return "running"
    log.warning("job %s: %s", target, reason, extra={"job_id": job.id, "attempt": job.attempts,
                                                      "worker": job.worker})
    return target


def _requeue_all(session: Session, jobs: list[Job], settings: ServiceSettings, reason: str,
                 repairs: Repairs) -> None:
    for job in jobs:
        state = requeue(session, job, settings, reason)
        {"queued": repairs.requeued, "failed": repairs.failed,
         "cancelled": repairs.cancelled}.get(state, []).append(job.id)


def stale_running(session: Session, settings: ServiceSettings) -> list[Job]:
    """Running jobs whose worker's heartbeat is older than the lease."""
    stale = utcnow() - timedelta(seconds=settings.job_lease_seconds)
    query = select(Job).where(Job.state == "running",
                              func.coalesce(Job.heartbeat_at, Job.started_at) < stale)
    return list(session.scalars(query.order_by(Job.created_at)).all())


def all_running(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.state == "running")
                                .order_by(Job.created_at)).all())


def resend_lost(session: Session, settings: ServiceSettings, queue: JobQueue,
                repairs: Repairs, startup: bool = False) -> None:
    """Send again each queued job for whose current attempt count the queue holds no
    message.  Periodically only jobs queued longer than ``reconcile_interval`` (their sender
    may be about to send), and nothing when the queue cannot tell what it holds; at
    start-up every queued job, and a queue that cannot tell is taken as empty."""
    query = select(Job.id, Job.attempts).where(Job.state == "queued")
    if not startup:
        settled = utcnow() - timedelta(seconds=settings.reconcile_interval)
        query = query.where(func.coalesce(Job.heartbeat_at, Job.created_at) < settled)
    waiting = session.execute(query.order_by(Job.created_at)).all()
    if not waiting:
        return
    held = in_flight(queue)  # read after the jobs: a message taken meanwhile is re-sent, and
    if held is None and not startup:  # that copy is dropped, its token being out of date
        return
    for job_id, attempts in waiting:
        if job_id in repairs.requeued:
            continue  # sent by this pass
        if held is None or ((job_id, attempts) not in held and (job_id, None) not in held):
            log.warning("queued job's message is missing: sent again",
                        extra={"job_id": job_id, "token": attempts, "startup": startup})
            queue.enqueue(job_id, attempts)
            repairs.resent.append(job_id)


def reconcile(sessions: sessionmaker[Session], settings: ServiceSettings, queue: JobQueue,
              startup: bool = False) -> Repairs:
    """One pass: re-queue running jobs whose worker is gone, then send what must be sent.
    At ``startup`` with the local pool every running job is taken as gone (the pool's
    processes died with the old server).  Safe to run in several processes at once."""
    repairs = Repairs()
    every_running = startup and settings.worker_backend == "local"
    with sessions() as session:
        jobs = all_running(session) if every_running else stale_running(session, settings)
        reason = ("the server restarted while it ran" if every_running
                  else f"no heartbeat from its worker for {settings.job_lease_seconds:g} s")
        _requeue_all(session, jobs, settings, reason, repairs)
        session.commit()
        tokens = {job.id: job.attempts for job in jobs}  # a re-queue keeps the count
    for job_id in repairs.requeued:
        queue.enqueue(job_id, tokens[job_id])
    with sessions() as session:
        resend_lost(session, settings, queue, repairs, startup)
    return repairs


def requeue_abandoned(sessions: sessionmaker[Session], settings: ServiceSettings,
                      queue: JobQueue) -> list[str]:
    """Start-up recovery: the first reconciliation pass; returns the ids of the jobs sent."""
    return reconcile(sessions, settings, queue, startup=True).sent


def requeue_worker(settings: ServiceSettings, worker: str, queue: JobQueue,
                   reason: str) -> list[str]:
    """Re-queue at once the running jobs of ``worker``, a process known to be dead (a local
    pool process that died); returns the ids sent."""
    repairs = Repairs()
    with session_scope(settings) as session:
        jobs = list(session.scalars(select(Job).where(Job.state == "running",
                                                      Job.worker == worker)).all())
        _requeue_all(session, jobs, settings, reason, repairs)
        tokens = {job.id: job.attempts for job in jobs}
    for job_id in repairs.requeued:
        queue.enqueue(job_id, tokens[job_id])
    return repairs.requeued


def give_back(settings: ServiceSettings, worker: str) -> list[str]:
    """Hand back the running jobs of ``worker``, a process the server has just ended on its
    way down: queued again with their attempt uncounted (a restart is not a failure of the
    job), to be sent when the server starts.  Returns their ids."""
    handed = []
    with session_scope(settings) as session:
        for job in session.scalars(select(Job).where(Job.state == "running",
                                                     Job.worker == worker)).all():
            if transition(session, job.id, "running", "queued", attempt=job.attempts,
                          attempts=max(0, job.attempts - 1), heartbeat_at=utcnow(),
                          message="handed back: the server stopped while it ran"):
                log.info("job handed back at shutdown", extra={"job_id": job.id})
                handed.append(job.id)
    return handed

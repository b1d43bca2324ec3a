"""Start-up recovery: jobs whose worker vanished go back to the queue, never lost."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from .queues import JobQueue
from .settings import ServiceSettings
from .states import transition
from .tables import Job, utcnow


def abandoned_jobs(session: Session, settings: ServiceSettings) -> list[Job]:
    """Jobs to re-queue.  With the local pool every queued or running job is orphaned (the
    pool died with the server).  With Celery, a running job is orphaned only when its
    heartbeat is stale, and a queued one only when it has waited longer than the lease."""
    active = select(Job).where(Job.state.in_(("queued", "running")))
    if settings.worker_backend == "celery":
        stale = utcnow() - timedelta(seconds=settings.job_lease_seconds)
        active = active.where(or_(
            (Job.state == "running") & or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale),
            (Job.state == "queued") & (Job.created_at < stale)))
    return list(session.scalars(active.order_by(Job.created_at)).all())


def requeue_abandoned(sessions: sessionmaker[Session], settings: ServiceSettings,
                      queue: JobQueue) -> list[str]:
    """Put abandoned jobs back in the queue; returns their ids."""
    with sessions() as session:
        ids = []
        for job in abandoned_jobs(session, settings):
            if job.state == "running" and not transition(
                    session, job.id, "running", "queued", attempt=job.attempts,
                    message="re-queued: its worker vanished"):
                continue
            ids.append(job.id)
        session.commit()
    for job_id in ids:
        queue.enqueue(job_id)
    return ids

"""Prometheus metrics at ``GET /metrics`` (text exposition format).

Job figures are read from the database at each scrape, not counted in the API process: the
workers are other processes (other machines with Celery), and the database is the truth.

- ``nnverify_jobs{state}``: jobs by state (gauge);
- ``nnverify_queue_depth``: jobs waiting to run (gauge), and
  ``nnverify_queue_messages``: messages the queue holds for them, where it can tell;
- ``nnverify_job_duration_seconds``: run time of finished jobs (histogram over all jobs
  stored; deleting a model removes its jobs, which Prometheus reads as a counter reset);
- ``nnverify_worker_heartbeat_age_seconds{worker}``: seconds since each busy worker's last
  heartbeat (above ``job_lease_seconds`` its job is re-queued);
- ``nnverify_reconciler_repairs_total{action}``: the reconciler's repairs since the API
  started (requeued, resent, failed, cancelled).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .queues import in_flight
from .recovery import Repairs
from .tables import JOB_STATES, Job, utcnow

DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

router = APIRouter(tags=["operations"])


class JobCollector(Collector):
    """The database's view of the jobs, collected at each scrape."""

    def __init__(self, sessions: sessionmaker[Session], queue: Callable[[], Any]):
        self.sessions, self.queue = sessions, queue

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            yield self._by_state(session)
            yield from self._queue(session)
            yield self._durations(session)
            yield self._heartbeats(session)

    def _by_state(self, session: Session) -> Metric:
        counts = {state: n for state, n in
                  session.execute(select(Job.state, func.count()).group_by(Job.state)).all()}
        family = GaugeMetricFamily("nnverify_jobs", "Jobs by state.", labels=["state"])
        for state in JOB_STATES:
            family.add_metric([state], counts.get(state, 0))
        return family

    def _queue(self, session: Session) -> Iterator[Metric]:
        depth = session.scalar(select(func.count()).where(Job.state == "queued")) or 0
        yield GaugeMetricFamily("nnverify_queue_depth", "Jobs waiting to run.", value=depth)
        queue = self.queue()
        try:
            held = in_flight(queue) if queue is not None else None
        except Exception:  # the broker is down: /health/ready says so; omit the figure
            held = None
        if held is not None:
            yield GaugeMetricFamily("nnverify_queue_messages",
                                    "Job messages the queue holds (waiting or being run).",
                                    value=len(held))

    def _durations(self, session: Session) -> Metric:
        seconds = Job.seconds
        finished = Job.state.in_(("succeeded", "failed")) & seconds.is_not(None)
        columns: list[Any] = [func.count(), func.coalesce(func.sum(seconds), 0.0)] + [
            func.count().filter(seconds <= bound) for bound in DURATION_BUCKETS]
        total, total_seconds, *counts = session.execute(select(*columns).where(finished)).one()
        buckets = [(f"{b:g}", c) for b, c in zip(DURATION_BUCKETS, counts, strict=True)]
        family = HistogramMetricFamily("nnverify_job_duration_seconds",
                                       "Run time of finished jobs.")
        family.add_metric([], buckets + [("+Inf", total)], float(total_seconds))
        return family

    def _heartbeats(self, session: Session) -> Metric:
        rows = session.execute(select(Job.worker, func.max(Job.heartbeat_at))
                               .where(Job.state == "running", Job.worker.is_not(None))
                               .group_by(Job.worker)).all()
        family = GaugeMetricFamily("nnverify_worker_heartbeat_age_seconds",
                                   "Seconds since each busy worker's last heartbeat.",
                                   labels=["worker"])
        now = utcnow()
        for worker, beat in rows:
            if worker is not None and beat is not None:
                family.add_metric([worker], max(0.0, (now - beat).total_seconds()))
        return family


class ServiceMetrics:
    """One application's metrics: its own registry (no process-wide state), the job
    collector and the reconciler's counters."""

    def __init__(self, sessions: sessionmaker[Session], queue: Callable[[], Any]):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(JobCollector(sessions, queue))
        self.repairs = Counter("nnverify_reconciler_repairs", "The reconciler's repairs.",
                               ["action"], registry=self.registry)

    def count_repairs(self, repairs: Repairs) -> None:
        for action in ("requeued", "resent", "failed", "cancelled"):
            self.repairs.labels(action).inc(len(getattr(repairs, action)))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """The Prometheus text exposition of ``request.app.state.metrics``."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

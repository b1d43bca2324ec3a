"""The Celery application for scale-out workers (Redis broker, the database as the truth).

Start a worker with ``nnverify worker --device cuda:0`` or
``celery -A service.celery_app worker --pool=solo``.  The task receives a job id only and
calls the same ``run_job`` as the local pool.  The message is ``(job_id, token)``; a copy the
job is not waiting for is acknowledged and dropped (``service.worker.claim``), so Redis's
redelivery of an unacknowledged message after the visibility timeout never starts a second
run.  A worker that dies mid-job is noticed by its stale heartbeat and its job re-queued by
the API's reconciler (``service.reconciler``), not by the broker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from .logs import configure_logging
from .settings import ServiceSettings

TASK_NAME = "nnverify.run_job"


def make_celery(settings: ServiceSettings) -> Celery:
    """A Celery app whose one task runs jobs with ``settings``."""
    app = Celery("nnverify", broker=settings.redis_url)
    vt = settings.celery_visibility_timeout
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.celery_queue,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": vt,
            "unacked_restore_interval": max(1.0, min(10.0, vt / 2)),
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
    )

    @app.task(name=TASK_NAME)
    def run_job_task(job_id: str, token: int | None = None) -> str:
        from .worker import run_job

        return run_job(job_id, settings, device=settings.worker_device, token=token)

    return app


@setup_logging.connect
def _configure_logging(**_kwargs: Any) -> None:
    """Celery workers log in the service's format (NNVERIFY_LOG_FORMAT, NNVERIFY_LOG_LEVEL)
    instead of Celery's own."""
    configure_logging(ServiceSettings())


# the module-level app the Celery command line looks for (`-A service.celery_app`)
app = make_celery(ServiceSettings())

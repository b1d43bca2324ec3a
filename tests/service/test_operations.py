"""Operations: liveness and readiness, Prometheus metrics, JSON logs with job ids, and the
reconciler's rules on one database (a stale heartbeat is re-queued, a fresh one is not; a
queued job is re-sent only when the queue lacks its message)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from service_testkit import API, NANO_ONNX, NANO_PROP, free_port, job_body, upload, wait_finished

from service.app import create_app
from service.db import session_scope
from service.logs import JsonFormatter, TextFormatter
from service.queues import CeleryQueue
from service.recovery import reconcile
from service.settings import ServiceSettings
from service.tables import Job, utcnow


def make_finished_job(client: TestClient) -> str:
    model = upload(client, NANO_ONNX).json()
    job = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP)).json()
    wait_finished(client, job["url"])
    return str(job["id"])


def set_job(settings: ServiceSettings, job_id: str, **values: Any) -> None:
    with session_scope(settings) as s:
        s.query(Job).filter_by(id=job_id).update(values)


class HeldQueue:
    """A queue that holds the messages it is told to, and records what is sent."""

    def __init__(self, held: set[tuple[str, int | None]]):
        self.held, self.sent = held, []  # type: ignore[var-annotated]

    def enqueue(self, job_id: str, token: int | None = None) -> None:
        self.sent.append((job_id, token))

    def in_flight(self) -> set[tuple[str, int | None]]:
        return set(self.held)


def test_liveness_and_readiness(client):
    assert client.get(f"{API}/health/live").json() == {"status": "alive"}
    ready = client.get(f"{API}/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["database"]["ok"] and ready.json()["reconciler"]["running"]
    assert client.get(f"{API}/health").status_code == 200  # as before


def test_not_ready_when_the_broker_is_unreachable(settings):
    down = settings.model_copy(update={"worker_backend": "celery",
                                       "redis_url": f"redis://127.0.0.1:{free_port()}/12"})
    queue = CeleryQueue(down)
    with TestClient(create_app(down, queue)) as c:
        assert c.get(f"{API}/health/live").status_code == 200
        ready = c.get(f"{API}/health/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not ready" and not ready.json()["queue"]["ok"]
        assert ready.json()["database"]["ok"]
    queue.shutdown()


def metric(text: str, name: str) -> float:
    """The value of the sample line starting with ``name`` (labels included)."""
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert lines, f"no {name} in\n{text}"
    return float(lines[0].rsplit(" ", 1)[1])


def test_metrics_report_jobs_durations_and_heartbeats(settings, client):
    done = make_finished_job(client)
    running = make_finished_job(client)
    set_job(settings, running, state="running", worker="host:1",
            heartbeat_at=utcnow() - timedelta(seconds=7))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain")
    text = response.text
    assert metric(text, 'nnverify_jobs{state="succeeded"}') == 1
    assert metric(text, 'nnverify_jobs{state="running"}') == 1
    assert metric(text, "nnverify_queue_depth") == 0
    assert metric(text, "nnverify_job_duration_seconds_count") == 1
    seconds = client.get(f"{API}/jobs/{done}").json()["seconds"]
    assert abs(metric(text, "nnverify_job_duration_seconds_sum") - seconds) < 1e-6
    assert metric(text, 'nnverify_job_duration_seconds_bucket{le="+Inf"}') == 1
    assert 7 <= metric(text, 'nnverify_worker_heartbeat_age_seconds{worker="host:1"}') < 30


def test_reconciler_requeues_only_stale_running_jobs(settings, client):
    stale, fresh = make_finished_job(client), make_finished_job(client)
    lease = settings.job_lease_seconds
    set_job(settings, stale, state="running", attempts=1,
            heartbeat_at=utcnow() - timedelta(seconds=lease + 1))
    set_job(settings, fresh, state="running", attempts=1, heartbeat_at=utcnow())
    queue = HeldQueue(set())
    repairs = reconcile(client.app.state.sessions, settings, queue)
    assert repairs.requeued == [stale] and queue.sent == [(stale, 1)]
    with session_scope(settings) as s:
        assert (s.get_one(Job, stale).state, s.get_one(Job, stale).attempts) == ("queued", 1)
        assert s.get_one(Job, fresh).state == "running"


def test_reconciler_resends_only_queued_jobs_whose_message_is_missing(settings, client):
    held, lost, new = (make_finished_job(client) for _ in range(3))
    old = utcnow() - timedelta(seconds=settings.reconcile_interval + 1)
    for job_id in (held, lost):
        set_job(settings, job_id, state="queued", attempts=0, heartbeat_at=old)
    set_job(settings, new, state="queued", attempts=0, heartbeat_at=utcnow())  # just sent
    queue = HeldQueue({(held, 0), (lost, 7)})  # a stale copy does not count for ``lost``
    repairs = reconcile(client.app.state.sessions, settings, queue)
    assert repairs.resent == [lost] and queue.sent == [(lost, 0)]


def test_json_logs_carry_the_job_id():
    record = logging.LogRecord("service.worker", logging.INFO, __file__, 1, "job %s", ("ended",),
                               None)
    record.job_id = "abc123"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "job ended" and entry["job_id"] == "abc123"
    assert entry["level"] == "INFO" and entry["logger"] == "service.worker" and entry["time"]
    assert TextFormatter().format(record).endswith("job ended [job_id=abc123]")

"""Scale-out: real Celery workers (subprocesses, --pool=solo) on Redis.  The flow through the
API, and a worker killed with SIGKILL mid-job: the job is re-queued and finishes.
(tests/service/test_durability.py restarts everything else.)"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_testkit import (
    API,
    NANO_ONNX,
    NANO_PROP,
    PG_HOST,
    PG_PORT,
    SAT_ONNX,
    SAT_PROP,
    Workers,
    fresh_postgres_database,
    job_body,
    reachable,
    upload,
    wait_finished,
    wait_for,
)

from service import migrate
from service.app import create_app
from service.queues import CeleryQueue

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 15

pytestmark = pytest.mark.skipif(not reachable(REDIS_HOST, REDIS_PORT),
                                reason=f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")


@pytest.fixture
def workers(request, tmp_path) -> Iterator[Workers]:
    """Workers on a fresh PostgreSQL database (the scale-out setup) where PostgreSQL is
    reachable, else on SQLite; a test may ask for one with indirect parametrisation."""
    kind = getattr(request, "param", "postgresql" if reachable(PG_HOST, PG_PORT) else "sqlite")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database()) if kind == "postgresql" else None
        w = Workers(tmp_path, f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}", url)
        migrate.upgrade(w.settings())
        stack.callback(w.stop_all)
        yield w


@pytest.fixture
def api(workers) -> Iterator[TestClient]:
    settings = workers.settings(job_lease_seconds=2.0, reconcile_interval=0.5)
    queue = CeleryQueue(settings)
    with TestClient(create_app(settings, queue)) as client:
        yield client
    queue.shutdown()


def job_state(client: TestClient, url: str) -> dict[str, Any]:
    return client.get(url).json()  # type: ignore[no-any-return]


def test_flow_with_a_celery_worker(workers, api):
    workers.start("flow")
    nano, sat = upload(api, NANO_ONNX).json(), upload(api, SAT_ONNX).json()
    urls = [api.post(f"{API}/jobs", json=job_body(m["id"], p)).headers["location"]
            for m, p in ((nano, NANO_PROP), (sat, SAT_PROP))]
    jobs = [wait_finished(api, u, timeout=60) for u in urls]
    assert [(j["state"], j["verdict"]) for j in jobs] == [
        ("succeeded", "verified"), ("succeeded", "falsified")], jobs
    assert jobs[0]["worker"] and jobs[0]["attempts"] == 1
    assert api.get(jobs[1]["certificate_url"]).json()["verdict"] == "falsified"
    health = api.get(f"{API}/health").json()
    assert health["queue"]["backend"] == "celery" and health["workers"] >= 1


@pytest.mark.parametrize("workers", ["sqlite"], indirect=True)
def test_killed_worker_job_is_run_again(workers, api):
    """The reconciler re-queues the job once its worker's heartbeat is older than the lease
    (2 s here); the copy of the message Redis restores (visibility timeout 1 s) is dropped,
    so the job runs exactly once more."""
    doomed = workers.start("doomed", NNVERIFY_TEST_JOB_DELAY="60")
    model = upload(api, NANO_ONNX).json()
    url = api.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP)).headers["location"]
    first = wait_for(lambda: job_state(api, url), lambda j: j["state"] == "running", 60)
    assert first["attempts"] == 1
    workers.kill(doomed.pid)
    workers.start("rescuer", NNVERIFY_CELERY_VISIBILITY_TIMEOUT="1")
    job = wait_finished(api, url, timeout=60)
    assert (job["state"], job["verdict"], job["attempts"]) == ("succeeded", "verified", 2), job
    assert job["worker"] != first["worker"]

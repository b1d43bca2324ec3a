"""Scale-out: real Celery workers (subprocesses, --pool=solo) on Redis.  The flow through the
API, and a worker killed with SIGKILL mid-job: the job is delivered again and finishes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
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
from service.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 15

pytestmark = pytest.mark.skipif(not reachable(REDIS_HOST, REDIS_PORT),
                                reason=f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")


class Workers:
    """Celery worker subprocesses sharing one queue name, data dir and Redis database."""

    def __init__(self, tmp: Path, database_url: str | None = None):
        self.database_url = database_url
        self.env = {
            "NNVERIFY_DATA_DIR": str(tmp / "data"),
            "REDIS_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            "NNVERIFY_CELERY_QUEUE": f"nnverify-test-{uuid.uuid4().hex[:10]}",
            "NNVERIFY_WORKER_BACKEND": "celery",
            "NNVERIFY_PROGRESS_INTERVAL": "0.1",
        }
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def settings(self) -> ServiceSettings:
        return ServiceSettings(**{  # type: ignore[arg-type]
            "data_dir": self.env["NNVERIFY_DATA_DIR"], "redis_url": self.env["REDIS_URL"],
            "celery_queue": self.env["NNVERIFY_CELERY_QUEUE"], "worker_backend": "celery",
            "progress_interval": 0.1, "require_api_keys": False, "database_url": self.database_url})

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        full = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        full.update(self.env, **env)
        cmd = [sys.executable, "-m", "celery", "-A", "service.celery_app", "worker",
               "--pool=solo", "-Q", self.env["NNVERIFY_CELERY_QUEUE"], "-n", f"{name}@%h",
               "--without-gossip", "--without-mingle", "--loglevel=WARNING"]
        proc = subprocess.Popen(cmd, cwd=REPO, env=full, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """Kill the workers (their jobs are done; nothing is left to acknowledge)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self._purge()

    def _purge(self) -> None:
        """Drop this run's queue and any of its messages left unacknowledged in Redis."""
        import json

        import redis

        r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        queue = self.env["NNVERIFY_CELERY_QUEUE"]
        for tag, raw in r.hgetall("unacked").items():
            if json.loads(raw)[2] == queue:  # [message, exchange, routing key]
                r.hdel("unacked", tag)
                r.zrem("unacked_index", tag)
        r.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


@pytest.fixture
def workers(request, tmp_path) -> Iterator[Workers]:
    """Workers on a fresh PostgreSQL database (the scale-out setup) where PostgreSQL is
    reachable, else on SQLite; a test may ask for one with indirect parametrisation."""
    kind = getattr(request, "param", "postgresql" if reachable(PG_HOST, PG_PORT) else "sqlite")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database()) if kind == "postgresql" else None
        w = Workers(tmp_path, url)
        migrate.upgrade(w.settings())
        stack.callback(w.stop_all)
        yield w


@pytest.fixture
def api(workers) -> Iterator[TestClient]:
    settings = workers.settings()
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
def test_killed_worker_job_is_delivered_again(workers, api):
    doomed = workers.start("doomed", NNVERIFY_TEST_JOB_DELAY="60")
    model = upload(api, NANO_ONNX).json()
    url = api.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP)).headers["location"]
    first = wait_for(lambda: job_state(api, url), lambda j: j["state"] == "running", 60)
    assert first["attempts"] == 1
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    time.sleep(1.2)  # older than the rescuer's visibility timeout
    assert job_state(api, url)["state"] == "running"
    workers.start("rescuer", NNVERIFY_CELERY_VISIBILITY_TIMEOUT="1")
    job = wait_finished(api, url, timeout=60)
    assert (job["state"], job["verdict"], job["attempts"]) == ("succeeded", "verified", 2), job
    assert job["worker"] != first["worker"]

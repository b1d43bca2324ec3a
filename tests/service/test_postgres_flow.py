"""The whole flow on PostgreSQL (DATABASE_URL), in a database created for this run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from service_testkit import (
    API,
    NANO_ONNX,
    NANO_PROP,
    SAT_ONNX,
    SAT_PROP,
    ThreadQueue,
    fresh_postgres_database,
    job_body,
    upload,
    wait_finished,
)

from service.app import create_app


@pytest.fixture
def pg_client(settings) -> Iterator[TestClient]:
    with fresh_postgres_database() as url:
        pg = settings.model_copy(update={"database_url": url})
        queue = ThreadQueue(pg)
        with TestClient(create_app(pg, queue)) as client:
            yield client
        queue.shutdown()


def test_flow_on_postgres(pg_client):
    c = pg_client
    assert c.get(f"{API}/health").json()["database"]["dialect"] == "postgresql"
    nano, sat = upload(c, NANO_ONNX).json(), upload(c, SAT_ONNX).json()
    assert upload(c, NANO_ONNX).json()["id"] == nano["id"]
    urls = [c.post(f"{API}/jobs", json=job_body(m["id"], p)).headers["location"]
            for m, p in ((nano, NANO_PROP), (sat, SAT_PROP))]
    jobs = [wait_finished(c, u) for u in urls]
    assert [j["verdict"] for j in jobs] == ["verified", "falsified"], jobs
    cert = c.get(jobs[0]["certificate_url"]).json()
    assert cert["certificate"]["model_sha256"] == nano["sha256"]
    assert c.post(f"{urls[0]}/cancel").status_code == 409
    assert c.get(f"{API}/jobs", params={"verdict": "falsified"}).json()["total"] == 1
    assert c.delete(f"{API}/models/{sat['id']}").status_code == 204
    assert c.get(f"{API}/jobs").json()["total"] == 1

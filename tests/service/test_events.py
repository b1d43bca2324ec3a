"""GET /api/v1/jobs/{id}/events: a job's progress and final state as server-sent events
(the app in process, the real job function in threads)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_testkit import API, NANO_ONNX, NANO_PROP, ThreadQueue, job_body, upload

from service.api import events
from service.app import create_app
from service.client import parse_sse
from service.settings import ServiceSettings


class IdleQueue:
    """A queue that accepts jobs and never runs them (a job that stays queued)."""

    def enqueue(self, job_id: str) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"ok": True, "backend": "idle", "workers": 0}

    def shutdown(self) -> None:
        pass


def stream(client: TestClient, job_id: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The stream's raw text and its events (name, decoded data), read to its end."""
    with client.stream("GET", f"{API}/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    return text, [(name, json.loads(data)) for name, data in parse_sse(iter(text.split("\n")))]


@pytest.fixture
def slow_client(settings: ServiceSettings) -> Iterator[TestClient]:
    """Jobs that wait 0.4 s before verifying, so the stream sees them queued and running."""
    slow = settings.model_copy(update={"test_job_delay": 0.4})
    queue = ThreadQueue(slow)
    with TestClient(create_app(slow, queue)) as c:
        yield c
    queue.shutdown()


def submit(client: TestClient) -> str:
    model = upload(client, NANO_ONNX).json()
    created = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP))
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def test_stream_reports_progress_then_the_finished_job_and_closes(slow_client):
    job_id = submit(slow_client)
    text, evs = stream(slow_client, job_id)
    names = [name for name, _ in evs]
    assert text.startswith("retry: ") and names[-1] == "finished"
    assert names.count("finished") == 1 and set(names[:-1]) == {"progress"}
    assert "running" in {data["state"] for name, data in evs if name == "progress"}
    assert len({json.dumps(data, sort_keys=True) for _, data in evs}) == len(evs)  # changes
    final = evs[-1][1]
    assert final["state"] == "succeeded" and final["verdict"] == "verified"
    assert final == slow_client.get(f"{API}/jobs/{job_id}").json()
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == sorted(ids) and len(ids) == len(evs)


def test_a_finished_job_gives_one_event(client):
    job_id = submit(client)
    stream(client, job_id)  # follows it to the end
    _text, evs = stream(client, job_id)
    assert [name for name, _ in evs] == ["finished"]


def test_an_unknown_job_is_a_404_before_any_stream(client):
    response = client.get(f"{API}/jobs/{'0' * 32}/events")
    assert response.status_code == 404
    assert response.json() == {"detail": f"no job with id {'0' * 32!r}"}


def test_an_idle_stream_keeps_alive_and_is_closed_after_its_limit(settings, monkeypatch):
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.1)
    monkeypatch.setattr(events, "MAX_STREAM_SECONDS", 0.5)
    with TestClient(create_app(settings, IdleQueue())) as client:  # type: ignore[arg-type]
        job_id = submit(client)
        text, evs = stream(client, job_id)
    assert ": keepalive" in text
    assert [(name, data["state"]) for name, data in evs] == [("progress", "queued")]


def test_the_openapi_documents_the_stream(client):
    spec = client.get("/openapi.json").json()
    answers = spec["paths"]["/api/v1/jobs/{job_id}/events"]["get"]["responses"]
    assert "text/event-stream" in answers["200"]["content"] and "404" in answers

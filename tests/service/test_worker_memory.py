"""A worker's memory budget (NNVERIFY_WORKER_MEMORY): the engine's default shared among the
local workers, a size read from the setting, a bad size refused at start-up by name, and a
job whose budget its process already exceeds ends `unknown` naming the budget (never a
process killed for memory)."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError
from service_testkit import API, NANO_ONNX, NANO_PROP, ThreadQueue, job_body, upload, wait_finished

from service.app import create_app
from service.settings import ServiceSettings
from verifier.bounds.limits import default_limit


def test_the_default_is_shared_among_local_workers() -> None:
    whole = default_limit(torch.device("cpu"))
    assert ServiceSettings(local_workers=2).memory_per_worker == whole // 2
    assert ServiceSettings(local_workers=1).memory_per_worker == whole


def test_a_size_is_read_and_a_bad_one_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNVERIFY_WORKER_MEMORY", "3G")
    assert ServiceSettings().memory_per_worker == 3 << 30
    monkeypatch.setenv("NNVERIFY_WORKER_MEMORY", "lots")
    with pytest.raises(ValidationError, match="worker_memory"):
        ServiceSettings()


def test_a_job_over_its_budget_ends_unknown_naming_it(settings: ServiceSettings) -> None:
    tight = settings.model_copy(update={"worker_memory": "1M"})  # below any process
    queue = ThreadQueue(tight)
    with TestClient(create_app(tight, queue)) as client:
        model = upload(client, NANO_ONNX).json()
        created = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP))
        job = wait_finished(client, created.headers["location"])
    queue.shutdown()
    assert job["state"] == "succeeded", job
    assert job["verdict"] == "unknown", (job["message"], job["result"])
    assert "memory budget of 1.0 MiB" in job["message"]

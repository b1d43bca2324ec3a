"""The job state machine and the job function: guarded transitions, idempotent delivery,
cancellation while running, recovery of abandoned jobs."""

from __future__ import annotations

import threading
import time

import pytest
from service_testkit import API, NANO_ONNX, NANO_PROP, job_body, upload, wait_finished

from service.db import session_scope
from service.recovery import requeue_abandoned
from service.states import TransitionError, transition
from service.tables import Job
from service.worker import run_job


def make_job(client) -> str:
    model = upload(client, NANO_ONNX).json()
    return client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP)).json()["id"]


def job_row(settings, job_id: str) -> Job:
    with session_scope(settings) as s:
        job = s.get_one(Job, job_id)
        s.expunge(job)
        return job


def test_forbidden_transitions_raise(settings, client):
    job_id = make_job(client)
    with session_scope(settings) as s:
        with pytest.raises(TransitionError):
            transition(s, job_id, "succeeded", "running")
        with pytest.raises(TransitionError):
            transition(s, job_id, "queued", "succeeded")


def test_stale_source_state_changes_nothing(settings, client):
    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:
        assert not transition(s, job_id, "running", "failed", message="late")
    assert job_row(settings, job_id).state == "succeeded"


def test_finished_job_is_left_alone(settings, client):
    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    before = job_row(settings, job_id)
    assert run_job(job_id, settings) == "succeeded"
    after = job_row(settings, job_id)
    assert (after.attempts, after.finished_at) == (before.attempts, before.finished_at)


def test_job_delivered_again_while_running_is_dropped(settings, client):
    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:  # a copy of its message arrives while it runs
        s.query(Job).filter_by(id=job_id).update({"state": "running", "verdict": None})
    assert run_job(job_id, settings) == "running"
    assert job_row(settings, job_id).attempts == 1


def test_cancel_a_running_job(settings, client):
    slow = settings.model_copy(update={"test_job_delay": 30.0})
    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:
        s.query(Job).filter_by(id=job_id).update({"state": "queued", "verdict": None})
    runner = threading.Thread(target=run_job, args=(job_id, slow))
    runner.start()
    url = f"{API}/jobs/{job_id}"
    deadline = time.monotonic() + 10
    while client.get(url).json()["attempts"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    response = client.post(f"{url}/cancel")
    assert response.status_code == 202 and response.json()["cancel_requested"]
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert client.get(url).json()["state"] == "cancelled"


def test_cancel_a_queued_job_at_once(settings, client):
    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:
        s.query(Job).filter_by(id=job_id).update({"state": "queued", "verdict": None})
    body = client.post(f"{API}/jobs/{job_id}/cancel").json()
    assert body["state"] == "cancelled"
    assert run_job(job_id, settings) == "cancelled"


def test_running_and_queued_jobs_are_requeued_at_start(settings, client):
    ids = [make_job(client) for _ in range(2)]
    for job_id in ids:
        wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:
        s.query(Job).filter_by(id=ids[0]).update({"state": "running", "attempts": 1})
        s.query(Job).filter_by(id=ids[1]).update({"state": "queued"})
    queue = _ListQueue()
    requeued = requeue_abandoned(client.app.state.sessions, settings, queue)
    assert sorted(requeued) == sorted(ids) == sorted(queue.ids)
    assert {job_row(settings, i).state for i in ids} == {"queued"}


def test_delete_refused_while_a_job_is_active(settings, client):
    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:
        s.query(Job).filter_by(id=job_id).update({"state": "running"})
    model_id = job_row(settings, job_id).model_id
    response = client.delete(f"{API}/models/{model_id}")
    assert response.status_code == 409 and "running" in response.json()["detail"]


class _ListQueue:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def enqueue(self, job_id: str, token: int | None = None) -> None:
        self.ids.append(job_id)


def test_local_pool_reruns_a_job_whose_process_died(settings, client):
    import multiprocessing
    import os
    import signal

    from service.queues import LocalPool

    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:
        s.query(Job).filter_by(id=job_id).update({"state": "queued", "verdict": None,
                                                  "attempts": 0})
    pool = LocalPool(settings.model_copy(update={"local_workers": 1, "test_job_delay": 60.0}))
    try:
        pool.enqueue(job_id)
        url = f"{API}/jobs/{job_id}"
        deadline = time.monotonic() + 30
        while client.get(url).json()["state"] != "running":
            assert time.monotonic() < deadline, "the pool never started the job"
            time.sleep(0.05)
        pool.settings = settings  # the second attempt runs without the delay
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)
        job = wait_finished(client, url, timeout=60)
        assert (job["state"], job["verdict"], job["attempts"]) == ("succeeded", "verified", 2)
    finally:
        pool.shutdown()


def test_a_pool_process_reaped_by_another_thread_counts_as_ended():
    """At shutdown the slot's thread and the server both wait for a killed pool process.
    When the other one reaps it first, ``join`` here finds no child and the process looks
    alive: the server then skipped handing its job back, and the next start counted an
    attempt (a flaky CI failure).  The sentinel says it has ended, whoever reaped it."""
    import multiprocessing
    import os

    from service.queues import _ended

    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    process.start()
    process.kill()
    os.waitpid(process.pid, 0)  # the other thread's reap, before it records the status
    assert _ended(process, timeout=5)


def test_job_fails_after_too_many_vanished_workers(settings, client):
    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:
        s.query(Job).filter_by(id=job_id).update({"state": "running", "attempts": 3})
    assert requeue_abandoned(client.app.state.sessions, settings, _ListQueue()) == []
    job = job_row(settings, job_id)
    assert job.state == "failed" and "gave up after 3 attempts" in job.message


def test_worker_device_overrides_the_job_option(settings, client):
    job_id = make_job(client)
    wait_finished(client, f"{API}/jobs/{job_id}")
    with session_scope(settings) as s:
        s.query(Job).filter_by(id=job_id).update({"state": "queued"})
    assert run_job(job_id, settings, device="cpu:0") == "succeeded"
    assert job_row(settings, job_id).device == "cpu:0"

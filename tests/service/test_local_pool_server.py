"""`nnverify serve` for real: uvicorn on a free loopback port, SQLite, the local process
pool.  The server is killed mid-job and started again: the job is re-queued and finishes;
then upload, job, poll to the verdict and certificate over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from service_testkit import (
    NANO_ONNX,
    NANO_PROP,
    SAT_ONNX,
    SAT_PROP,
    free_port,
    wait_finished,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


def start_server(data_dir: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    full = dict(os.environ, NNVERIFY_DATA_DIR=str(data_dir), NNVERIFY_LOCAL_WORKERS="1",
                NNVERIFY_PROGRESS_INTERVAL="0.1")
    full.update(env)
    full.pop("DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                            cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the server and its pool processes (one process group) and wait."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:  # a graceful stop under load may take a while: killing it early would count
        proc.wait(timeout=30 if sig == signal.SIGTERM else 10)  # an attempt
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read().decode()}")  # type: ignore
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def running_job(base: str) -> dict:
    """Upload the nano model, submit its property and wait until the job runs (the server
    was started with a job delay, so it keeps running); the job as JSON."""
    return running_jobs(base, 1)[0]


def running_jobs(base: str, n: int) -> list[dict]:
    """``n`` jobs on the nano model, once all of them run (each on its own worker)."""
    with httpx.Client(base_url=f"{base}/api/v1", timeout=10) as c:
        model = c.post("/models", files={"file": ("n.onnx", NANO_ONNX.read_bytes())}).json()
        body = {"model_id": model["id"], "property": {"vnnlib": NANO_PROP.read_text()}}
        urls = [c.post("/jobs", json=body).headers["location"] for _ in range(n)]
        return wait_for(lambda: {"jobs": [c.get(u).json() for u in urls]},
                        lambda v: all(j["state"] == "running" for j in v["jobs"]), 30)["jobs"]


@dataclass
class Restarted:
    base: str  # the second server's URL
    orphan_url: str  # a job that was running when the first server was killed


@pytest.fixture(scope="module")
def restarted(tmp_path_factory) -> Iterator[Restarted]:
    """A server killed (SIGKILL, with its pool) while a job runs, then started again."""
    port, data = free_port(), tmp_path_factory.mktemp("serve") / "data"
    base = f"http://127.0.0.1:{port}"
    first = start_server(data, port, NNVERIFY_TEST_JOB_DELAY="60")
    try:
        wait_healthy(base, first)
        url = running_job(base)["url"]
    finally:
        stop(first, signal.SIGKILL)
    second = start_server(data, port)
    try:
        wait_healthy(base, second)
        yield Restarted(base, url)
    finally:
        stop(second)


def test_jobs_survive_a_server_crash(restarted):
    with httpx.Client(timeout=10) as c:
        job = wait_finished(c, restarted.orphan_url, timeout=60)
    assert (job["state"], job["verdict"], job["attempts"]) == ("succeeded", "verified", 2)


def test_serve_runs_jobs_in_the_local_pool(restarted):
    with httpx.Client(base_url=f"{restarted.base}/api/v1", timeout=10) as c:
        health = c.get("/health").json()
        assert health["queue"]["backend"] == "local" and health["workers"] == 1
        results = []
        for onnx_path, prop in ((NANO_ONNX, NANO_PROP), (SAT_ONNX, SAT_PROP)):
            model = c.post("/models", files={"file": (onnx_path.name, onnx_path.read_bytes())})
            assert model.status_code in (200, 201), model.text
            body = {"model_id": model.json()["id"], "property": {"vnnlib": prop.read_text()},
                    "options": {"timeout": 20}}
            created = c.post("/jobs", json=body)
            assert created.status_code == 202, created.text
            results.append(wait_finished(c, created.headers["location"], timeout=60))
        assert [(j["state"], j["verdict"]) for j in results] == [
            ("succeeded", "verified"), ("succeeded", "falsified")], results
        cert = c.get(results[1]["certificate_url"])
        assert cert.status_code == 200 and cert.json()["certificate"]["counterexamples"]
        assert httpx.get(f"{restarted.base}/docs").status_code == 200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    return True


def test_pool_workers_run_niced_and_exit_with_the_server(tmp_path):
    """A pool process runs below the API's CPU priority, and ends (within seconds) when the
    server is killed alone, rather than computing on as an orphan."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path / "data", port, NNVERIFY_TEST_JOB_DELAY="60")
    try:
        wait_healthy(base, server)
        job = running_job(base)
        worker_pid = int(job["worker"].rsplit(":", 1)[1])
        assert worker_pid != server.pid and _alive(worker_pid)
        assert os.getpriority(os.PRIO_PROCESS, worker_pid) == 10
        os.kill(server.pid, signal.SIGKILL)  # the server alone, not its process group
        server.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker_pid), "the pool process outlived the server"
    finally:
        stop(server, signal.SIGKILL)


def test_a_killed_pool_process_reruns_only_its_own_job(tmp_path):
    """Two jobs on two pool processes; one process is SIGKILLed: its job is re-queued at
    once and runs again on a fresh process, the other job runs on undisturbed."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path / "data", port, NNVERIFY_LOCAL_WORKERS="2",
                          NNVERIFY_TEST_JOB_DELAY="3")
    try:
        wait_healthy(base, server)
        victim, bystander = running_jobs(base, 2)
        assert victim["worker"] != bystander["worker"]
        os.kill(int(victim["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        with httpx.Client(timeout=10) as c:
            victim_end = wait_finished(c, victim["url"], timeout=60)
            bystander_end = wait_finished(c, bystander["url"], timeout=60)
        assert (victim_end["state"], victim_end["verdict"], victim_end["attempts"]) == (
            "succeeded", "verified", 2), victim_end
        assert victim_end["worker"] != victim["worker"]
        assert (bystander_end["state"], bystander_end["verdict"], bystander_end["attempts"],
                bystander_end["worker"]) == ("succeeded", "verified", 1, bystander["worker"])
    finally:
        stop(server, signal.SIGKILL)


def test_a_stopped_server_hands_its_running_job_back(tmp_path):
    """SIGTERM to the whole process group (Ctrl-C, systemd) while a job runs: the server
    ends its pool and hands the job back uncounted; the next server runs it, attempt 1."""
    port, data = free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    first = start_server(data, port, NNVERIFY_TEST_JOB_DELAY="60")
    try:
        wait_healthy(base, first)
        url = running_job(base)["url"]
        stop(first)  # SIGTERM, as a service manager sends it (uvicorn shuts down, then
        # re-raises it: the exit status is -15 either way)
    finally:
        stop(first, signal.SIGKILL)
    first_log = first.stdout.read().decode()  # type: ignore[union-attr]
    second = start_server(data, port)
    try:
        wait_healthy(base, second)
        with httpx.Client(timeout=10) as c:
            job = wait_finished(c, url, timeout=60)
        assert (job["state"], job["verdict"], job["attempts"]) == ("succeeded", "verified", 1), \
            f"{job}\nfirst server's log:\n{first_log}"
    finally:
        stop(second)

"""Schemathesis over the OpenAPI, as the issue ran it (``st run .../openapi.json --checks
all``), against the app served by uvicorn on a free loopback port: a server without required
keys, and one that requires them (run with a key, so the ``ignored_auth`` check sends
requests without one).  Deterministic (``--generation-deterministic``), a few examples per
operation, real ids of a model, a finished job and its certificate for the path parameters
(so responses with real objects are checked against their schemas, not only 404s).

Every check runs but ``positive_data_acceptance``: it expects any schema-valid request to be
accepted, and no schema can say which bytes are an ONNX model or which property fits a
model; those refusals are the declared 400 and 422 answers, which the other checks hold to
the schema.  The run fails on any 5xx, undocumented status, content type or response body.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from service_testkit import (
    NANO_ONNX,
    NANO_PROP,
    SAT_ONNX,
    ThreadQueue,
    free_port,
    job_body,
    wait_for,
)

from service.app import create_app
from service.db import session_scope
from service.keys import create_key
from service.settings import ServiceSettings

ST = Path(sys.executable).with_name("st")
EXAMPLES_PER_OPERATION = 12
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


@contextmanager
def serving(settings: ServiceSettings) -> Iterator[str]:
    """The app on a free loopback port (uvicorn in a thread of this process), its URL."""
    port = free_port()
    queue = ThreadQueue(settings)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, queue), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        queue.shutdown()


def real_ids(url: str, headers: dict[str, str]) -> dict[str, str]:
    """A model, and a finished job with its certificate on another model (so that the run's
    DELETE of the first model leaves the job to the operations that read it)."""
    with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=30) as c:
        model = c.post("/models", files={"file": ("sat.onnx", SAT_ONNX.read_bytes())}).json()
        other = c.post("/models", files={"file": ("nano.onnx", NANO_ONNX.read_bytes())}).json()
        job = c.post("/jobs", json=job_body(other["id"], NANO_PROP)).json()
        done = wait_for(lambda: c.get(f"/jobs/{job['id']}").json(),
                        lambda j: j["state"] == "succeeded", 30)
    return {"model_id": model["id"], "job_id": job["id"],
            "certificate_id": done["certificate_url"].rsplit("/", 1)[1]}


def run_schemathesis(url: str, tmp_path: Path, ids: dict[str, str],
                     headers: dict[str, str]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'{k} = "{v}"\n' for k, v in ids.items()))
    command = [str(ST), "--config-file", str(config), "run", f"{url}/openapi.json", *CHECKS,
               "--generation-deterministic", "--max-examples", str(EXAMPLES_PER_OPERATION),
               "--workers", "1", "--no-color", "--request-timeout", "10"]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def assert_clean(run: subprocess.CompletedProcess[str]) -> None:
    """Exit status 0, and every operation was tested (a run that tested nothing is no
    evidence)."""
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected and tested and tested.group(1) == selected.group(2), report


@pytest.fixture(scope="module")
def st_available() -> None:
    if not ST.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")


def test_a_server_without_keys_passes_every_check(tmp_path, settings, st_available) -> None:
    with serving(settings.model_copy(update={"allowed_hosts": None})) as url:
        run = run_schemathesis(url, tmp_path, real_ids(url, {}), {})
    assert_clean(run)


def test_a_server_with_keys_passes_every_check(tmp_path, settings, st_available) -> None:
    settings = settings.model_copy(update={"require_api_keys": True, "allowed_hosts": None})
    with serving(settings) as url:
        with session_scope(settings) as session:  # the app migrated the database at start
            key = create_key(session, "fuzzer")[1]
        headers = {"X-API-Key": key}
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        run = run_schemathesis(url, tmp_path, real_ids(url, headers), headers)
    assert_clean(run)

"""The Python client (service/client.py) and the client commands of ``nnverify`` (submit,
status, results, certificate, cancel, upload) against a served instance: uvicorn on a free
loopback port in a thread of the test process, jobs run by the real job function."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from service_testkit import SAT_ONNX, SAT_PROP, ThreadQueue, free_port

from service.app import create_app
from service.cli import describe_progress, main
from service.client import (
    Client,
    ClientError,
    JobStatus,
    ServiceError,
    Unreachable,
    WaitTimeout,
    parse_sse,
    property_body,
)
from service.keys import create_key
from service.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "tiny_classifier.onnx"
PROP = REPO / "examples" / "tiny_robustness.vnnlib"


@contextlib.contextmanager
def served(settings: ServiceSettings) -> Iterator[str]:
    """The app for ``settings`` served by uvicorn on a free port in a thread; its URL."""
    queue = ThreadQueue(settings)
    port = free_port()
    config = uvicorn.Config(create_app(settings, queue), host="127.0.0.1", port=port,
                            log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        queue.shutdown()


def server_settings(tmp_path: Path, **kw: Any) -> ServiceSettings:
    return ServiceSettings(**{"data_dir": tmp_path / "data", "progress_interval": 0.05,
                              "require_api_keys": False, "database_url": None, **kw})


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    with served(server_settings(tmp_path)) as url:
        yield url


class Counting(httpx.HTTPTransport):
    """A transport that records each request's method and path, and can answer 404 for
    the event stream (a server without one)."""

    def __init__(self, no_events: bool = False):
        super().__init__()
        self.seen: list[str] = []
        self.no_events = no_events

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        if self.no_events and request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"}, request=request)
        return super().handle_request(request)


def test_submit_wait_round_trips_then_status_results_certificate(base, capsys, tmp_path):
    assert main(["submit", str(MODEL), str(PROP), "--timeout", "30", "--wait",
                 "--url", base]) == 0
    out, err = capsys.readouterr()
    job_id, verdict = out.splitlines()
    assert len(job_id) == 32 and verdict.startswith("verified")
    assert "queued" in err or "running" in err  # the progress went to stderr
    assert main(["status", job_id, "--url", base]) == 0
    status = capsys.readouterr().out
    assert "state: succeeded, verdict: verified" in status and "certificate: http" in status
    assert main(["results", "--url", base]) == 0
    table = capsys.readouterr()
    header, row = table.out.splitlines()
    assert header.split() == ["JOB", "KIND", "STATE", "VERDICT", "SECONDS", "CREATED", "MODEL"]
    assert row.split()[:4] == [job_id, "verify", "succeeded", "verified"]
    assert "1 of 1 job(s)" in table.err
    out_file = tmp_path / "cert.json"
    assert main(["certificate", job_id, "-o", str(out_file), "--url", base]) == 0
    cert = json.loads(out_file.read_text())
    assert cert["job_id"] == job_id and cert["certificate"]["verdict"] == "verified"


def test_exit_status_says_the_verdict(base, capsys):
    """Falsified is 1; a job that did not finish before it was cancelled is 4."""
    assert main(["submit", str(SAT_ONNX), str(SAT_PROP), "--wait", "--url", base]) == 1
    assert capsys.readouterr().out.splitlines()[1].startswith("falsified")
    assert main(["submit", str(SAT_ONNX), str(SAT_PROP), "--url", base, "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["state"] in ("queued", "running", "succeeded")
    assert main(["results", "--url", base, "--verdict", "falsified", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 1


def test_refusals_are_one_line_with_the_servers_message(base, capsys, tmp_path):
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(assert (<= Y_0 1))\n")
    assert main(["submit", str(MODEL), str(bad), "--url", base]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnverify submit: 422 from POST") and "invalid property" in err
    assert main(["status", "f" * 32, "--url", base]) == 2
    err = capsys.readouterr().err
    assert f"no job with id '{'f' * 32}'" in err and "Traceback" not in err
    assert main(["status", "x", "--url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach the nnverify server" in capsys.readouterr().err
    assert main(["submit", str(tmp_path / "missing.onnx"), str(PROP), "--url", base]) == 2
    assert "cannot read the model file" in capsys.readouterr().err


def test_upload_is_idempotent_and_sends_known_bytes_once(base):
    transport = Counting()
    with Client(base, transport=transport) as nnv:
        first = nnv.upload_model(MODEL)
        second = nnv.upload_model(MODEL)
    assert first.id == second.id and first.n_inputs == 4 and first.n_outputs == 3
    assert transport.seen.count("POST /api/v1/models") == 1


def test_wait_follows_the_event_stream_without_polling(tmp_path):
    with served(server_settings(tmp_path, test_job_delay=0.6)) as url:
        transport, seen = Counting(), []
        with Client(url, transport=transport) as nnv:
            job = nnv.submit(nnv.upload_model(MODEL).id, PROP, timeout=30)
            done = nnv.wait(job.id, on_progress=seen.append)
    assert done.finished and done.verdict == "verified"
    assert [s.state for s in seen][-1] == "running" and all(not s.finished for s in seen)
    assert transport.seen.count(f"GET /api/v1/jobs/{job.id}/events") == 1
    assert transport.seen.count(f"GET /api/v1/jobs/{job.id}") == 1  # the first look only


def test_wait_polls_where_the_server_has_no_event_stream(tmp_path):
    with served(server_settings(tmp_path, test_job_delay=0.5)) as url:
        transport, seen = Counting(no_events=True), []
        with Client(url, transport=transport) as nnv:
            job = nnv.submit(nnv.upload_model(MODEL).id, PROP, timeout=30)
            done = nnv.wait(job.id, on_progress=seen.append)
    assert done.verdict == "verified" and seen
    assert transport.seen.count(f"GET /api/v1/jobs/{job.id}") >= 3


def test_wait_gives_up_after_its_timeout_and_cancel_stops_the_job(tmp_path):
    with served(server_settings(tmp_path, test_job_delay=30)) as url, Client(url) as nnv:
        job = nnv.submit(nnv.upload_model(MODEL).id, PROP, timeout=60)
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as caught:
            nnv.wait(job.id, timeout=0.5)
        assert time.monotonic() - started < 5 and not caught.value.job.finished
        nnv.cancel(job.id)
        assert nnv.wait(job.id, timeout=20).state == "cancelled"
        with pytest.raises(ClientError, match="has no certificate"):
            nnv.certificate(job.id)


def test_a_key_is_sent_from_the_environment(tmp_path, monkeypatch, capsys):
    settings = server_settings(tmp_path, require_api_keys=True)
    with served(settings) as url:
        monkeypatch.setenv("NNVERIFY_URL", url)
        assert main(["upload", str(MODEL)]) == 2
        assert "API key is required" in capsys.readouterr().err
        with create_app(settings, ThreadQueue(settings)).state.sessions() as session:
            _row, key = create_key(session, "tester")
            session.commit()
        monkeypatch.setenv("NNVERIFY_API_KEY", key)
        assert main(["upload", str(MODEL)]) == 0
        model_id = capsys.readouterr().out.strip()  # the key's own model of these bytes
        sha256 = hashlib.sha256(MODEL.read_bytes()).hexdigest()
        with Client(url, api_key=key) as nnv:
            found = nnv.get_model(sha256)  # the client finds its upload by the bytes' hash
            assert found is not None and found.id == model_id
            assert found.raw["sha256"] == sha256 and found.raw["owner"] is not None
        with pytest.raises(ServiceError) as caught, Client(url, api_key="nnv_wrong") as nnv:
            nnv.submit(model_id, PROP)
        assert caught.value.status == 403 and "invalid" in caught.value.message


def test_properties_are_read_by_kind(tmp_path):
    spec = {"kind": "robustness", "center": [0.5, -0.2, 0.1, 0.3], "epsilon": 0.01, "label": 0}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(spec))
    assert property_body(path) == {"json": spec} == property_body(spec)
    assert property_body(PROP) == {"vnnlib": PROP.read_text()}
    assert property_body("(assert (<= X_0 1))") == {"vnnlib": "(assert (<= X_0 1))"}
    path.write_text("{not json")
    with pytest.raises(ClientError, match="is not valid JSON"):
        property_body(path)
    with pytest.raises(Unreachable):
        Client(f"http://127.0.0.1:{free_port()}").status("x")


def test_event_stream_parsing_and_progress_line():
    lines = ["retry: 2000", "", ": keepalive", "", "id: 1", "event: progress",
             'data: {"a":', "data: 1}", "", "data: plain", ""]
    assert list(parse_sse(iter(lines))) == [("progress", '{"a":\n1}'), ("message", "plain")]
    job = JobStatus.from_json({"id": "j", "state": "running", "options": {"timeout": 60},
                               "progress": {"stage": "bab", "elapsed": 12.34,
                                            "domains_open": 4, "domains_done": 300,
                                            "lower_bound": -0.52}})
    assert describe_progress(job) == ("running bab, 12.3/60 s, domains 4 open / 300 done, "
                                      "bound -0.52")

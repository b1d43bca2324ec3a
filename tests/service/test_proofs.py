"""Proofs in the service (issue 17): a verified job's certificate carries a proof the
independent checker accepted, which anyone can download and check again with the model file
and property text fetched through the API; ``NNVERIFY_PROOFS`` off / required; ownership;
the dashboard's "proof checked".  Real engine, real checker, real job function (the local
pool of `nnverify serve` for the main flow, threads of the test process for the others)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from service_testkit import (
    API,
    FINISHED,
    NANO_ONNX,
    NANO_PROP,
    SAT_ONNX,
    SAT_PROP,
    TEST_DIR,
    ThreadQueue,
    free_port,
    job_body,
    upload,
    wait_for,
)
from test_local_pool_server import start_server, stop, wait_healthy

import checker
from service.app import create_app
from service.db import session_scope
from service.keys import create_key
from service.settings import ServiceSettings
from service.tables import Certificate

UNSAT_ONNX, UNSAT_PROP = TEST_DIR / "test_unsat.onnx", TEST_DIR / "test_prop.vnnlib"
JSON_PROPERTY = {"kind": "output_range", "input": {"lower": [-1.0], "upper": [1.0]},
                 "unsafe": [[{"output": 0, "op": "<=", "value": -1.0}]]}


def serve_client(settings: ServiceSettings) -> Iterator[TestClient]:
    queue = ThreadQueue(settings)
    with TestClient(create_app(settings, queue)) as c:
        yield c
    queue.shutdown()


@pytest.fixture
def proofs_off(settings: ServiceSettings) -> Iterator[TestClient]:
    yield from serve_client(settings.model_copy(update={"proofs": "off"}))


@pytest.fixture
def proofs_required(settings: ServiceSettings) -> Iterator[TestClient]:
    yield from serve_client(settings.model_copy(update={"proofs": "required"}))


def finished_job(c: TestClient | httpx.Client, onnx: Path, prop: Path | dict,
                 **kw: object) -> dict:
    model = upload(c, onnx, **kw).json()
    body = (job_body(model["id"], prop) if isinstance(prop, Path) else
            {"model_id": model["id"], "property": {"json": prop}, "options": {"timeout": 20}})
    created = c.post(f"{API}/jobs", json=body, **kw)  # type: ignore[arg-type]
    assert created.status_code == 202, created.text
    url = created.headers["location"]
    return wait_for(lambda: c.get(url, **kw).json(),  # type: ignore[arg-type]
                    lambda j: j["state"] in FINISHED, 60)


def check_downloaded(c: TestClient | httpx.Client, cert: dict, tmp_path: Path) -> checker.Report:
    """The proof, the model file and the property text fetched through the API, written to
    files, and checked by the independent checker."""
    files = {"proof.nnvproof": cert["proof_url"], "model.onnx": cert["model_file_url"],
             "property.vnnlib": cert["property_url"]}
    for name, url in files.items():
        answer = c.get(url)
        assert answer.status_code == 200, answer.text
        (tmp_path / name).write_bytes(answer.content)
    return checker.check(*(str(tmp_path / n) for n in files))


# -- the local pool: verified -> proof checked -> anyone can check it ----------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port, data = free_port(), tmp_path_factory.mktemp("serve") / "data"
    proc = start_server(data, port, OMP_NUM_THREADS="1")
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_a_verified_job_carries_a_checked_proof_anyone_can_check(server, tmp_path) -> None:
    with httpx.Client(base_url=server, timeout=30) as c:
        job = finished_job(c, UNSAT_ONNX, UNSAT_PROP)
        assert (job["state"], job["verdict"]) == ("succeeded", "verified"), job
        assert job["progress"]["stage"] == "proof"  # the last stage of the run
        cert = c.get(job["certificate_url"]).json()
        proof = cert["proof"]
        assert proof["status"] == "checked", proof
        assert proof["checker"] == "nnverify-proof/1" and proof["leaves"] >= 1
        assert proof["bytes"] > 0 and proof["check_seconds"] >= 0
        assert proof["search_seconds"] >= 0 and proof["reason"] == ""
        assert cert["property_format"] == "vnnlib" and cert["proof_url"].endswith(
            f"/certificates/{cert['id']}/proof")
        download = c.get(cert["proof_url"])
        assert download.headers["content-type"] == "application/octet-stream"
        assert f'filename="certificate-{cert["id"]}.nnvproof"' in \
            download.headers["content-disposition"]
        assert len(download.content) == proof["bytes"]
        report = check_downloaded(c, cert, tmp_path)
    assert report.ok, report.reason
    assert report.leaves == proof["leaves"]


def test_a_falsified_job_has_no_proof(server) -> None:
    with httpx.Client(base_url=server, timeout=30) as c:
        job = finished_job(c, SAT_ONNX, SAT_PROP)
        assert job["verdict"] == "falsified", job
        cert = c.get(job["certificate_url"]).json()
        assert (cert["proof"]["status"], cert["proof_url"]) == ("none", None)
        missing = c.get(f"{API}/certificates/{cert['id']}/proof")
    assert missing.status_code == 404
    assert "verdict is falsified" in missing.json()["detail"]


# -- settings ------------------------------------------------------------------------------
def test_proofs_off_searches_none_and_says_so(proofs_off) -> None:
    job = finished_job(proofs_off, UNSAT_ONNX, UNSAT_PROP)
    assert job["verdict"] == "verified"
    cert = proofs_off.get(job["certificate_url"]).json()
    assert (cert["proof"]["status"], cert["proof_url"]) == ("none", None)
    assert cert["proof"]["checker"] is None
    missing = proofs_off.get(f"{API}/certificates/{cert['id']}/proof")
    assert missing.status_code == 404
    assert "NNVERIFY_PROOFS=off" in missing.json()["detail"]


def test_required_withholds_verified_without_a_checked_proof(settings) -> None:
    """A proof search with no time to find one: the engine's verdict is withheld."""
    tight = settings.model_copy(update={"proofs": "required", "proof_timeout": 1e-6})
    for client in serve_client(tight):
        job = finished_job(client, UNSAT_ONNX, UNSAT_PROP)
        assert (job["state"], job["verdict"]) == ("succeeded", "unknown"), job
        assert job["message"].startswith(
            "verified by the engine, but no proof the checker accepts: no proof found")
        assert job["result"]["engine_verdict"] == "verified"
        cert = client.get(job["certificate_url"]).json()
        assert cert["verdict"] == "unknown" and cert["certificate"]["verdict"] == "unknown"
        assert cert["proof"]["status"] == "unavailable"
        assert "time budget" in cert["proof"]["reason"]
        page = client.get(f"/jobs/{job['id']}").text
        assert "The engine verified this property" in page and "NNVERIFY_PROOFS=required" in page


def test_required_json_property_ends_unknown(proofs_required) -> None:
    job = finished_job(proofs_required, NANO_ONNX, JSON_PROPERTY)
    assert (job["state"], job["verdict"]) == ("succeeded", "unknown"), job
    assert job["message"] == ("verified by the engine, but no proof the checker accepts: "
                              "proofs cover VNN-LIB properties only; this property is in "
                              "the JSON form")
    cert = proofs_required.get(job["certificate_url"]).json()
    assert cert["proof"]["status"] == "unavailable" and cert["property_format"] == "json"
    missing = proofs_required.get(f"{API}/certificates/{cert['id']}/proof")
    assert missing.status_code == 404 and "VNN-LIB" in missing.json()["detail"]


def test_required_publishes_verified_with_a_checked_proof(proofs_required) -> None:
    job = finished_job(proofs_required, NANO_ONNX, NANO_PROP)
    assert job["verdict"] == "verified", job
    cert = proofs_required.get(job["certificate_url"]).json()
    assert cert["proof"]["status"] == "checked"


# -- ownership, deletion, dashboard --------------------------------------------------------
def test_another_key_cannot_download_a_proof(settings) -> None:
    keyed = settings.model_copy(update={"require_api_keys": True})
    for client in serve_client(keyed):
        with session_scope(keyed) as session:
            alice = {"X-API-Key": create_key(session, "alice")[1]}
            bob = {"X-API-Key": create_key(session, "bob")[1]}
        job = finished_job(client, UNSAT_ONNX, UNSAT_PROP, headers=alice)
        cert = client.get(job["certificate_url"], headers=alice).json()
        assert client.get(cert["proof_url"], headers=alice).status_code == 200
        for url in (cert["proof_url"], cert["property_url"], cert["model_file_url"]):
            refused = client.get(url, headers=bob)
            assert refused.status_code == 404, url
        assert client.get(cert["proof_url"]).status_code == 401


def test_deleting_the_model_deletes_the_proof(client) -> None:
    job = finished_job(client, UNSAT_ONNX, UNSAT_PROP)
    cert = client.get(job["certificate_url"]).json()
    assert cert["proof"]["status"] == "checked"
    assert client.delete(f"{API}/models/{job['model_id']}").status_code == 204
    assert client.get(cert["proof_url"]).status_code == 404
    with client.app.state.sessions() as s:  # type: ignore[attr-defined]
        assert s.query(Certificate).count() == 0


def test_the_dashboard_shows_proof_checked(client) -> None:
    job = finished_job(client, UNSAT_ONNX, UNSAT_PROP)
    cert = client.get(job["certificate_url"]).json()
    page = client.get(f"/jobs/{job['id']}")
    assert page.status_code == 200
    assert "proof checked" in page.text
    assert f'href="/api/v1/certificates/{cert["id"]}/proof"' in page.text
    assert f"{cert['proof']['leaves']} leaf" in page.text
    assert client.get(f"/jobs/{job['id']}").text.count("nnverify check") == 1


def test_the_dashboard_says_why_there_is_no_proof(proofs_off) -> None:
    job = finished_job(proofs_off, UNSAT_ONNX, UNSAT_PROP)
    page = proofs_off.get(f"/jobs/{job['id']}").text
    assert "proof checked" not in page
    assert "NNVERIFY_PROOFS=off" in page

"""Keys own what they create: on a server that requires keys, a second key can neither see
nor touch the first key's model, job, certificate or counterexample (404, as if absent, in
the API and the dashboard alike), reads need a key (401 without, 403 revoked), an admin key
sees and acts on everything; a loopback server without required keys stays open."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from service_testkit import (
    API,
    NANO_ONNX,
    NANO_PROP,
    SAT_ONNX,
    SAT_PROP,
    ThreadQueue,
    job_body,
    upload,
    wait_finished,
)

from service.app import create_app
from service.db import session_scope
from service.keys import create_key, revoke_key
from service.settings import ServiceSettings


@dataclass
class Keys:
    alice: dict[str, str]
    bob: dict[str, str]
    admin: dict[str, str]
    revoked: dict[str, str]


@pytest.fixture
def shared(settings: ServiceSettings) -> Iterator[tuple[TestClient, Keys]]:
    """A server that requires keys, with two user keys, an admin key and a revoked key."""
    settings = settings.model_copy(update={"require_api_keys": True})
    queue = ThreadQueue(settings)
    with TestClient(create_app(settings, queue)) as client:
        made = {}
        with session_scope(settings) as session:
            for name, role in (("alice", "user"), ("bob", "user"), ("boss", "admin"),
                               ("gone", "user")):
                made[name] = {"X-API-Key": create_key(session, name, role)[1]}
        with session_scope(settings) as session:
            revoke_key(session, "gone")
        yield client, Keys(made["alice"], made["bob"], made["boss"], made["gone"])
    queue.shutdown()


def falsified_job(client: TestClient, key: dict[str, str]) -> tuple[dict, dict]:
    """Alice's model and a finished falsified job on it (with counterexample and
    certificate)."""
    model = upload(client, SAT_ONNX, headers=key).json()
    made = client.post(f"{API}/jobs", json=job_body(model["id"], SAT_PROP), headers=key)
    assert made.status_code == 202, made.text
    job = _wait(client, made.json()["url"], key)
    assert job["verdict"] == "falsified" and job["result"]["counterexamples"], job
    return model, job


def _wait(client: TestClient, url: str, key: dict[str, str]) -> dict:
    from service_testkit import wait_for

    return wait_for(lambda: client.get(url, headers=key).json(),
                    lambda j: j["state"] in ("succeeded", "failed", "cancelled"), 60)


def test_another_key_cannot_see_or_touch_what_a_key_created(shared) -> None:
    client, keys = shared
    model, job = falsified_job(client, keys.alice)
    cert_url = job["certificate_url"]
    assert client.get(cert_url, headers=keys.alice).status_code == 200
    bob = keys.bob
    for path in (f"/models/{model['id']}", f"/models/{model['sha256']}",
                 f"/models/{model['id']}/certificates", f"/jobs/{job['id']}",
                 f"/jobs/{job['id']}/events"):
        answer = client.get(API + path, headers=bob)
        assert answer.status_code == 404, (path, answer.text)
    assert client.get(cert_url, headers=bob).status_code == 404
    assert client.get(f"{API}/models", headers=bob).json() == {
        "items": [], "total": 0, "limit": 100, "offset": 0}
    assert client.get(f"{API}/jobs", headers=bob).json()["total"] == 0
    assert client.post(f"{API}/jobs/{job['id']}/cancel", headers=bob).status_code == 404
    assert client.delete(f"{API}/models/{model['id']}", headers=bob).status_code == 404
    on_theirs = client.post(f"{API}/jobs", json=job_body(model["id"], SAT_PROP), headers=bob)
    assert on_theirs.status_code == 404
    # the 404s say nothing that a made-up id would not
    assert client.get(f"{API}/jobs/{'0' * 32}", headers=bob).json()["detail"] == \
        client.get(f"{API}/jobs/{job['id']}", headers=bob).json()["detail"].replace(
            job["id"], "0" * 32)
    # and alice's objects are all still there
    assert client.get(f"{API}/jobs/{job['id']}", headers=keys.alice).status_code == 200
    assert client.get(f"{API}/models", headers=keys.alice).json()["total"] == 1


def test_the_dashboard_shows_a_key_only_its_own(shared) -> None:
    client, keys = shared
    model, job = falsified_job(client, keys.alice)
    mine = client.get(f"/jobs/{job['id']}", headers=keys.alice)
    assert mine.status_code == 200 and "Y_" in mine.text  # the counterexample's outputs
    assert client.get(f"/jobs/{job['id']}/certificate.json",
                      headers=keys.alice).status_code == 200
    for path in (f"/jobs/{job['id']}", f"/models/{model['id']}",
                 f"/jobs/{job['id']}/certificate.json"):
        assert client.get(path, headers=keys.bob).status_code == 404, path
    for path in ("/", "/models"):
        page = client.get(path, headers=keys.bob).text
        assert job["id"] not in page and model["id"] not in page, path
    overview = client.get("/", headers=keys.alice).text
    assert job["id"] in overview


def test_same_bytes_give_each_key_its_own_model(shared) -> None:
    client, keys = shared
    a = upload(client, NANO_ONNX, headers=keys.alice)
    b = upload(client, NANO_ONNX, headers=keys.bob)
    assert a.status_code == b.status_code == 201
    a, b = a.json(), b.json()
    assert a["sha256"] == b["sha256"] and a["id"] != b["id"]
    assert upload(client, NANO_ONNX, headers=keys.alice).json()["id"] == a["id"]  # 200, same
    assert client.delete(f"{API}/models/{b['id']}", headers=keys.bob).status_code == 204
    assert client.get(f"{API}/models/{a['id']}", headers=keys.alice).status_code == 200


def test_reads_need_a_valid_key(shared) -> None:
    client, keys = shared
    model = upload(client, NANO_ONNX, headers=keys.alice).json()
    for path in (f"{API}/models", f"{API}/models/{model['id']}", f"{API}/jobs",
                 f"{API}/jobs/x", f"{API}/jobs/x/events", f"{API}/certificates/x",
                 f"{API}/models/{model['id']}/certificates", "/openapi.json", "/metrics"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=keys.revoked).status_code == 403, path
        assert client.get(path, headers={"X-API-Key": "nnv_made_up"}).status_code == 403
    assert client.get("/openapi.json", headers=keys.bob).status_code == 200
    assert client.get("/metrics", headers=keys.bob).status_code == 200
    assert client.get("/docs", follow_redirects=False).status_code == 303  # to the login
    assert client.get("/docs", headers=keys.bob).status_code == 200
    for path in ("/health/live", "/health/ready"):
        assert client.get(API + path).status_code == 200, path
    assert client.post(f"{API}/models", headers=keys.revoked,
                       files={"file": ("m.onnx", NANO_ONNX.read_bytes())}).status_code == 403


def test_the_login_cookie_reads_but_never_writes(shared) -> None:
    """An EventSource (the job page) reads with the dashboard's cookie; a write needs the
    header, so a cross-site form cannot use the browser's cookie to write."""
    client, keys = shared
    model = upload(client, NANO_ONNX, headers=keys.alice).json()
    client.cookies.set("nnverify_key", keys.alice["X-API-Key"])
    assert client.get(f"{API}/models/{model['id']}").status_code == 200
    assert client.delete(f"{API}/models/{model['id']}").status_code == 401
    client.cookies.clear()


def test_an_admin_sees_and_acts_on_everything(shared) -> None:
    client, keys = shared
    model, job = falsified_job(client, keys.alice)
    theirs = upload(client, NANO_ONNX, headers=keys.bob).json()
    listed = client.get(f"{API}/models", headers=keys.admin).json()
    assert {m["id"] for m in listed["items"]} == {model["id"], theirs["id"]}
    assert client.get(f"{API}/jobs/{job['id']}", headers=keys.admin).json()["owner"] == \
        job["owner"] is not None
    assert client.get(job["certificate_url"], headers=keys.admin).status_code == 200
    assert client.get(f"/jobs/{job['id']}", headers=keys.admin).status_code == 200
    assert client.delete(f"{API}/models/{model['id']}", headers=keys.admin).status_code == 204
    assert client.get(f"{API}/jobs/{job['id']}", headers=keys.alice).status_code == 404


def test_a_loopback_server_stays_open(client: TestClient) -> None:
    model = upload(client, NANO_ONNX).json()
    assert model["id"] == model["sha256"] and model["owner"] is None
    made = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP))
    assert made.status_code == 202
    job = wait_finished(client, made.headers["location"])
    assert job["owner"] is None
    for path in (f"{API}/models", f"{API}/jobs", "/openapi.json", "/metrics", "/docs", "/"):
        assert client.get(path).status_code == 200, path

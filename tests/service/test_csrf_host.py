"""The dashboard's forms refuse cross-site posts (no token, a bad or another session's token,
another site's Origin or Referer) and accept their own; every route answers 400 to a Host
header outside the allow-list (DNS rebinding), and the allowed ones normally."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_testkit import API, NANO_ONNX, csrf_token, upload

from service.app import create_app
from service.db import session_scope
from service.keys import create_key
from service.settings import ServiceSettings


def queued_job(client: TestClient) -> str:
    """A job that stays queued (the queue below never runs it)."""
    model = upload(client, NANO_ONNX).json()
    body = {"model_id": model["id"], "property": {"vnnlib": "(declare-const X_0 Real)\n"
            "(declare-const Y_0 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
            "(assert (<= Y_0 -1))"}}
    made = client.post(f"{API}/jobs", json=body)
    assert made.status_code == 202, made.text
    return str(made.json()["id"])


class IdleQueue:
    def enqueue(self, job_id: str) -> None:
        pass

    def health(self) -> dict:
        return {"ok": True, "workers": 0}

    def shutdown(self) -> None:
        pass


@pytest.fixture
def idle(settings: ServiceSettings):  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings, IdleQueue())) as c:  # type: ignore[arg-type]
        yield c


def cancel(client: TestClient, job_id: str, **kw):  # type: ignore[no-untyped-def]
    return client.post(f"/jobs/{job_id}/cancel", follow_redirects=False, **kw)


def test_a_form_post_without_a_token_is_refused(idle: TestClient) -> None:
    job = queued_job(idle)
    refused = cancel(idle, job)
    assert refused.status_code == 403 and "token" in refused.text
    assert cancel(idle, job, data={"csrf_token": "0" * 32 + ".ab"}).status_code == 403
    assert idle.get(f"{API}/jobs/{job}").json()["state"] == "queued"  # nothing happened


def test_a_token_is_good_only_with_its_own_cookie(idle: TestClient) -> None:
    job = queued_job(idle)
    token = csrf_token(idle)
    other = TestClient(idle.app)  # another browser (no second start-up): its own nonce
    csrf_token(other)
    assert cancel(other, job, data={"csrf_token": token}).status_code == 403
    idle.cookies.delete("nnverify_csrf")  # a forged post carries no cookie of ours
    assert cancel(idle, job, data={"csrf_token": token}).status_code == 403
    assert idle.get(f"{API}/jobs/{job}").json()["state"] == "queued"


def test_another_sites_origin_or_referer_is_refused(idle: TestClient) -> None:
    job = queued_job(idle)
    token = csrf_token(idle)
    for header in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                   {"Referer": "https://evil.example/page"}):
        refused = cancel(idle, job, data={"csrf_token": token}, headers=header)
        assert refused.status_code == 403 and "another site" in refused.text, header
    ok = cancel(idle, job, data={"csrf_token": token},
                headers={"Origin": "http://testserver"})
    assert ok.status_code == 303
    assert idle.get(f"{API}/jobs/{job}").json()["state"] == "cancelled"


def test_the_pages_own_token_is_accepted(idle: TestClient) -> None:
    job = queued_job(idle)
    page = idle.get(f"/jobs/{job}").text
    assert 'name="csrf_token"' in page
    done = cancel(idle, job, data={"csrf_token": csrf_token(idle)})
    assert done.status_code == 303
    assert idle.get(f"{API}/jobs/{job}").json()["state"] == "cancelled"


def test_a_token_belongs_to_its_login(settings: ServiceSettings) -> None:
    """Login forms are protected too, and a token issued before signing in (or to another
    key) does not carry over to the signed-in session."""
    settings = settings.model_copy(update={"require_api_keys": True})
    with TestClient(create_app(settings, IdleQueue())) as c:  # type: ignore[arg-type]
        with session_scope(settings) as session:
            key = create_key(session, "alice")[1]
        anonymous = csrf_token(c)
        assert c.post("/login", data={"api_key": key}).status_code == 403  # no token
        signed = c.post("/login", data={"api_key": key, "csrf_token": anonymous},
                        follow_redirects=False)
        assert signed.status_code == 303 and c.cookies.get("nnverify_key") == key
        job = queued_job_with(c, key)
        assert cancel(c, job, data={"csrf_token": anonymous}).status_code == 403
        assert cancel(c, job, data={"csrf_token": csrf_token(c)}).status_code == 303


def queued_job_with(client: TestClient, key: str) -> str:
    headers = {"X-API-Key": key}
    model = upload(client, NANO_ONNX, headers=headers).json()
    body = {"model_id": model["id"], "property": {"vnnlib": "(declare-const X_0 Real)\n"
            "(declare-const Y_0 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
            "(assert (<= Y_0 -1))"}}
    return str(client.post(f"{API}/jobs", json=body, headers=headers).json()["id"])


@pytest.mark.parametrize("path", ["/", "/models", f"{API}/models", f"{API}/health/live",
                                  "/openapi.json", "/static/dashboard/dashboard.css"])
def test_a_foreign_host_gets_400_on_every_route(idle: TestClient, path: str) -> None:
    answer = idle.get(path, headers={"Host": "attacker.example"})
    assert answer.status_code == 400 and "NNVERIFY_ALLOWED_HOSTS" in answer.json()["detail"]
    assert idle.post(f"{API}/models", headers={"Host": "attacker.example:8000"},
                     files={"file": ("m.onnx", b"x")}).status_code == 400


@pytest.mark.parametrize("host", ["testserver", "localhost:8000", "127.0.0.1", "[::1]:8000"])
def test_allowed_hosts_are_served(idle: TestClient, host: str) -> None:
    assert idle.get(f"{API}/models", headers={"Host": host}).status_code == 200


def test_host_allow_list_defaults() -> None:
    loopback = ServiceSettings(host="127.0.0.1").allowed_host_names
    assert loopback == {"localhost", "127.0.0.1", "::1"}
    named = ServiceSettings(host="10.1.2.3").allowed_host_names
    assert named is not None and "10.1.2.3" in named and "evil.example" not in named
    assert ServiceSettings(allowed_hosts="*").allowed_host_names is None
    assert ServiceSettings(allowed_hosts="a.example, B.example").allowed_host_names == {
        "a.example", "b.example"}

"""Bad input: each answer has the right status and a message that says what is wrong, and
the server keeps serving afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_testkit import (
    ACAS_PROP,
    API,
    NANO_ONNX,
    NANO_PROP,
    job_body,
    onnx_bytes_with,
    onnx_bytes_with_external_data,
    upload,
    wait_finished,
)

from service.app import create_app
from service.db import session_scope
from service.keys import create_key


def post_bytes(client, data: bytes, name: str = "m.onnx"):
    return client.post(f"{API}/models", files={"file": (name, data)})


def assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word.lower() in detail.lower(), detail
    return detail


def test_not_onnx_bytes(client):
    assert_error(post_bytes(client, b"this is not a model at all" * 10), 400, "not an ONNX")


def test_truncated_onnx(client):
    data = NANO_ONNX.read_bytes()
    assert_error(post_bytes(client, data[: len(data) // 2]), 400, "ONNX")


def test_empty_upload(client):
    assert_error(post_bytes(client, b""), 400, "empty")


def test_unsupported_op(client):
    """An op neither the engine nor onnxruntime runs (one only the engine refuses is
    accepted: tests/service/test_unbounded_models.py)."""
    assert_error(post_bytes(client, onnx_bytes_with("NotAnOp")), 422, "unsupported",
                 "NotAnOp")


def test_external_data(client):
    assert_error(post_bytes(client, onnx_bytes_with_external_data()), 422, "external data")


def test_oversize_upload(client):
    assert_error(post_bytes(client, b"\0" * (2 << 20)), 413, "upload limit", "MB")


def test_missing_file_field(client):
    assert_error(client.post(f"{API}/models", data={"x": "1"}), 422, "file")


def test_malformed_vnnlib(client):
    model = upload(client, NANO_ONNX).json()
    body = {"model_id": model["id"], "property": {"vnnlib": "(assert (<= X_0"}}
    assert_error(client.post(f"{API}/jobs", json=body), 422, "invalid property")


def test_spec_model_size_mismatch(client):
    model = upload(client, NANO_ONNX).json()  # 1 input, 1 output; prop_1 has 5 and 5
    detail = assert_error(client.post(f"{API}/jobs", json=job_body(model["id"], ACAS_PROP)),
                          422, "invalid property")
    assert "5" in detail and "1" in detail


def test_property_needs_exactly_one_form(client):
    model = upload(client, NANO_ONNX).json()
    body = {"model_id": model["id"], "property": {}}
    assert_error(client.post(f"{API}/jobs", json=body), 422, "exactly one")


def test_bad_options(client):
    model = upload(client, NANO_ONNX).json()
    unknown = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP, methods=["zap"]))
    assert_error(unknown, 422, "zap")
    extra = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP, colour="red"))
    assert_error(extra, 422, "colour")
    negative = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP, timeout=-1))
    assert_error(negative, 422, "timeout")
    too_long = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP, timeout=1e9))
    assert_error(too_long, 422, "timeout")


def test_malformed_json_body(client):
    response = client.post(f"{API}/jobs", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed")


@pytest.mark.parametrize("path", [
    "/models/abc", "/jobs/abc", "/certificates/abc", "/models/abc/certificates"])
def test_unknown_ids(client, path):
    assert_error(client.get(API + path), 404, "abc")


def test_unknown_ids_in_writes(client):
    assert_error(client.post(f"{API}/jobs", json=job_body("nope", NANO_PROP)), 404, "nope")
    assert_error(client.post(f"{API}/jobs/nope/cancel"), 404, "nope")
    assert_error(client.delete(f"{API}/models/nope"), 404, "nope")


def test_bad_list_filters(client):
    assert_error(client.get(f"{API}/jobs", params={"state": "sleeping"}), 422, "state")
    assert_error(client.get(f"{API}/jobs", params={"limit": 0}), 422, "limit")


def test_cancelling_a_finished_job(client):
    model = upload(client, NANO_ONNX).json()
    url = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP)).headers["location"]
    wait_finished(client, url)
    assert_error(client.post(f"{url}/cancel"), 409, "already finished")


def test_server_keeps_serving_after_errors(client):
    post_bytes(client, b"junk")
    post_bytes(client, onnx_bytes_with("TopK"))
    client.post(f"{API}/jobs", content=b"{", headers={"content-type": "application/json"})
    assert upload(client, NANO_ONNX).status_code in (200, 201)
    assert client.get(f"{API}/health").status_code == 200


def test_api_keys_guard_reads_and_writes(settings):
    settings = settings.model_copy(update={"require_api_keys": True})
    with TestClient(create_app(settings, queue=_NoQueue())) as client:
        with session_scope(settings) as session:
            _row, key = create_key(session, "tester")
        assert_error(post_bytes(client, NANO_ONNX.read_bytes()), 401, "X-API-Key")
        bad = client.post(f"{API}/models", files={"file": ("m.onnx", NANO_ONNX.read_bytes())},
                          headers={"X-API-Key": "nnv_wrong"})
        assert_error(bad, 403, "invalid")
        good = upload(client, NANO_ONNX, headers={"X-API-Key": key})
        assert good.status_code == 201, good.text
        assert_error(client.get(f"{API}/models"), 401, "API key")  # reads need it too
        assert client.get(f"{API}/models", headers={"X-API-Key": key}).status_code == 200
        assert_error(client.delete(f"{API}/models/{good.json()['id']}"), 401, "API key")


def test_keys_are_required_off_loopback():
    from service.settings import ServiceSettings

    assert ServiceSettings(host="0.0.0.0").keys_required
    assert not ServiceSettings(host="127.0.0.1").keys_required
    assert not ServiceSettings(host="::1").keys_required
    assert ServiceSettings(host="127.0.0.1", require_api_keys=True).keys_required


class _NoQueue:
    def enqueue(self, job_id: str) -> None:
        pass

    def health(self) -> dict:
        return {"ok": True, "workers": 0}

    def shutdown(self) -> None:
        pass


def test_cuda_device_without_cuda(client):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the device is accepted")
    model = upload(client, NANO_ONNX).json()
    response = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP, device="cuda:0"))
    assert_error(response, 422, "CUDA")


def test_queue_down_fails_the_job_with_503(settings):
    class DownQueue(_NoQueue):
        def enqueue(self, job_id: str) -> None:
            raise ConnectionError("broker refused the connection")

    with TestClient(create_app(settings, queue=DownQueue())) as client:
        model = upload(client, NANO_ONNX).json()
        response = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP))
        assert_error(response, 503, "queue is unavailable", "refused")
        jobs = client.get(f"{API}/jobs").json()["items"]
        assert [(j["state"], "could not be queued" in j["message"]) for j in jobs] == [
            ("failed", True)]


def test_health_is_503_when_the_queue_is_down(settings):
    class Unhealthy(_NoQueue):
        def health(self) -> dict:
            return {"ok": False, "workers": 0, "detail": "broker unreachable: refused"}

    with TestClient(create_app(settings, queue=Unhealthy())) as client:
        response = client.get(f"{API}/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded" and body["database"]["ok"]
        assert "unreachable" in body["queue"]["detail"]


# -- issue 16: stored data, ranges, races, strict types, the OpenAPI ---------------------
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY_ONNX = EXAMPLES / "tiny_classifier.onnx"


def _lipschitz_row(client, result_sql: str) -> str:
    """A finished Lipschitz job whose result is the raw JSON text ``result_sql`` (as the
    bug stored it: bare NaN / Infinity tokens, which SQLite's JSON functions reject)."""
    from sqlalchemy import text

    model = upload(client, TINY_ONNX).json()
    body = {"model_id": model["id"], "kind": "lipschitz",
            "lipschitz": {"center": [0.5, -0.2, 0.1, 0.3], "eps": 0.01, "samples": 8,
                          "attack_steps": 2}, "options": {"timeout": 20, "bab": False}}
    job = wait_finished(client, client.post(f"{API}/jobs", json=body).json()["url"])
    with client.app.state.sessions() as s:
        s.execute(text("UPDATE jobs SET result = :r WHERE id = :id"),
                  {"r": result_sql, "id": job["id"]})
        s.commit()
    return str(job["id"])


def test_a_result_with_nan_is_stored_as_valid_json(client):
    import json

    from sqlalchemy import text

    from service.tables import Job

    job_id = _lipschitz_row(client, "{}")
    with client.app.state.sessions() as s:
        s.get(Job, job_id).result = {"kind": "lipschitz", "lower": 1.0,
                                     "upper": float("nan"), "naive": float("inf")}
        s.commit()
        raw = s.execute(text("SELECT result FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
    stored = json.loads(raw, parse_constant=lambda t: pytest.fail(f"{t} stored"))
    assert stored["upper"] is None and stored["naive"] is None and stored["lower"] == 1.0


def test_one_bad_row_breaks_no_page(client):
    job_id = _lipschitz_row(client, '{"kind": "lipschitz", "lower": NaN, "upper": Infinity,'
                                    ' "naive": -Infinity, "norm": "inf"}')
    for path in ("/", "/models", f"/jobs/{job_id}"):
        assert client.get(path).status_code == 200, path
    assert client.get(f"{API}/jobs").status_code == 200
    got = client.get(f"{API}/jobs/{job_id}")
    assert got.status_code == 200 and got.json()["result"]["upper"] is None


@pytest.mark.parametrize("path", ["/jobs", "/models", "/models/{model}/certificates"])
def test_offsets_and_limits_out_of_range_are_422(client, path):
    model = upload(client, NANO_ONNX).json()["id"]
    url = API + path.format(model=model)
    for params in ({"offset": 10**30}, {"offset": -1}, {"limit": 10**30}, {"limit": 501},
                   {"limit": "ten"}):
        assert_error(client.get(url, params=params), 422, next(iter(params)))
    assert client.get(url, params={"offset": 2**31 - 1}).status_code == 200


def test_a_model_deleted_while_a_job_is_created_answers_409(client, monkeypatch):
    """The model goes between the job's checks and its insert: 409, and no job."""
    from service.engine import ModelCache
    from service.tables import ModelRecord

    model = upload(client, NANO_ONNX).json()
    load = ModelCache.get

    def load_then_delete(cache, sha, loader):  # type: ignore[no-untyped-def]
        engine_model = load(cache, sha, loader)
        with client.app.state.sessions() as s:
            s.query(ModelRecord).filter_by(id=model["id"]).delete()
            s.commit()
        return engine_model

    monkeypatch.setattr(ModelCache, "get", load_then_delete)
    raced = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP))
    assert_error(raced, 409, "deleted")
    monkeypatch.undo()
    assert client.get(f"{API}/jobs").json()["total"] == 0


def test_delete_never_takes_a_job_created_after_its_check(settings, monkeypatch):
    """The delete's own count of active jobs is stale (a job was created after it): the
    guarded delete still refuses, and the job answered 202 stays."""
    from service import services

    with TestClient(create_app(settings, queue=_NoQueue())) as client:
        model = upload(client, NANO_ONNX).json()
        made = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP))
        assert made.status_code == 202
        monkeypatch.setattr(services, "_active_jobs", lambda *_args: 0)
        assert_error(client.delete(f"{API}/models/{model['id']}"), 409, "queued or running")
        assert client.get(made.headers["location"]).json()["state"] == "queued"
        assert client.get(f"{API}/models/{model['id']}").status_code == 200


def test_a_region_too_wide_for_finite_bounds_fails_the_job(client):
    model = upload(client, TINY_ONNX).json()
    body = {"model_id": model["id"], "kind": "lipschitz",
            "lipschitz": {"center": [0.5, -0.2, 0.1, 0.3], "eps": 1e308, "samples": 8,
                          "attack_steps": 2}, "options": {"timeout": 20, "bab": False}}
    made = client.post(f"{API}/jobs", json=body)
    assert made.status_code == 202, made.text
    job = wait_finished(client, made.json()["url"])
    assert job["state"] == "failed" and job["verdict"] == "error", job
    assert "not finite" in job["message"] and job["certificate_url"] is None
    overflow = dict(body, lipschitz=dict(body["lipschitz"], eps=1.7e308, center=[1e308] * 4))
    assert_error(client.post(f"{API}/jobs", json=overflow), 422, "finite")


@pytest.mark.parametrize("device", ["meta", "mps", "cuda:x", "cpu:0", "CUDA", "cuda:1:2", ""])
def test_devices_other_than_cpu_and_cuda_are_422(client, device):
    model = upload(client, NANO_ONNX).json()
    answer = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP, device=device))
    assert_error(answer, 422, "device")


@pytest.mark.parametrize("options", [{"bab": "yes"}, {"bab": 1}, {"timeout": "60"},
                                     {"timeout": True}, {"methods": "crown"}])
def test_request_types_are_strict(client, options):
    model = upload(client, NANO_ONNX).json()
    answer = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP, **options))
    assert_error(answer, 422, next(iter(options)))


def test_non_finite_numbers_in_a_body_are_422(client):
    model = upload(client, TINY_ONNX).json()
    raw = (f'{{"model_id": "{model["id"]}", "kind": "lipschitz", "lipschitz": '
           '{"center": [NaN, 0, 0, 0], "eps": 0.1}}')
    answer = client.post(f"{API}/jobs", content=raw,
                         headers={"content-type": "application/json"})
    assert_error(answer, 422, "finite")


def test_the_openapi_declares_every_error_answer(client):
    spec = client.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/ErrorBody"}
    wanted = {("post", "/api/v1/jobs"): {"400", "401", "403", "404", "409", "413", "422",
                                         "503"},
              ("delete", "/api/v1/models/{model_id}"): {"401", "403", "404", "409"},
              ("post", "/api/v1/models"): {"400", "401", "403", "413", "422"},
              ("get", "/api/v1/jobs"): {"400", "401", "403", "422"}}
    for (method, path), codes in wanted.items():
        responses = spec["paths"][path][method]["responses"]
        assert codes <= set(responses), (path, sorted(responses))
        for code in codes:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == error, (path, code)


def test_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "POST /api/v1/jobs" in page.text
    assert "ErrorBody" in page.text and "409" in page.text
    assert "<script" not in page.text and "cdn" not in page.text.lower()
    assert not any(f'{attr}="http' in page.text for attr in ("src", "href"))

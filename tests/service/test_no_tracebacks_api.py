"""No stack traces through the API: every hostile model or property is refused with a clear
message (400 bytes that are not ONNX, 422 anything else the engine cannot use) or becomes a
job that finishes (a verdict, or failed with the message), never a 500 and never a lost job.
Failures the engine does not foresee are simulated by making its calls raise."""

from __future__ import annotations

import pytest
from service_testkit import API, wait_finished

from service import services, worker
from tests.verifier.hostile_inputs import Hostile, good_model, hostile_models, hostile_specs, vnnlib

MODELS = hostile_models()
SPECS = hostile_specs()


def _upload(client, data: bytes):
    return client.post(f"{API}/models", files={"file": ("m.onnx", data)})


def _job(client, model_id: str, text: str, **options):
    return client.post(f"{API}/jobs", json={"model_id": model_id, "property": {"vnnlib": text},
                                            "options": {"timeout": 2, **options}})


def _assert_refused(response, *statuses: int) -> str:
    assert response.status_code in statuses, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 15 and "Traceback" not in detail
    return detail


def _assert_finished(client, response) -> dict:
    """A created job ends succeeded (with a verdict) or failed (with its message)."""
    assert response.status_code == 202, response.text
    job = wait_finished(client, response.json()["url"])
    assert job["state"] in ("succeeded", "failed"), job
    if job["state"] == "failed":
        assert job["verdict"] in (None, "error") and job["message"], job
    assert client.get(response.json()["url"]).status_code == 200
    return job


@pytest.mark.parametrize("case", MODELS, ids=[m.name for m in MODELS])
def test_hostile_model_upload_and_job(case: Hostile, client):
    up = _upload(client, case.data)
    if up.status_code not in (200, 201):
        detail = _assert_refused(up, 400, 422)
        assert case.must_fail or "cannot" in detail
        return
    job = _job(client, up.json()["id"], vnnlib(case.n_in, case.n_out))
    if job.status_code == 422:
        _assert_refused(job, 422)
        return
    done = _assert_finished(client, job)
    if case.name == "inf_weights":  # y_0 = -inf at x = (-1, -1): never verified
        assert done["verdict"] != "verified", done


@pytest.mark.parametrize("name", list(SPECS))
def test_hostile_property_job(name: str, client):
    text, must_fail = SPECS[name]
    model_id = _upload(client, good_model()).json()["id"]
    job = _job(client, model_id, text)
    if must_fail:
        _assert_refused(job, 422)
    elif job.status_code != 202:
        _assert_refused(job, 422)
    else:
        _assert_finished(client, job)


HOSTILE_JSON = [
    {"kind": "robustness", "center": [1e308, 0], "epsilon": 1e308, "label": 0},
    {"kind": "robustness", "center": [0, 0], "epsilon": 0.1, "label": 9},
    {"kind": "robustness", "center": [0, "a"], "epsilon": 0.1, "label": 0},
    {"kind": "output_range", "input": {"lower": [1, 1], "upper": [0, 0]}, "unsafe": [[]]},
    {"kind": "nonsense"},
    [],
]


@pytest.mark.parametrize("spec", HOSTILE_JSON, ids=[str(i) for i in range(len(HOSTILE_JSON))])
def test_hostile_json_property(spec, client):
    model_id = _upload(client, good_model()).json()["id"]
    job = client.post(f"{API}/jobs", json={"model_id": model_id, "property": {"json": spec},
                                           "options": {"timeout": 2}})
    _assert_refused(job, 400, 422)


def test_non_finite_json_numbers(client):
    """Python's JSON reader accepts NaN and Infinity literals: they are refused by name."""
    model_id = _upload(client, good_model()).json()["id"]
    for literal in ("NaN", "Infinity"):
        spec = f'{{"kind": "robustness", "center": [0, {literal}], "epsilon": 0.1, "label": 0}}'
        body = (f'{{"model_id": "{model_id}", "property": {{"json": {spec}}}, '
                '"options": {"timeout": 2}}')
        job = client.post(f"{API}/jobs", content=body,
                          headers={"Content-Type": "application/json"})
        _assert_refused(job, 400, 422)
    options = '{"timeout": NaN}'
    body = f'{{"model_id": "{model_id}", "property": {{"vnnlib": "x"}}, "options": {options}}}'
    job = client.post(f"{API}/jobs", content=body,
                      headers={"Content-Type": "application/json"})
    _assert_refused(job, 400, 422)


# -- failures nobody foresaw: whatever the engine raises is a message ---------------------
def _raise(exc: Exception):  # type: ignore[no-untyped-def]
    def fail(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise exc
    return fail


def test_unexpected_importer_exception_on_upload(client, monkeypatch):
    monkeypatch.setattr(services, "import_model", _raise(KeyError("y")))
    detail = _assert_refused(_upload(client, good_model()), 422)
    assert "KeyError" in detail and "'y'" in detail


def test_unexpected_exceptions_at_job_creation(client, monkeypatch):
    model_id = _upload(client, good_model()).json()["id"]
    monkeypatch.setattr(services, "parse_property", _raise(TypeError("bad arity")))
    detail = _assert_refused(_job(client, model_id, vnnlib()), 422)
    assert "TypeError" in detail and "bad arity" in detail
    monkeypatch.undo()
    client.app.state.model_cache._items.clear()  # the next job re-imports the model
    monkeypatch.setattr("service.engine.load_or_opaque", _raise(IndexError("list index")))
    detail = _assert_refused(_job(client, model_id, vnnlib()), 422)
    assert "IndexError" in detail


@pytest.mark.parametrize("target,exc,words", [
    ("verify", RuntimeError("boom in bab"), ("internal error", "RuntimeError", "boom in bab")),
    ("import_model", KeyError("y"), ("internal error", "KeyError")),
    ("make_certificate", ValueError("not JSON"), ("ValueError", "not JSON")),
])
def test_unexpected_exceptions_in_the_worker_fail_the_job(target, exc, words, client,
                                                          monkeypatch):
    model_id = _upload(client, good_model()).json()["id"]
    monkeypatch.setattr(worker, target, _raise(exc))
    job = _assert_finished(client, _job(client, model_id, vnnlib()))
    assert job["state"] == "failed"
    for word in words:
        assert word in job["message"], job["message"]


def test_engine_errors_in_the_worker_keep_their_own_words(client, monkeypatch):
    from verifier.errors import ModelError

    model_id = _upload(client, good_model()).json()["id"]
    monkeypatch.setattr(worker, "import_model", _raise(ModelError("the weights are odd")))
    job = _assert_finished(client, _job(client, model_id, vnnlib()))
    assert job["state"] == "failed" and "internal error" not in job["message"]
    assert "the weights are odd" in job["message"]


@pytest.mark.parametrize("case", [m for m in MODELS if not m.must_fail],
                         ids=[m.name for m in MODELS if not m.must_fail])
def test_hostile_lipschitz_jobs(case: Hostile, client):
    """A Lipschitz job ends `bounded` with a real upper bound, or fails with the reason (a
    NaN upper bound is not a bound: NaN weights, or a region so wide that inf * 0 appears)."""
    up = _upload(client, case.data)
    if up.status_code not in (200, 201):
        return
    for eps in (0.1, 1e308):
        region = {"center": [0.0] * case.n_in, "eps": eps}
        job = client.post(f"{API}/jobs", json={"model_id": up.json()["id"], "kind": "lipschitz",
                                               "lipschitz": region, "options": {"timeout": 2}})
        if job.status_code == 422:
            _assert_refused(job, 422)
            continue
        done = _assert_finished(client, job)
        if done["state"] == "succeeded":
            assert done["verdict"] == "bounded" and done["result"]["upper"] is not None, done
        if case.name == "nan_weights":
            assert done["state"] == "failed" and "NaN" in done["message"], done

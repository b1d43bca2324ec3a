"""Models the engine cannot import but onnxruntime runs, through the service.

The upload is accepted with ``bounded`` false and the importer's reason; a job searches on
onnxruntime alone (or, for inputs read only as integers, enumerates their classes:
verifier/search/discrete.py): a model whose free input is a position cast to int64 is
verified, the same model with one unsafe table entry falsified with a counterexample;
a Lipschitz job on it is refused (422) naming the reason.
"""

from __future__ import annotations

import numpy as np
from service_testkit import API, NANO_ONNX, onnx_bytes_with, wait_finished

from tests.verifier.test_integer_inputs import OFFSET, _model, _spec


def _upload(client, tmp_path, data: bytes, name: str):
    return client.post(f"{API}/models", files={"file": (name, data)})


def test_a_model_only_onnxruntime_runs_is_accepted_and_marked(client, tmp_path):
    created = _upload(client, tmp_path, onnx_bytes_with("TopK"), "topk.onnx")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["bounded"] is False and "TopK" in body["not_bounded_because"]
    assert body["op_census"] == {"Relu": 1, "TopK": 1}


def _job(client, model_id: str, spec: str, **options):
    body = {"model_id": model_id, "property": {"vnnlib": spec},
            "options": {"timeout": 20, **options}}
    return client.post(f"{API}/jobs", json=body)


def test_integer_inputs_are_decided_through_the_service(client, tmp_path):
    safe = np.zeros(17)
    model = _upload(client, tmp_path, _model(safe), "safe.onnx").json()
    assert model["bounded"] is False
    job = wait_finished(client, _job(client, model["id"], _spec(-6.5, 6.5)).headers["location"])
    assert job["state"] == "succeeded" and job["verdict"] == "verified", job
    assert "integer classes" in job["message"]
    unsafe = safe.copy()
    unsafe[-2 + OFFSET] = 50
    model = _upload(client, tmp_path, _model(unsafe), "unsafe.onnx").json()
    job = wait_finished(client, _job(client, model["id"], _spec(-6.5, 6.5)).headers["location"])
    assert job["verdict"] == "falsified", job
    (cex,) = job["result"]["counterexamples"]
    assert np.trunc(cex["input"][0]) == -2 and cex["output"][0] >= 10


def test_a_lipschitz_job_on_it_is_refused_with_the_reason(client, tmp_path):
    model = _upload(client, tmp_path, onnx_bytes_with("TopK"), "topk.onnx").json()
    body = {"model_id": model["id"], "kind": "lipschitz",
            "lipschitz": {"center": [0.5] * 4, "eps": 0.05}, "options": {"timeout": 20}}
    refused = client.post(f"{API}/jobs", json=body)
    assert refused.status_code == 422, refused.text
    assert "TopK" in refused.text


def test_its_dashboard_page_says_it_cannot_be_bounded(client, tmp_path):
    model = _upload(client, tmp_path, onnx_bytes_with("TopK"), "topk.onnx").json()
    page = client.get(f"/models/{model['id']}").text
    assert "the engine cannot import it" in page and "TopK" in page
    bounded = _upload(client, tmp_path, NANO_ONNX.read_bytes(), "nano.onnx").json()
    assert bounded["bounded"] is True
    assert "cannot import it" not in client.get(f"/models/{bounded['id']}").text

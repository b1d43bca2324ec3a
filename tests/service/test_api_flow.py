"""The whole flow in one process: upload, create a job, poll it to its verdict, fetch the
certificate, list and filter, delete (TestClient and the real job function in threads)."""

from __future__ import annotations

from service_testkit import (
    API,
    NANO_ONNX,
    NANO_PROP,
    SAT_ONNX,
    SAT_PROP,
    job_body,
    upload,
    wait_finished,
)


def test_upload_is_content_addressed(client):
    first = upload(client, NANO_ONNX)
    assert first.status_code == 201, first.text
    again = upload(client, NANO_ONNX)
    assert again.status_code == 200
    body = first.json()
    assert again.json()["id"] == body["id"] == body["sha256"]
    assert body["n_inputs"] == 1 and body["n_outputs"] == 1
    assert body["op_census"] and body["n_parameters"] >= 1
    assert client.get(f"{API}/models").json()["total"] == 1
    assert client.get(f"{API}/models/{body['id']}").json()["input_shape"] == body["input_shape"]


def test_job_runs_to_a_verdict_with_a_certificate(client):
    model = upload(client, NANO_ONNX).json()
    created = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP))
    assert created.status_code == 202, created.text
    assert created.headers["location"] == created.json()["url"]
    job = wait_finished(client, created.headers["location"])
    assert job["state"] == "succeeded", job
    assert job["verdict"] == "verified"
    assert job["attempts"] == 1 and job["progress"] is not None
    cert = client.get(job["certificate_url"]).json()
    assert cert["verdict"] == "verified" and cert["job_id"] == job["id"]
    assert cert["certificate"]["model_sha256"] == model["sha256"]
    listed = client.get(f"{API}/models/{model['id']}/certificates").json()
    assert [c["id"] for c in listed["items"]] == [cert["id"]]


def test_falsified_job_and_filters(client):
    sat = upload(client, SAT_ONNX).json()
    nano = upload(client, NANO_ONNX).json()
    urls = [client.post(f"{API}/jobs", json=job_body(m["id"], p)).headers["location"]
            for m, p in ((sat, SAT_PROP), (nano, NANO_PROP))]
    jobs = [wait_finished(client, u) for u in urls]
    assert jobs[0]["verdict"] == "falsified", jobs[0]
    assert jobs[0]["result"]["counterexamples"]
    by_model = client.get(f"{API}/jobs", params={"model": sat["id"]}).json()
    assert [j["id"] for j in by_model["items"]] == [jobs[0]["id"]]
    verified = client.get(f"{API}/jobs", params={"verdict": "verified"}).json()
    assert [j["id"] for j in verified["items"]] == [jobs[1]["id"]]
    page = client.get(f"{API}/jobs", params={"state": "succeeded", "limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1


def test_delete_model_removes_its_jobs(client):
    model = upload(client, NANO_ONNX).json()
    url = client.post(f"{API}/jobs", json=job_body(model["id"], NANO_PROP)).headers["location"]
    wait_finished(client, url)
    assert client.delete(f"{API}/models/{model['id']}").status_code == 204
    assert client.get(url).status_code == 404
    assert client.get(f"{API}/models/{model['id']}").status_code == 404


def test_health_reports_database_and_queue(client):
    health = client.get(f"{API}/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["database"]["ok"] and body["workers"] == 2


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert f"{API}/jobs/{{job_id}}/cancel" in paths


def test_json_property(client):
    model = upload(client, NANO_ONNX).json()
    spec = {"kind": "output_range", "input": {"lower": [-1.0], "upper": [1.0]},
            "unsafe": [[{"output": 0, "op": "<=", "value": -1.0}]]}
    body = {"model_id": model["id"], "property": {"json": spec}, "options": {"timeout": 20}}
    created = client.post(f"{API}/jobs", json=body)
    assert created.status_code == 202, created.text
    job = wait_finished(client, created.headers["location"])
    assert (job["state"], job["verdict"]) == ("succeeded", "verified"), job

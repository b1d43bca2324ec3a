"""Lipschitz jobs through the API (SQLite, the real job function in threads): the bracket
agrees with the engine run in-process and with onnxruntime's finite-difference gradients,
the certificate records it, bad requests get clear 4xx messages, a running job is cancelled
within a couple of seconds, a deadline ends splitting with a sound bracket; then the pages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from service_testkit import (
    ACAS_ONNX,
    API,
    NANO_ONNX,
    NANO_PROP,
    ThreadQueue,
    form,
    fresh_postgres_database,
    upload,
    wait_finished,
    wait_for,
)

from service.app import create_app
from verifier import load_model, parse_vnnlib
from verifier.lipschitz import LipschitzSettings, local_lipschitz, monotonicity

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY_ONNX, TINY_PROP = EXAMPLES / "tiny_classifier.onnx", EXAMPLES / "tiny_robustness.vnnlib"
CENTRE = [0.5, -0.2, 0.1, 0.3]  # tiny_classifier: 4 inputs, 3 outputs, Gemm-ReLU-Gemm
EPS = 0.05
QUICK = {"samples": 64, "attack_steps": 10}


def lipschitz_body(model_id: str, bab: bool = False, timeout: float = 20,
                   **params: Any) -> dict[str, Any]:
    params = {"center": CENTRE, "eps": EPS, **QUICK, **params}
    return {"model_id": model_id, "kind": "lipschitz", "lipschitz": params,
            "options": {"timeout": timeout, "bab": bab}}


def submit(client, body: dict[str, Any]) -> dict[str, Any]:
    created = client.post(f"{API}/jobs", json=body)
    assert created.status_code == 202, created.text
    return created.json()


def ort_gradients(path: Path, x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """The Jacobian (outputs, inputs) at x by central differences of onnxruntime's outputs
    (the original model, independent of the engine)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]  # batch 1

    def f(v: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run(None, {name: v.reshape(shape).astype(np.float32)})[0],
                          dtype=np.float64).ravel()

    cols = [(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(x.size)]
    return np.stack(cols, axis=1)


def test_lipschitz_job_brackets_the_constant_as_the_engine_does(client):
    model = upload(client, TINY_ONNX).json()
    created = submit(client, lipschitz_body(model["id"]))
    assert created["kind"] == "lipschitz" and created["options"]["lipschitz"]["eps"] == EPS
    job = wait_finished(client, created["url"])
    assert (job["state"], job["verdict"]) == ("succeeded", "bounded"), job
    r = job["result"]
    assert r["lower"] <= r["upper"] <= r["naive"]
    assert r["ratio"] == pytest.approx(r["naive"] / r["upper"])
    assert r["norm"] == "inf" and r["outputs"] == "all outputs"
    centre = np.array(CENTRE)
    assert np.allclose(r["region"]["lower"], centre - EPS)
    assert np.allclose(r["region"]["upper"], centre + EPS)

    direct = local_lipschitz(load_model(TINY_ONNX), centre - EPS, centre + EPS, None,
                             LipschitzSettings(**QUICK))
    assert (r["lower"], r["upper"], r["naive"]) == pytest.approx(
        (direct.lower, direct.upper, direct.naive), rel=1e-12)

    # independent of the engine: l1 row norms of onnxruntime's finite-difference Jacobian
    at_centre = np.abs(ort_gradients(TINY_ONNX, centre)).sum(1).max()
    assert r["lower"] >= at_centre * (1 - 1e-3) - 1e-4  # the centre is among the points tried
    rng = np.random.default_rng(0)
    sampled = max(np.abs(ort_gradients(TINY_ONNX, x)).sum(1).max()
                  for x in rng.uniform(centre - EPS, centre + EPS, (40, 4)))
    assert sampled <= r["upper"] * (1 + 1e-3) + 1e-4

    cert = client.get(job["certificate_url"])
    assert cert.status_code == 200
    body = cert.json()["certificate"]
    assert cert.json()["verdict"] == "bounded" and body["kind"] == "lipschitz"
    assert body["model_sha256"] == model["sha256"] and body["engine"]["version"]
    assert (body["lower"], body["upper"], body["naive"]) == (r["lower"], r["upper"], r["naive"])
    assert body["norm"] == "inf" and body["C"] is None and body["method"]["upper"]
    assert body["region"] == {"lower": r["region"]["lower"], "upper": r["region"]["upper"]}
    listed = client.get(f"{API}/jobs", params={"kind": "lipschitz"}).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    assert client.get(f"{API}/jobs", params={"kind": "verify"}).json()["total"] == 0


def test_region_from_a_property_two_norm_one_output_and_monotonicity(client):
    model = upload(client, TINY_ONNX).json()
    text = TINY_PROP.read_text()
    body = {"model_id": model["id"], "kind": "lipschitz", "property": {"vnnlib": text},
            "lipschitz": {"norm": "2", "output": 1, **QUICK,
                          "monotonicity": [{"output": 0, "input": 2}]},
            "options": {"timeout": 20, "bab": False}}
    job = wait_finished(client, submit(client, body)["url"])
    assert job["verdict"] == "bounded", job
    r = job["result"]
    case = parse_vnnlib(text, n_inputs=4, n_outputs=3).cases[0]
    assert np.allclose(r["region"]["lower"], case.lower)  # the property's first input box
    assert np.allclose(r["region"]["upper"], case.upper)
    C = np.array([[0.0, 1.0, 0.0]])
    direct = local_lipschitz(load_model(TINY_ONNX), case.lower, case.upper, C,
                             LipschitzSettings(norm="2", **QUICK))
    assert (r["lower"], r["upper"]) == pytest.approx((direct.lower, direct.upper), rel=1e-12)
    grads = [ort_gradients(TINY_ONNX, x)[1] for x in np.random.default_rng(1).uniform(
        case.lower, case.upper, (40, 4))]
    assert max(np.linalg.norm(g) for g in grads) <= r["upper"] * (1 + 1e-3) + 1e-4
    [mono] = r["monotonicity"]
    expect = monotonicity(load_model(TINY_ONNX), case.lower, case.upper, 0, 2, 64, 0)
    assert mono["proved"] == expect["proved"] and mono["min_partial"] == expect["min_partial"]
    cert = client.get(job["certificate_url"]).json()["certificate"]
    assert cert["C"] == C.tolist() and cert["norm"] == "2" and cert["monotonicity"]

    # with eps: the property's box centre +- eps, as `nnverify lipschitz --center-file`
    body["lipschitz"]["eps"] = 0.01
    job = wait_finished(client, submit(client, body)["url"])
    centre = (case.lower + case.upper) / 2
    assert np.allclose(job["result"]["region"]["lower"], centre - 0.01)


def test_a_benchmark_model_with_a_spec_matrix_row(client):
    if not ACAS_ONNX.exists():
        pytest.skip(f"{ACAS_ONNX} is absent")
    model = upload(client, ACAS_ONNX).json()
    centre = [0.64, 0.0, 0.0, 0.475, -0.475]
    body = lipschitz_body(model["id"], center=centre, eps=0.01, C=[[1, -1, 0, 0, 0]],
                          samples=32, attack_steps=5)
    job = wait_finished(client, submit(client, body)["url"], timeout=60)
    r = job["result"]
    assert job["verdict"] == "bounded" and 0 < r["lower"] <= r["upper"] < r["naive"]
    grad = ort_gradients(ACAS_ONNX, np.array(centre), h=1e-4)
    assert r["lower"] >= abs(grad[0] - grad[1]).sum() * (1 - 1e-2) - 1e-3


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


@pytest.mark.parametrize("change,status,words", [
    ({"center": [0.1, 0.2]}, 422, ("center", "2 values", "4 inputs")),
    ({"eps": 0}, 422, ("eps", "greater than 0")),
    ({"eps": -0.1}, 422, ("eps",)),
    ({"norm": "1"}, 422, ("norm", "'inf'")),
    ({"output": 3}, 422, ("output 3", "0 to 2")),
    ({"C": [[1.0, 2.0]]}, 422, ("C", "3 values")),
    ({"output": 0, "C": [[1.0, 0, 0]]}, 422, ("output", "C")),
    ({"eps": None}, 422, ("center", "eps")),
    ({"lower": [0, 0, 0, 0], "upper": [1, 1, 1, 1]}, 422, ("not both",)),
    ({"monotonicity": [{"output": 0, "input": 7}]}, 422, ("monotonicity[0]",)),
    ({"samples": -1}, 422, ("samples",)),
    ({"colour": "red"}, 422, ("colour",)),
])
def test_bad_lipschitz_parameters_are_refused_clearly(client, change, status, words):
    model = upload(client, TINY_ONNX).json()
    body = lipschitz_body(model["id"])
    body["lipschitz"].update(change)
    body["lipschitz"] = {k: v for k, v in body["lipschitz"].items() if v is not None}
    assert_error(client.post(f"{API}/jobs", json=body), status, *words)


def test_bad_kinds_and_regions_are_refused_clearly(client):
    model = upload(client, TINY_ONNX).json()
    post = lambda body: client.post(f"{API}/jobs", json=body)  # noqa: E731
    assert_error(post(dict(lipschitz_body(model["id"]), kind="lipshitz")), 422, "kind",
                 "'lipschitz'")
    assert_error(post({"model_id": model["id"], "kind": "lipschitz"}), 422, "region")
    both = dict(lipschitz_body(model["id"]), property={"vnnlib": TINY_PROP.read_text()})
    assert_error(post(both), 422, "not both")
    assert_error(post({"model_id": model["id"], "lipschitz": {"eps": 0.1}}), 422,
                 '"kind": "lipschitz"')
    box = lipschitz_body(model["id"])
    box["lipschitz"] = {"lower": [0, 0, 0, 1], "upper": [1, 1, 1, 0]}
    assert_error(post(box), 422, "empty", "input 3")
    methods = lipschitz_body(model["id"])
    methods["options"]["methods"] = ["crown"]
    assert_error(post(methods), 422, "methods")
    wrong_size = {"model_id": model["id"], "kind": "lipschitz",
                  "property": {"vnnlib": NANO_PROP.read_text()}}
    assert_error(post(wrong_size), 422, "invalid lipschitz job")
    assert_error(client.get(f"{API}/jobs", params={"kind": "nope"}), 422, "kind")


def test_models_without_jacobian_bounds_are_refused_up_front(client):
    from onnx import TensorProto, helper

    node = helper.make_node("Softmax", ["x"], ["y"], name="soft")
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 9
    made = client.post(f"{API}/models", files={"file": ("soft.onnx",
                                                        onnx_model.SerializeToString())})
    assert made.status_code == 201, made.text
    body = lipschitz_body(made.json()["id"], center=[0.0, 0.0, 0.0])
    assert_error(client.post(f"{API}/jobs", json=body), 422, "Softmax", "not supported")


def test_cancel_a_running_lipschitz_job_stops_it_within_seconds(client):
    model = upload(client, TINY_ONNX).json()
    job = submit(client, lipschitz_body(model["id"], bab=True, timeout=120))
    running = wait_for(lambda: client.get(job["url"]).json(),
                       lambda j: (j["progress"] or {}).get("stage") == "splitting", 20)
    assert running["state"] == "running" and running["progress"]["lipschitz_upper"] > 0
    asked = time.monotonic()
    response = client.post(f"{job['url']}/cancel")
    assert response.status_code == 202 and response.json()["cancel_requested"]
    done = wait_finished(client, job["url"], timeout=10)
    assert time.monotonic() - asked < 2.5
    assert done["state"] == "cancelled" and done["verdict"] is None
    assert done["certificate_url"] is None


def test_the_deadline_ends_splitting_with_a_sound_bracket(client):
    model = upload(client, TINY_ONNX).json()
    job = submit(client, lipschitz_body(model["id"], bab=True, timeout=1.5))
    done = wait_finished(client, job["url"], timeout=15)
    r = done["result"]
    assert (done["state"], done["verdict"]) == ("succeeded", "bounded"), done
    assert r["details"]["stopped"] and r["details"]["bab_leaves"] > 1
    assert done["seconds"] < 4
    centre = np.array(CENTRE)
    plain = local_lipschitz(load_model(TINY_ONNX), centre - EPS, centre + EPS, None,
                            LipschitzSettings(**QUICK))
    assert r["lower"] == pytest.approx(plain.lower) and r["upper"] <= plain.upper + 1e-12
    assert done["certificate_url"] is not None


def test_lipschitz_jobs_on_postgresql(settings):
    """The kind filter and the bracket columns read JSON in SQL: PostgreSQL as well."""
    with fresh_postgres_database() as url:
        pg = settings.model_copy(update={"database_url": url})
        queue = ThreadQueue(pg)
        with TestClient(create_app(pg, queue)) as c:
            model = upload(c, TINY_ONNX).json()
            job = wait_finished(c, submit(c, lipschitz_body(model["id"]))["url"])
            assert job["verdict"] == "bounded"
            assert c.get(f"{API}/jobs", params={"kind": "lipschitz"}).json()["total"] == 1
            assert c.get(f"{API}/jobs", params={"kind": "verify"}).json()["total"] == 0
            assert f"[{job['result']['lower']:.6g}," in c.get("/").text
        queue.shutdown()


# -- the dashboard -----------------------------------------------------------------------
def test_pages_show_a_lipschitz_job(client):
    model = upload(client, TINY_ONNX).json()
    nano = upload(client, NANO_ONNX).json()
    verify = client.post(f"{API}/jobs", json={"model_id": nano["id"], "property": {
        "vnnlib": NANO_PROP.read_text()}, "options": {"timeout": 20}}).json()
    job = wait_finished(client, submit(client, lipschitz_body(model["id"]))["url"])
    wait_finished(client, verify["url"])
    r = job["result"]
    page = client.get(f"/jobs/{job['id']}").text
    assert f"[{r['lower']:.6g}, {r['upper']:.6g}]" in page
    assert f"{r['naive']:.6g}" in page and f"{r['naive'] / r['upper']:.3g}×" in page
    assert 'v-bounded">bounded</span>' in page and "centre ± 0.05" in page
    assert "4 inputs" in page and "rows’ l1 norms" in page and "Bound history" not in page
    overview = client.get("/").text
    assert 'id="lipschitz-jobs"' in overview and f'href="/jobs/{job["id"]}"' in overview
    assert "<td>lipschitz</td>" in overview and "<td>verify</td>" in overview
    matrix = overview.split('id="matrix-h"')[1].split("</section>")[0]
    assert job["property_id"] not in matrix and verify["property_id"] in matrix
    assert 'v-bounded">bounded</span> <strong>1</strong>' in overview
    assert f'href="/jobs/{job["id"]}"' in client.get("/", params={"verdict": "bounded"}).text
    assert client.get("/", params={"verdict": "bounded"}).status_code == 200


def test_model_page_form_starts_lipschitz_jobs(client):
    model = upload(client, TINY_ONNX).json()
    page = client.get(f"/models/{model['id']}").text
    assert 'id="lipschitz-form"' in page and 'for="lip_center"' in page
    made = client.post(
        f"/models/{model['id']}/jobs", follow_redirects=False, data=form(client, {
        "kind": "lipschitz", "region": "point", "lip_center": "0.5, -0.2, 0.1, 0.3",
        "eps": "0.05", "norm": "inf", "timeout": "20"}))
    assert made.status_code == 303, made.text
    job = wait_finished(client, f"{API}/jobs/" + made.headers["location"].rsplit("/", 1)[1])
    assert job["verdict"] == "bounded" and job["options"]["bab"] is False
    from_prop = client.post(
        f"/models/{model['id']}/jobs", follow_redirects=False, data=form(client, {
        "kind": "lipschitz", "region": "property",
        "lip_vnnlib": TINY_PROP.read_text().replace("\n", "\r\n"), "output": "2",
        "bab": "on", "bab_seconds": "0.2", "timeout": "20"}))
    assert from_prop.status_code == 303, from_prop.text
    job = wait_finished(client, f"{API}/jobs/" + from_prop.headers["location"].rsplit("/", 1)[1])
    assert job["verdict"] == "bounded" and job["result"]["outputs"] == "output 2"
    bad = client.post(f"/models/{model['id']}/jobs", data=form(client, {
        "kind": "lipschitz", "region": "point", "lip_center": "0.5, 0.1", "eps": "0.05"}))
    assert bad.status_code == 422 and "4 inputs" in bad.text
    no_eps = client.post(f"/models/{model['id']}/jobs", data=form(client, {
        "kind": "lipschitz", "region": "point", "lip_center": "0.5, -0.2, 0.1, 0.3"}))
    assert no_eps.status_code == 400 and "eps" in no_eps.text


# -- `nnverify serve` with its local process pool ----------------------------------------
def test_serve_runs_and_cancels_lipschitz_jobs_in_the_local_pool(tmp_path):
    import httpx
    from service_testkit import free_port
    from test_local_pool_server import start_server, stop, wait_healthy

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path / "data", port)
    try:
        wait_healthy(base, server)
        with httpx.Client(base_url=base, timeout=10) as c:
            made = upload(c, TINY_ONNX)
            assert made.status_code == 201, made.text
            model = made.json()
            quick = submit(c, lipschitz_body(model["id"], bab=True, bab_seconds=0.3))
            job = wait_finished(c, quick["url"], timeout=60)
            assert (job["state"], job["verdict"]) == ("succeeded", "bounded"), job
            assert job["result"]["lower"] <= job["result"]["upper"] <= job["result"]["naive"]
            cert = c.get(job["certificate_url"]).json()["certificate"]
            assert cert["upper"] == job["result"]["upper"]
            slow = submit(c, lipschitz_body(model["id"], bab=True, timeout=300))
            wait_for(lambda: c.get(slow["url"]).json(),
                     lambda j: (j["progress"] or {}).get("stage") == "splitting", 60)
            asked = time.monotonic()
            assert c.post(f"{slow['url']}/cancel").status_code == 202
            done = wait_finished(c, slow["url"], timeout=20)
            assert done["state"] == "cancelled" and time.monotonic() - asked < 3
    finally:
        stop(server)

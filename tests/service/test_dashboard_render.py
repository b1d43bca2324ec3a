"""The dashboard's pages rendered by the app itself (no browser): the empty state, a running
job's progress, falsified jobs with image and table counterexamples, filters, paging, forms,
login, and the overview of 1,000 jobs under 300 ms."""

from __future__ import annotations

import base64
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_testkit import (
    SAT_ONNX,
    SAT_PROP,
    ThreadQueue,
    form,
    job_body,
    upload,
    wait_finished,
)

from service.app import create_app
from service.dashboard.views import Scale
from service.keys import create_key
from service.settings import ServiceSettings
from service.tables import Certificate, Job, ModelRecord, PropertyRecord

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def add_model(client: TestClient, name: str, shape: list[int], n_out: int = 10) -> str:
    """A model row as the upload stores it (its summary is all the pages read)."""
    mid = (name.encode().hex() * 64)[:64]
    n_in = 1
    for d in shape:
        n_in *= d
    summary = {"input": {"name": "x", "shape": shape, "dtype": "float32"},
               "output": {"name": "y", "shape": [1, n_out]}, "op_census": {"Gemm": 2, "Relu": 1},
               "n_parameters": 1234, "n_inputs": n_in, "n_outputs": n_out, "sha256": mid}
    with client.app.state.sessions() as s:  # type: ignore[attr-defined]
        s.add(ModelRecord(id=mid, sha256=mid, filename=name, size_bytes=10, onnx_bytes=b"x",
                          summary=summary))
        s.commit()
    return mid


def add_property(client: TestClient, n: int) -> str:
    pid = f"{n:064x}"
    with client.app.state.sessions() as s:  # type: ignore[attr-defined]
        s.add(PropertyRecord(id=pid, format="vnnlib", text=f"; property {n}\n(assert true)"))
        s.commit()
    return pid


def add_job(client: TestClient, model_id: str, prop_id: str, state: str,
            verdict: str | None = None, **fields: Any) -> str:
    job = Job(model_id=model_id, property_id=prop_id, state=state, verdict=verdict,
              options={"timeout": 60}, message="", **fields)
    with client.app.state.sessions() as s:  # type: ignore[attr-defined]
        s.add(job)
        s.commit()
        if state == "succeeded":
            s.add(Certificate(job_id=job.id, model_id=model_id, verdict=verdict or "unknown",
                              body={"verdict": verdict, "model_sha256": model_id}))
            s.commit()
        return job.id


def test_empty_overview_invites_an_upload(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "No jobs match" in page.text and 'href="/models"' in page.text
    assert "<h1>Verified properties</h1>" in page.text
    assert re.search(r'v-verified">verified</span> <strong>0</strong>', page.text)
    assert client.get("/static/dashboard/dashboard.css").status_code == 200


def test_running_job_shows_progress_and_bound_history(client: TestClient) -> None:
    mid, pid = add_model(client, "net", [1, 5], 5), add_property(client, 1)
    history = [{"stage": "bab", "elapsed": t, "domains_open": 4, "domains_done": 10 * t,
                "lower_bound": -1.0 + 0.2 * t} for t in range(1, 5)]
    progress = dict(history[-1], history=history)
    jid = add_job(client, mid, pid, "running", progress=progress, started_at=T0)
    page = client.get(f"/jobs/{jid}").text
    assert 'v-running">running</span>' in page and 'aria-live="polite"' in page
    assert '<dd id="p-stage">bab</dd>' in page and '<dd id="p-domains">4 / 40</dd>' in page
    assert '<dd id="p-bound">-0.2</dd>' in page
    lines = re.findall(r'<polyline class="series" points="([^"]+)"', page)
    assert len(lines) == 2 and all(len(pts.split()) == 4 for pts in lines)
    assert "Cancel job" in page and "/static/dashboard/job.js" in page


def test_latest_progress_alone_is_plotted_as_one_point(client: TestClient) -> None:
    mid, pid = add_model(client, "net", [1, 5], 5), add_property(client, 1)
    jid = add_job(client, mid, pid, "running", progress={
        "stage": "crown", "elapsed": 0.5, "domains_open": 1, "domains_done": 0,
        "lower_bound": -3.0})
    page = client.get(f"/jobs/{jid}").text
    assert page.count('<polyline class="series"') == 2 and "<circle" in page


def _png_size(data_url: str) -> tuple[int, int]:
    raw = base64.b64decode(data_url.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


@pytest.mark.parametrize("shape", [[1, 1, 28, 28], [1, 3, 32, 32]])
def test_image_counterexample_is_drawn_as_an_image(client: TestClient,
                                                   shape: list[int]) -> None:
    mid, pid = add_model(client, f"cnn{shape[1]}", shape), add_property(client, 2)
    n = shape[1] * shape[2] * shape[3]
    x = [(i % 7) / 7 for i in range(n)]
    y = [0.1 * j for j in range(10)]
    result = {"verdict": "falsified", "bounds": [[-0.5]], "methods": [],
              "counterexamples": [{"case": 0, "disjunct": 3, "input": x, "output": y}]}
    jid = add_job(client, mid, pid, "succeeded", "falsified", result=result, seconds=1.0)
    page = client.get(f"/jobs/{jid}").text
    url = re.search(r'<img class="cex" src="(data:image/png;base64,[^"]+)"', page)
    assert url is not None and _png_size(url.group(1)) == (shape[3], shape[2])
    assert 'v-falsified">falsified</span>' in page
    assert "Y_9 (largest)" in page and "X_0" not in page
    assert "Download certificate JSON" in page


def test_vector_counterexample_is_a_table_with_the_output(client: TestClient) -> None:
    mid, pid = add_model(client, "acas", [1, 5], 5), add_property(client, 3)
    result = {"verdict": "falsified", "bounds": [[-0.1, None]], "methods": [
        {"method": "crown", "seconds": 0.01, "open_before": 1, "open_after": 1}],
              "counterexamples": [{"case": 0, "disjunct": 0, "input": [0.5, -0.25, 0, 0, 1],
                                   "output": [3.0, -1.0, 7.5, 0.0, 2.0]}]}
    jid = add_job(client, mid, pid, "succeeded", "falsified", result=result)
    page = client.get(f"/jobs/{jid}").text
    assert "data:image/png" not in page
    assert "<td>X_1</td><td class=\"num\">-0.25</td>" in page
    assert "Y_2 (largest)" in page and "<td>crown</td>" in page
    download = client.get(f"/jobs/{jid}/certificate.json")
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.json()["verdict"] == "falsified"


def test_overview_matrix_filters_and_paging(client: TestClient) -> None:
    a, b = add_model(client, "alpha", [1, 5], 5), add_model(client, "beta", [1, 5], 5)
    p1, p2 = add_property(client, 1), add_property(client, 2)
    v = add_job(client, a, p1, "succeeded", "verified", created_at=T0)
    f = add_job(client, b, p2, "succeeded", "falsified", created_at=T0 + timedelta(days=2))
    page = client.get("/").text
    assert f'href="/jobs/{v}"' in page and f'href="/jobs/{f}"' in page
    assert "property 1" in page and "<th scope=\"row\">" in page
    only = client.get("/", params={"verdict": "verified"}).text
    assert f'href="/jobs/{v}"' in only and f'href="/jobs/{f}"' not in only
    dated = client.get("/", params={"since": "2026-01-11"}).text
    assert f'href="/jobs/{f}"' in dated and f'href="/jobs/{v}"' not in dated
    assert "Ignored filter" in client.get("/", params={"verdict": "maybe"}).text
    for i in range(60):
        add_job(client, a, p1, "queued", created_at=T0 + timedelta(days=3, seconds=i))
    first, second = client.get("/").text, client.get("/", params={"page": 2}).text
    assert "page 1 of 2" in first and 'rel="next"' in first
    assert f'href="/jobs/{v}"' in second  # the oldest jobs come last


def test_model_page_shows_summary_jobs_and_forms(client: TestClient) -> None:
    mid = add_model(client, "net", [1, 5], 5)
    page = client.get(f"/models/{mid}").text
    assert "1,234" in page and "<td>Gemm</td>" in page
    assert 'for="vnnlib"' in page and 'for="center"' in page and 'for="epsilon"' in page
    assert client.get("/models/unknown").status_code == 404


def test_forms_create_jobs_through_the_api_code(client: TestClient) -> None:
    model = upload(client, SAT_ONNX).json()
    bad = client.post(f"/models/{model['id']}/jobs", data=form(client, {
        "kind": "robustness", "center": "0, 0", "epsilon": "0.01", "label": "0"}))
    assert bad.status_code == 422 and "5 inputs" in bad.text
    made = client.post(
        f"/models/{model['id']}/jobs", follow_redirects=False, data=form(client, {
        "kind": "vnnlib", "vnnlib": SAT_PROP.read_text().replace("\n", "\r\n"),
        "timeout": "20"}))
    assert made.status_code == 303
    job_id = made.headers["location"].rsplit("/", 1)[1]
    job = wait_finished(client, f"/api/v1/jobs/{job_id}")
    assert job["verdict"] == "falsified"
    same = client.post("/api/v1/jobs", json=job_body(model["id"], SAT_PROP)).json()
    assert same["property_id"] == job["property_id"]  # line breaks as the browser sends them
    page = client.get(f"/jobs/{job_id}").text
    assert 'v-falsified">falsified</span>' in page and "Y_" in page
    uploaded = client.post("/models", files={"file": ("x.onnx", b"not onnx")},
                           data=form(client))
    assert uploaded.status_code == 400 and "not an ONNX model" in uploaded.text


def test_pages_need_the_api_key_when_the_api_does(settings: ServiceSettings) -> None:
    settings = settings.model_copy(update={"require_api_keys": True})
    queue = ThreadQueue(settings)
    with TestClient(create_app(settings, queue)) as c:
        with c.app.state.sessions() as s:  # type: ignore[attr-defined]
            _, key = create_key(s, "tester")
            s.commit()
        gone = c.get("/models", follow_redirects=False)
        assert gone.status_code == 303 and gone.headers["location"] == "/login?next=/models"
        assert c.post("/login", data=form(c, {"api_key": "nope"})).status_code == 403
        assert c.get("/", headers={"X-API-Key": key}).status_code == 200
        signed = c.post("/login", data=form(c, {"api_key": key, "next": "/models"}),
                        follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/models"
        assert c.get("/models", follow_redirects=False).status_code == 200
    queue.shutdown()


def test_overview_of_1000_jobs_renders_under_300_ms(client: TestClient) -> None:
    models = [add_model(client, f"model{i}", [1, 5], 5) for i in range(5)]
    props = [add_property(client, i) for i in range(40)]
    kinds = [("succeeded", "verified"), ("succeeded", "falsified"), ("succeeded", "unknown"),
             ("succeeded", "timeout"), ("running", None), ("queued", None), ("failed", None)]
    with client.app.state.sessions() as s:  # type: ignore[attr-defined]
        for i in range(1000):
            state, verdict = kinds[i % len(kinds)]
            s.add(Job(model_id=models[i % 5], property_id=props[i % 40], state=state,
                      verdict=verdict, options={"timeout": 60}, message="", seconds=0.5,
                      created_at=T0 + timedelta(seconds=i),
                      progress={"stage": "bab", "elapsed": 1.0, "lower_bound": -0.1}))
        s.commit()
    assert client.get("/").status_code == 200  # warm-up: templates compiled, caches filled
    times = []
    for _ in range(5):
        start = time.perf_counter()
        page = client.get("/")
        times.append(time.perf_counter() - start)
        assert page.status_code == 200 and "1000 in all" in page.text
    median = statistics.median(times)
    print(f"overview of 1,000 jobs: median {median * 1000:.1f} ms over 5 renders")
    assert median < 0.3


def test_robustness_form_and_cancel_button(client: TestClient) -> None:
    model = upload(client, SAT_ONNX).json()
    made = client.post(
        f"/models/{model['id']}/jobs", follow_redirects=False, data=form(client, {
        "kind": "robustness", "center": "-0.3, 0, 0.5, 0.4, 0.4", "epsilon": "0.001",
        "label": "0", "clip_lo": "-1", "clip_hi": "1", "timeout": "20"}))
    assert made.status_code == 303
    job = wait_finished(client, "/api/v1/jobs/" + made.headers["location"].rsplit("/", 1)[1])
    assert job["state"] == "succeeded" and job["verdict"] in ("verified", "falsified", "unknown")
    pid = add_property(client, 9)
    queued = add_job(client, model["id"], pid, "queued")  # never sent to a worker
    assert "Cancel job" in client.get(f"/jobs/{queued}").text
    done = client.post(f"/jobs/{queued}/cancel", data=form(client), follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{queued}"
    page = client.get(f"/jobs/{queued}").text
    assert 'v-cancelled">cancelled</span>' in page and "Cancel job" not in page
    again = client.post(f"/jobs/{queued}/cancel", data=form(client))
    assert again.status_code == 409 and "already finished" in again.text


def test_plot_scale_leaves_a_far_first_bound_off_and_keeps_zero() -> None:
    """The issue's run: IBP -2.5e5, then CROWN -792.5 and BaB -727 -> -674."""
    scale = Scale.fit([-2.5e5, -792.5, -727.0, -700.0, -674.0])
    assert scale.off_scale == 1 and -900 < scale.lo < -792.5 and 0 < scale.hi < 100
    assert all(scale.lo <= t <= scale.hi for t in scale.ticks()) and 0 in scale.ticks()
    assert len(scale.ticks()) >= 4
    assert Scale.fit([-3.0, -2.0, -1.0]).off_scale == 0  # nothing far below: all shown
    assert Scale.fit([0.5, 1.0]).lo < 0 < 0.5  # bounds above 0 still show the 0 line


def test_bab_proof_is_shown_as_such_with_time_used(client: TestClient) -> None:
    mid, pid = add_model(client, "net", [1, 5], 5), add_property(client, 1)
    history = [{"elapsed": 0.2, "domains_done": 0, "lower_bound": -2.5e5}] + [
        {"elapsed": 1.0 + t, "domains_done": 100 * t, "lower_bound": -727.0 + 10 * t}
        for t in range(6)]
    progress = dict(history[-1], stage="bab", domains_open=0, history=history)
    result = {"verdict": "verified", "bounds": [[-792.5]], "seconds": 7.5, "domains": 5000}
    jid = add_job(client, mid, pid, "succeeded", "verified", progress=progress, result=result)
    done = client.get(f"/jobs/{jid}").text
    bound = re.search(r'<dd id="p-bound">(.*?)</dd>', done, re.S)
    assert bound and bound.group(1).startswith("proved by branch-and-bound: all 5000 domains")
    assert "(final)" not in bound.group(1)
    assert done.count("first bound down to -2.5e+05, below the scale") == 2
    assert done.count('<g class="proved">') == 2  # the end of both plots, on the 0 line
    assert "before branch-and-bound" in done  # the result table's root bounds
    running = client.get(f"/jobs/{add_job(client, mid, pid, 'running', progress=progress)}").text
    assert re.search(r'<progress id="p-time" max="60" value="6.0"', running)
    assert "6.0 s of the 60 s timeout" in running and '<g class="proved">' not in running

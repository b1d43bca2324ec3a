"""The dashboard in a real headless Chromium against a real server: `nnverify serve`
(uvicorn, SQLite in a temp data dir, the embedded local worker pool) on a free loopback
port, real jobs on the test benchmarks.  Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO.parent / "shared" / "benchmarks" / "test"
SAT_ONNX, UNSAT_ONNX, PROP = (TESTS / "test_sat.onnx", TESTS / "test_unsat.onnx",
                              TESTS / "test_prop.vnnlib")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = REPO / "test-artifacts" / "screenshots"
FINISHED = ("succeeded", "failed", "cancelled")
JOB_DELAY = 1.5  # seconds every job waits before verifying, so the page can watch it run

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no /usr/bin/chromium: apt-get install -y chromium chromium-driver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _healthy(base: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the server exited: {proc.stdout.read().decode()}")  # type: ignore
    try:
        return httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`nnverify serve` on a free loopback port with two local workers; its URL."""
    port, data = free_port(), tmp_path_factory.mktemp("dashboard") / "data"
    env = dict(os.environ, NNVERIFY_DATA_DIR=str(data), NNVERIFY_LOCAL_WORKERS="2",
               NNVERIFY_PROGRESS_INTERVAL="0.1", NNVERIFY_TEST_JOB_DELAY=str(JOB_DELAY))
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base, proc), 30, "the server to answer")
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def jobs(server: str) -> dict[str, dict[str, Any]]:
    """A falsified job (test_sat) and a verified one (test_unsat), run to their end."""
    out = {}
    with httpx.Client(base_url=f"{server}/api/v1", timeout=30) as c:
        for name, onnx in (("falsified", SAT_ONNX), ("verified", UNSAT_ONNX)):
            model = c.post("/models", files={"file": (onnx.name, onnx.read_bytes())}).json()
            job = c.post("/jobs", json={"model_id": model["id"],
                                        "property": {"vnnlib": PROP.read_text()},
                                        "options": {"timeout": 30}}).json()
            out[name] = dict(job, model=model)
        for name, job in out.items():
            done = wait_until(lambda u=job["url"]: _finished(c, u), 40, f"the {name} job")
            assert done["verdict"] == name, done
            out[name].update(done)
    return out


def _finished(c: httpx.Client, url: str) -> dict[str, Any] | None:
    job = c.get(url).json()
    return job if job["state"] in FINISHED else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1366,1800", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER)) if CHROMEDRIVER.exists() else None
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(20)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    """Save a screenshot of the whole page under test-artifacts/screenshots/."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, max(900, min(int(height) + 40, 4000)))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_overview_then_job_then_a_property_submitted_from_the_page(
        server: str, jobs: dict[str, dict[str, Any]], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    matrix = browser.find_element(By.CSS_SELECTOR, "table.matrix")
    badges = [b.text for b in matrix.find_elements(By.CSS_SELECTOR, ".badge")]
    assert "verified" in badges and "falsified" in badges
    assert browser.find_element(By.TAG_NAME, "h1").text == "Verified properties"
    shot(browser, "overview")

    falsified = jobs["falsified"]
    matrix.find_element(By.CSS_SELECTOR, f'a[href="/jobs/{falsified["id"]}"]').click()
    wait_until(lambda: browser.current_url.endswith(f"/jobs/{falsified['id']}"), 10,
               "the job page")
    assert browser.find_element(By.CSS_SELECTOR, "#outcome .badge").text == "falsified"
    # the attack found it before any bound was computed: the plots say so
    assert browser.find_elements(By.CSS_SELECTOR, "#plot-time svg.plot")
    assert browser.find_elements(By.CSS_SELECTOR, "#plot-domains svg.plot")
    assert "(largest)" in browser.find_element(By.ID, "cex-h").find_element(
        By.XPATH, "..").text
    shot(browser, "job-falsified")

    verified = jobs["verified"]
    browser.get(f"{server}/models/{verified['model']['id']}")
    shot(browser, "model")
    area = browser.find_element(By.ID, "vnnlib")
    browser.execute_script("arguments[0].value = arguments[1];", area, PROP.read_text())
    area.find_element(By.XPATH, "./ancestor::form").find_element(
        By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(lambda: "/jobs/" in browser.current_url, 10, "the new job's page")
    assert browser.find_element(By.ID, "live").get_attribute("aria-live") == "polite"
    browser.execute_script("window.notReloaded = true;")
    wait_until(lambda: browser.find_element(By.ID, "state").text == "running", 10,
               "the page to show the job running")
    shot(browser, "job-running")

    def outcome() -> str | None:
        with contextlib.suppress(Exception):
            if browser.execute_script("return window.notReloaded === true"):
                return None  # still the first load, updated in place; it reloads when done
            text = browser.find_element(By.CSS_SELECTOR, "#outcome .badge").text
            return text if text not in ("queued", "running") else None
        return None

    assert wait_until(outcome, 40, "the submitted job to finish in the page") == "verified"
    assert browser.find_elements(By.LINK_TEXT, "Download certificate JSON")
    assert browser.find_elements(By.CSS_SELECTOR, "#plot-time svg.plot polyline.series")
    assert browser.find_elements(By.CSS_SELECTOR, "#plot-domains svg.plot polyline.series")
    shot(browser, "job-submitted")
    job = httpx.get(f"{server}/api/v1/jobs/{browser.current_url.rsplit('/', 1)[1]}").json()
    assert job["property_id"] == verified["property_id"]  # the same text as through the API


def test_a_lipschitz_job_submitted_from_the_model_page(
        server: str, jobs: dict[str, dict[str, Any]], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    model = jobs["verified"]["model"]
    browser.get(f"{server}/models/{model['id']}")
    form = browser.find_element(By.ID, "lipschitz-form")
    browser.execute_script("arguments[0].value = arguments[1];",
                           form.find_element(By.ID, "lip_center"), "0.6, 0, 0, 0.45, -0.45")
    form.find_element(By.ID, "eps").send_keys("0.01")
    timeout = form.find_element(By.ID, "timeout-l")
    timeout.clear()
    timeout.send_keys("8")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(lambda: "/jobs/" in browser.current_url, 10, "the Lipschitz job's page")
    assert browser.find_element(By.ID, "p-bracket")

    def outcome() -> str | None:
        with contextlib.suppress(Exception):
            text = browser.find_element(By.CSS_SELECTOR, "#outcome .badge").text
            return text if text not in ("queued", "running") else None
        return None

    assert wait_until(outcome, 40, "the Lipschitz job to finish in the page") == "bounded"
    wait_until(lambda: browser.find_elements(By.ID, "l-naive"), 10, "the result")
    interval = browser.find_element(By.ID, "l-interval").text
    lower, upper = (float(v) for v in interval.strip("[]").split(","))
    naive = float(browser.find_element(By.ID, "l-naive").text)
    assert 0 <= lower <= upper <= naive
    shot(browser, "job-lipschitz")
    browser.get(server + "/")
    assert browser.find_elements(By.CSS_SELECTOR, "#lipschitz-jobs .badge")
    shot(browser, "overview-lipschitz")

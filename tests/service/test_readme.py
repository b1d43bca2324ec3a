"""The README's service section runs as written: its curl sessions (bash, with curl and jq),
its `nnverify submit --wait` example and its Python client example, against `nnverify serve`
started for real (uvicorn, SQLite, the local pool) on a free port; and every setting of
service/settings.py is in its table of environment variables."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_testkit import free_port

from service.settings import ClientSettings, ServiceSettings

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOC_URL = "http://127.0.0.1:8000"
UNDOCUMENTED = {"test_job_delay"}  # a test hook
# curl as in the README, but failing on an HTTP error status (with the body on stdout)
STRICT_CURL = 'curl() { command curl -sS --fail-with-body "$@"; }\n'


def service_section() -> str:
    text = README.read_text()
    start = text.index("## The service\n")
    return text[start:text.index("\n## ", start + 1)]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", service_section(), re.S)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`nnverify serve` on a free port; its URL, and a folder holding a copy of examples/
    to run the README's commands in (they name examples/... from the repository's root)."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (the README's curl session uses it)")
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "examples", root / "examples")
    port = free_port()
    env = dict(os.environ, NNVERIFY_DATA_DIR=str(root / "data"), NNVERIFY_LOCAL_WORKERS="1",
               NNVERIFY_PROGRESS_INTERVAL="0.1", NNVERIFY_PORT=str(port))
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_live(base, proc)
        yield base, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_live(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read().decode()}")  # type: ignore
        try:
            if httpx.get(f"{base}/api/v1/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not start")


def run_bash(script: str, base: str, cwd: Path) -> str:
    """Run a README block with bash (the URL pointed at the test's server); its output."""
    body = "set -euo pipefail\n" + STRICT_CURL + script.replace(DOC_URL, base)
    done = subprocess.run(["bash", "-c", body], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{script}\nfailed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_curl_sessions_work_as_written(served):
    base, cwd = served
    sessions = [b for b in blocks("sh") if "curl " in b]
    assert len(sessions) == 3
    vnnlib, json_form, lipschitz = (run_bash(s, base, cwd) for s in sessions)
    assert '"id":"3921d2b79c5eb826d6b06f72eaead9c414f04e2f33ee3fef479e4a68a7f3e835"' in vnnlib
    assert "event: finished" in vnnlib and '"verdict":"verified"' in vnnlib
    assert '"certificate":{' in vnnlib  # the certificate itself, fetched last
    assert '"state":"queued"' in json_form and '"items":[' in json_form
    assert '"verdict":"bounded"' in lipschitz and '"naive":' in lipschitz


def test_the_cli_and_python_examples_work_as_written(served):
    base, cwd = served
    cli = next(b for b in blocks("sh") if "nnverify submit" in b).splitlines()[0]
    env = dict(os.environ, NNVERIFY_URL=base,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", cli], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("verified")
    (python,) = blocks("python")
    done = subprocess.run([sys.executable, "-c", python.replace(DOC_URL, base)], cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("verified [[") for line in done.stdout.splitlines()), done.stdout


def test_every_setting_is_in_the_environment_table():
    section = service_section()
    names = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}
    fields = set(ServiceSettings.model_fields) | set(ClientSettings.model_fields)
    missing = [names.get(f, f"NNVERIFY_{f.upper()}") for f in sorted(fields - UNDOCUMENTED)
               if f"`{names.get(f, f'NNVERIFY_{f.upper()}')}`" not in section]
    assert not missing, f"README's table of environment variables lacks {missing}"

"""Helpers for the service tests: benchmark files, servers that may be absent, an in-process
queue that runs the real job function, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.settings import ServiceSettings
from service.worker import run_job

BENCH = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"
TEST_DIR = BENCH / "test"
NANO_ONNX, NANO_PROP = TEST_DIR / "test_nano.onnx", TEST_DIR / "test_nano.vnnlib"
SAT_ONNX, SAT_PROP = TEST_DIR / "test_sat.onnx", TEST_DIR / "test_prop.vnnlib"
ACAS_ONNX = BENCH / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"
ACAS_PROP = BENCH / "acasxu" / "vnnlib" / "prop_1.vnnlib"
API = "/api/v1"
FINISHED = ("succeeded", "failed", "cancelled")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadQueue:
    """Runs the real ``run_job`` in threads of the test process (TestClient tests)."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.enqueued: list[str] = []

    def enqueue(self, job_id: str) -> None:
        self.enqueued.append(job_id)
        self.pool.submit(run_job, job_id, self.settings)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "backend": "threads", "workers": 2}

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)


def upload(c: Any, path: Path, **kw: Any) -> Any:
    return c.post(f"{API}/models", files={"file": (path.name, path.read_bytes())}, **kw)


def job_body(model_id: str, prop: Path, **options: Any) -> dict[str, Any]:
    return {"model_id": model_id, "property": {"vnnlib": prop.read_text()},
            "options": {"timeout": 20, **options}}


def wait_for(get: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool],
             timeout: float = 30.0) -> dict[str, Any]:
    """Poll ``get()`` until ``done`` holds; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = get()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last value: {value}")
        time.sleep(0.05)
        value = get()
    return value


def wait_finished(c: Any, job_url: str, timeout: float = 30.0) -> dict[str, Any]:
    return wait_for(lambda: c.get(job_url).json(), lambda j: j["state"] in FINISHED, timeout)


def onnx_bytes_with(op: str) -> bytes:
    """A tiny model x[1,4] -> Relu -> ``op`` (TopK or an unknown op) -> y, as ONNX bytes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
    inits = []
    if op == "TopK":
        inits.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "k"))
        nodes.append(helper.make_node("TopK", ["r", "k"], ["y", "idx"], name="topk"))
    else:
        nodes.append(helper.make_node(op, ["r"], ["y"], name="odd"))
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def onnx_bytes_with_external_data() -> bytes:
    """A linear model whose weight lives in an external file (which is not sent)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                              initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin",
                                   size_threshold=0)
    assert onnx.TensorProto.EXTERNAL == model.graph.initializer[0].data_location
    return bytes(model.SerializeToString())


PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"


def fresh_postgres_database():  # type: ignore[no-untyped-def]
    """A context manager giving the URL of a new, empty PostgreSQL database, dropped after;
    skips the test when the server is unreachable."""
    import contextlib
    import uuid

    import pytest

    @contextlib.contextmanager
    def manage():  # type: ignore[no-untyped-def]
        if not reachable(PG_HOST, PG_PORT):
            pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
        import psycopg

        name = f"nnverify_test_{uuid.uuid4().hex[:12]}"
        try:
            admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
        except psycopg.OperationalError as exc:
            pytest.skip(f"cannot connect to PostgreSQL as postgres: {exc}")
        with admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            try:
                yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
            finally:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return manage()


# -- Celery workers and a Redis server of the test's own -------------------------------
REPO = Path(__file__).resolve().parents[2]


class RedisServer:
    """A non-persistent ``redis-server`` on a free loopback port, owned by one test:
    it can be restarted (losing every message) without touching the shared server."""

    def __init__(self, workdir: Path):
        import shutil

        import pytest

        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed")
        self.workdir, self.port = workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        assert self.binary is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: {"up": reachable("127.0.0.1", self.port)}, lambda r: r["up"], 10)

    def stop(self) -> None:
        """SIGKILL: whatever it held is gone, as after a crash of a Redis without
        persistence."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


class Workers:
    """Celery worker subprocesses (``--pool=solo``) sharing one queue name, data dir, Redis
    database and (optionally) PostgreSQL database."""

    def __init__(self, tmp: Path, redis_url: str, database_url: str | None = None,
                 **env: str):
        self.database_url, self.redis_url = database_url, redis_url
        self.env = {
            "NNVERIFY_DATA_DIR": str(tmp / "data"),
            "REDIS_URL": redis_url,
            "NNVERIFY_CELERY_QUEUE": f"nnverify-test-{uuid.uuid4().hex[:10]}",
            "NNVERIFY_WORKER_BACKEND": "celery",
            "NNVERIFY_PROGRESS_INTERVAL": "0.1",
            **env,
        }
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def settings(self, **overrides: Any) -> ServiceSettings:
        """The API's settings for these workers."""
        return ServiceSettings(**{  # type: ignore[arg-type]
            "data_dir": self.env["NNVERIFY_DATA_DIR"], "redis_url": self.redis_url,
            "celery_queue": self.env["NNVERIFY_CELERY_QUEUE"], "worker_backend": "celery",
            "progress_interval": 0.1, "require_api_keys": False,
            "allowed_hosts": "testserver,localhost,127.0.0.1",
            "database_url": self.database_url, **overrides})

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        full = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        full.update(self.env, **env)
        cmd = [sys.executable, "-m", "celery", "-A", "service.celery_app", "worker",
               "--pool=solo", "-Q", self.env["NNVERIFY_CELERY_QUEUE"], "-n", f"{name}@%h",
               "--without-gossip", "--without-mingle", "--loglevel=WARNING"]
        proc = subprocess.Popen(cmd, cwd=REPO, env=full, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill(self, pid: int) -> None:
        """SIGKILL the worker whose process id is ``pid`` (and its process group)."""
        proc = next(p for p in self.procs if p.pid == pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        """Kill the workers (their jobs are done; nothing is left to acknowledge)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        with contextlib.suppress(Exception):  # a test's own Redis may be gone already
            self._purge()

    def _purge(self) -> None:
        """Drop this run's queue and any of its messages left unacknowledged in Redis."""
        import json

        import redis

        r = redis.Redis.from_url(self.redis_url)
        queue = self.env["NNVERIFY_CELERY_QUEUE"]
        for tag, raw in r.hgetall("unacked").items():
            if json.loads(raw)[2] == queue:  # [message, exchange, routing key]
                r.hdel("unacked", tag)
                r.zrem("unacked_index", tag)
        r.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        r.close()


def worker_pid(job: dict[str, Any]) -> int:
    """The process id in a job's ``worker`` (``host:pid``)."""
    return int(str(job["worker"]).rsplit(":", 1)[1])


# -- the dashboard's forms ---------------------------------------------------------------
def csrf_token(client: Any) -> str:
    """The CSRF token a page gives its forms (the login page has a form whatever the
    settings); the client keeps the nonce cookie it comes with."""
    import re

    page = client.get("/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def form(client: Any, data: dict[str, str] | None = None) -> dict[str, str]:
    """A form's fields with the CSRF token of ``client``'s session."""
    return {**(data or {}), "csrf_token": csrf_token(client)}

"""Load on the embedded service: 50 clients polling job status.

Starts `nnverify serve` on a free loopback port with a temporary data dir, uploads
test_nano and test_sat, creates jobs, then runs concurrent clients (threads + httpx) that
poll GET /api/v1/jobs/{id} for a fixed time, and prints p50/p99 latency and requests/s.
Bounded in time (--seconds) and count (--max-requests per client); loopback only.

    python bench/service_load.py [--clients 50] [--seconds 10] [--jobs 10]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BENCH = REPO.parent / "shared" / "benchmarks" / "test"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, NNVERIFY_DATA_DIR=str(data_dir), NNVERIFY_LOCAL_WORKERS=str(workers),
               NNVERIFY_WORKER_BACKEND="local")
    env.pop("DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", HOST, "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_healthy(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become healthy")


def create_jobs(base: str, bench: Path, n_jobs: int) -> list[str]:
    pairs = [("test_nano.onnx", "test_nano.vnnlib"), ("test_sat.onnx", "test_prop.vnnlib")]
    urls = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for i in range(n_jobs):
            onnx_name, prop_name = pairs[i % len(pairs)]
            model = c.post("/models", files={"file": (onnx_name, (bench / onnx_name).read_bytes())})
            model.raise_for_status()
            body = {"model_id": model.json()["id"],
                    "property": {"vnnlib": (bench / prop_name).read_text()},
                    "options": {"timeout": 10}}
            job = c.post("/jobs", json=body)
            job.raise_for_status()
            urls.append(job.headers["location"])
    return urls


def poll(urls: list[str], deadline: float, max_requests: int, out: list[float],
         errors: list[int], lock: threading.Lock, start: int, interval: float = 0.0) -> None:
    """One client: GET job URLs in turn until the deadline, waiting ``interval`` seconds
    between polls (0: back to back); record latencies in seconds."""
    mine: list[float] = []
    bad = 0
    if interval:  # pollers are not in lockstep: each starts at its own phase
        time.sleep(random.Random(start).uniform(0, interval))
    with httpx.Client(timeout=10) as c:
        for i in range(max_requests):
            if time.monotonic() >= deadline:
                break
            t0 = time.perf_counter()
            try:
                ok = c.get(urls[(start + i) % len(urls)]).status_code == 200
            except httpx.HTTPError:
                ok = False
            mine.append(time.perf_counter() - t0)
            bad += not ok
            if interval:
                time.sleep(interval)
    with lock:
        out.extend(mine)
        errors.append(bad)


def run_load(urls: list[str], clients: int, seconds: float, max_requests: int,
             interval: float = 0.0) -> None:
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    deadline = t0 + seconds
    threads = [threading.Thread(target=poll, args=(urls, deadline, max_requests, latencies,
                                                   errors, lock, k, interval))
               for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    pace = f"polling every {interval:g} s" if interval else "back to back (saturation)"
    print(f"{clients} clients {pace}, {wall:.1f} s, {len(ms)} requests, {sum(errors)} errors")
    print(f"latency p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
          f"throughput {len(ms) / wall:.0f} requests/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--max-requests", type=int, default=5000, help="per client")
    parser.add_argument("--workers", type=int, default=2, help="local pool processes")
    parser.add_argument("--bench-dir", type=Path, default=DEFAULT_BENCH)
    parser.add_argument("--interval", type=float, nargs="*", default=[0.5, 0.0],
                        help="seconds each client waits between polls; one run per value "
                             "(default: 0.5, as a dashboard polls, then 0 for saturation)")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nnverify-load-") as tmp:
        server = start_server(Path(tmp), port, args.workers)
        try:
            base = f"http://{HOST}:{port}/api/v1"
            wait_healthy(base)
            urls = create_jobs(base, args.bench_dir, args.jobs)
            for interval in args.interval:
                run_load(urls, args.clients, args.seconds, args.max_requests, interval)
            with httpx.Client(timeout=10) as c:
                states = [c.get(u).json()["state"] for u in urls]
            print("job states after the run:", {s: states.count(s) for s in set(states)})
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()

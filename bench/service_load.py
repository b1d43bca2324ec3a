"""Load on the embedded service: 50 clients polling job status while jobs run.

Starts `nnverify serve` on a free loopback port with a temporary data dir and its local
worker pool, submits one long verification per worker (mnist_fc 256x6, eps 0.05, which
BaB works on until its timeout, so every worker computes throughout) and small jobs, then
runs concurrent clients (coroutines, each with its own httpx connection) that poll
GET /api/v1/jobs/{id} for a fixed time, and prints p50/p99 latency and requests/s.
Bounded in time (--seconds) and count (--max-requests per client); loopback only.

    python bench/service_load.py [--clients 50] [--seconds 10] [--jobs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BENCH = REPO.parent / "shared" / "benchmarks" / "test"
BUSY = (REPO.parent / "shared" / "benchmarks" / "mnist_fc" / "onnx" / "mnist-net_256x6.onnx",
        REPO.parent / "shared" / "benchmarks" / "mnist_fc" / "vnnlib" / "prop_0_0.05.vnnlib")
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


def submit(c: httpx.Client, onnx_path: Path, prop_path: Path, timeout: float) -> str:
    model = c.post("/models", files={"file": (onnx_path.name, onnx_path.read_bytes())})
    model.raise_for_status()
    body = {"model_id": model.json()["id"], "property": {"vnnlib": prop_path.read_text()},
            "options": {"timeout": timeout}}
    job = c.post("/jobs", json=body)
    job.raise_for_status()
    return str(job.headers["location"])


def create_jobs(base: str, bench: Path, n_jobs: int, busy: int, busy_seconds: float
                ) -> list[str]:
    """``busy`` long jobs first (they occupy the workers), then ``n_jobs`` small ones."""
    pairs = [("test_nano.onnx", "test_nano.vnnlib"), ("test_sat.onnx", "test_prop.vnnlib")]
    with httpx.Client(base_url=base, timeout=60) as c:
        urls = [submit(c, *BUSY, busy_seconds) for _ in range(busy)]
        for i in range(n_jobs):
            onnx_name, prop_name = pairs[i % len(pairs)]
            urls.append(submit(c, bench / onnx_name, bench / prop_name, 10))
    return urls


def wait_running(urls: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10) as c:
        while time.monotonic() < deadline:
            if all(c.get(u).json()["state"] == "running" for u in urls):
                return
            time.sleep(0.2)
    raise SystemExit("the long jobs did not start")


async def poll(c: httpx.AsyncClient, urls: list[str], deadline: float, max_requests: int,
               out: list[float], errors: list[int], start: int, interval: float = 0.0) -> None:
    """One client on its own open connection: GET job URLs in turn until the deadline,
    waiting ``interval`` seconds between polls (0: back to back); record latencies (s)."""
    bad = 0
    if interval:  # pollers are not in lockstep: each starts at its own phase
        await asyncio.sleep(random.Random(start).uniform(0, interval))
    for i in range(max_requests):
        if time.monotonic() >= deadline:
            break
        t0 = time.perf_counter()
        try:
            ok = (await c.get(urls[(start + i) % len(urls)])).status_code == 200
        except httpx.HTTPError:
            ok = False
        out.append(time.perf_counter() - t0)
        bad += not ok
        if interval:
            await asyncio.sleep(interval)
    errors.append(bad)


async def _clients(urls: list[str], clients: int, seconds: float, max_requests: int,
                   interval: float, latencies: list[float], errors: list[int]) -> float:
    """Open every client's connection first (one untimed request each: a poller keeps its
    connection alive), then poll for ``seconds``; returns the polling wall time."""
    # plain HTTP on loopback: no TLS context to build per client
    conns = [httpx.AsyncClient(timeout=10, verify=False) for _ in range(clients)]
    try:
        await asyncio.gather(*(c.get(urls[0]) for c in conns))
        t0 = time.monotonic()
        await asyncio.gather(*(poll(c, urls, t0 + seconds, max_requests, latencies, errors,
                                    k, interval) for k, c in enumerate(conns)))
        return time.monotonic() - t0
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))


def run_load(urls: list[str], clients: int, seconds: float, max_requests: int,
             interval: float = 0.0) -> None:
    """``clients`` concurrent pollers as coroutines on one event loop (one thread, so the
    load generator's own overhead stays small beside the server on a small machine)."""
    latencies: list[float] = []
    errors: list[int] = []
    wall = asyncio.run(_clients(urls, clients, seconds, max_requests, interval, latencies,
                                errors))
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
    parser.add_argument("--busy", type=int, default=None,
                        help="long jobs kept running during the polls (default: one per worker)")
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
            busy = args.workers if args.busy is None else args.busy
            rounds = len(args.interval)
            urls = create_jobs(base, args.bench_dir, args.jobs, busy,
                               busy_seconds=args.seconds * rounds + 30)
            wait_running(urls[:busy])
            print(f"{busy} long jobs running in {args.workers} workers during the polls")
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

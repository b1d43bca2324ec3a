"""Tests that read the shared VNN-COMP instances skip, with the reason, where they are absent
(CI always has ../shared beside the checkout; a bare clone elsewhere may not)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest-xdist worker computes with one thread: two workers on two cores with a
    thread per core each would contend for them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def _uses_benchmarks(item: pytest.Item) -> bool:
    """Service and browser tests run jobs on the shared models through their fixtures;
    elsewhere, the tests whose module names the benchmarks."""
    path = Path(str(item.fspath))
    if path.parent.name in ("service", "e2e"):
        return True
    text = path.read_text(errors="ignore")
    return "BENCH" in text or "benchmarks" in text or "bench_instances" in text


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # under pytest-xdist (-n): the tests that share the database, Redis
        if Path(str(item.fspath)).parent.name in ("service", "e2e"):  # and the browser
            item.add_marker(pytest.mark.xdist_group("service"))  # run in one worker
    if BENCH.exists():
        return
    skip = pytest.mark.skip(reason=f"needs the shared VNN-COMP instances at {BENCH}")
    for item in items:
        if _uses_benchmarks(item):
            item.add_marker(skip)

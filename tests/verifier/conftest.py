from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"


@pytest.fixture(scope="session")
def bench() -> Path:
    if not BENCH.exists():
        pytest.skip(f"benchmarks not found at {BENCH}")
    return BENCH


def bench_models() -> list[Path]:
    return sorted(BENCH.glob("*/**/*.onnx"))


def bench_instances() -> list[tuple[Path, Path]]:
    out = []
    for csv in sorted(BENCH.glob("*/instances.csv")):
        for line in csv.read_text().splitlines():
            if line.strip():
                onnx_rel, spec_rel, _ = line.split(",")
                out.append((csv.parent / onnx_rel, csv.parent / spec_rel))
    return out

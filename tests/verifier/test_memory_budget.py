"""The memory budget (verifier/bounds/limits.py): bound computations sized to exceed a small
budget finish inside it, with sound bounds; what cannot shrink ends as ``unknown`` naming
the budget.

Peak memory is the process's resident peak (``VmHWM``), so each measured computation runs
in a fresh interpreter of its own: the budget is the resident memory there before the
computation plus a few tens of MiB, and the same computation without a budget must go
well over it (else the test would prove nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from verifier import load_model
from verifier.bounds import limits
from verifier.bounds.limits import MemoryBudget, MemoryExceeded, parse_bytes
from verifier.property.core import Case, Conjunction, Property
from verifier.verify import Settings, verify

from .test_lipschitz import mlp

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    sys.path[:0] = [{root!r}, {tests!r}]
    torch.set_num_threads(1)
    from verifier import load_model
    from verifier.bounds import limits
    from verifier.bounds.crown import AlphaSettings, alpha_crown_rows, crown_rows
    from test_lipschitz import mlp

    method, width, batch, extra_mib = {method!r}, {width}, {batch}, {extra_mib}
    rng = np.random.default_rng(0)
    sizes = [64, width, width, width, 10]
    W = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes, sizes[1:])]
    b = [rng.standard_normal(o) * 0.1 for o in sizes[1:]]
    open({model!r}, "wb").write(mlp(W, b, "Relu"))
    graph = load_model({model!r}).graph
    x = torch.tensor(rng.uniform(-1, 1, (batch, 64)), dtype=torch.float32)
    C = torch.eye(10).expand(batch, 10, 10).clone()
    d = torch.zeros(batch, 10)
    limits.release_freed()
    base = limits.resident_bytes()
    budget = limits.MemoryBudget(base + extra_mib * 2**20) if extra_mib else None
    with limits.within(budget), torch.no_grad():
        crown = crown_rows(graph, x - 0.05, x + 0.05, C, d)
        if method == "alpha":
            rows = alpha_crown_rows(graph, x - 0.05, x + 0.05, C, d,
                                    AlphaSettings(early_stop=False, iterations=3,
                                                  refine_iterations=3))
        else:
            rows = crown
    # the resident peak of this process's own memory (VmHWM; ru_maxrss would carry the
    # parent's peak across fork and exec)
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    print(json.dumps({{"base": base, "peak": peak, "rows": rows.tolist(),
                      "crown": crown.tolist(),
                      "reached": budget.reached if budget else 0}}))
""")


def _probe(tmp_path: Path, method: str, width: int, batch: int, extra_mib: int) -> dict:
    code = PROBE.format(root=str(ROOT), tests=str(ROOT / "tests" / "verifier"),
                        method=method, width=width, batch=batch, extra_mib=extra_mib,
                        model=str(tmp_path / f"wide{width}.onnx"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_crown_of_a_wide_net_keeps_within_a_small_budget(tmp_path: Path) -> None:
    """CROWN's intermediate passes over 512-wide layers, 8 boxes: about 150 MiB in one pass
    of 1,024 rows; under a 50 MiB budget they take smaller row chunks, with the same bounds."""
    free = _probe(tmp_path, "crown", 512, 8, 0)
    assert free["peak"] - free["base"] > 100 * 2**20  # the budget below is really binding
    held = _probe(tmp_path, "crown", 512, 8, 50)
    assert held["peak"] <= held["base"] + 50 * 2**20
    assert held["reached"] == 0  # chunking alone kept it inside
    np.testing.assert_allclose(held["rows"], free["rows"], rtol=1e-6, atol=1e-6)


def test_alpha_crown_over_budget_keeps_its_best_sound_bound(tmp_path: Path) -> None:
    """alpha-CROWN's optimisation keeps every pass for the gradient (about 250 MiB here):
    under 60 MiB it meets the budget, drops to the final rows' slopes alone and returns a
    bound no looser than CROWN's, never more memory."""
    free = _probe(tmp_path, "alpha", 384, 4, 0)
    assert free["peak"] - free["base"] > 150 * 2**20
    held = _probe(tmp_path, "alpha", 384, 4, 60)
    # usage is read at most every READ_EVERY seconds, so one pass may start before a read
    # sees the line crossed: up to a chunk's share of the budget over it (seen once, 64 MiB,
    # with the suite's two workers running)
    assert held["peak"] <= held["base"] + int(60 * (1 + limits.CHUNK_SHARE)) * 2**20
    assert held["reached"] >= 1
    rows, crown = np.array(held["rows"]), np.array(held["crown"])
    assert (rows >= crown).all()
    assert (rows > crown + 1e-3).any()  # the final rows' slopes were still optimised


def _relu_problem(tmp_path: Path, seed: int = 3) -> tuple[object, Property]:
    rng = np.random.default_rng(seed)
    sizes = [2, 16, 16, 1]
    W = [rng.standard_normal((o, i)) for i, o in zip(sizes, sizes[1:], strict=False)]
    b = [rng.standard_normal(o) * 0.5 for o in sizes[1:]]
    path = tmp_path / "small.onnx"
    path.write_bytes(mlp(W, b, "Relu"))
    model = load_model(path)
    lo, hi = np.full(2, -1.0), np.full(2, 1.0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 201)] * 2), -1).reshape(-1, 2)
    ys = grid @ W[0].T + b[0]
    for Wk, bk in zip(W[1:], b[1:], strict=True):
        ys = np.maximum(ys, 0) @ Wk.T + bk
    threshold = float(ys.max()) + 0.05  # y > threshold is unsafe; true by sampling margin
    prop = Property(2, 1, (Case(lo, hi, (Conjunction(np.array([[-1.0]]),
                                                     np.array([-threshold])),)),))
    return model, prop


def test_a_budget_below_what_the_process_holds_is_unknown_naming_it(tmp_path: Path) -> None:
    model, prop = _relu_problem(tmp_path)
    result = verify(model, prop, Settings(timeout=20, memory_budget=1 << 20))
    assert result.verdict == "unknown"
    assert "memory budget of 1.0 MiB" in result.message


class _TripsFirst(MemoryBudget):
    """A budget that is over its line on the first ``n`` checks inside branch-and-bound's
    rounds (not its root) and never after: the recovery path, deterministically."""

    def __init__(self, n: int):
        super().__init__(limit=1 << 62)
        self.left = n

    def used(self) -> int:
        import inspect

        in_bab = any(f.function == "branch_inputs" or f.function == "bound_and_score"
                     and f.frame.f_locals.get("inherited") is not None
                     for f in inspect.stack()[1:12])  # a round, not the root
        if in_bab and self.left > 0:
            self.left -= 1
            return self.limit
        return 0


def test_branch_and_bound_halves_its_batch_when_the_budget_is_met(tmp_path: Path) -> None:
    from verifier.problems import make_batch
    from verifier.search.bab import BabSettings, run_bab

    model, prop = _relu_problem(tmp_path)
    root = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    free = run_bab(model, prop, root, BabSettings(), lambda: False)
    assert free.verdict == "verified"
    budget = _TripsFirst(3)
    with limits.within(budget):
        held = run_bab(model, prop, root, BabSettings(), lambda: False)
    assert budget.reached >= 1
    assert held.verdict == "verified"


def test_memory_exceeded_is_an_interruption_with_the_figures() -> None:
    budget = MemoryBudget(limit=1000)
    with pytest.raises(MemoryExceeded, match="memory budget of 1000 B reached"):
        with limits.within(budget):
            limits.check_memory()
    limits.check_memory()  # no budget in force: nothing is checked


@pytest.mark.parametrize("text,value", [("8G", 8 << 30), ("512MiB", 512 << 20), ("1.5g", 3 << 29),
                                        ("1000", 1000), ("64kb", 64 << 10)])
def test_sizes_parse(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "8X", "-1G", "0", "G8"])
def test_bad_sizes_are_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes(text)


def test_cli_refuses_a_bad_budget_with_one_line(tmp_path: Path) -> None:
    model, _ = _relu_problem(tmp_path)
    spec = tmp_path / "p.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                    "(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 -1))\n"
                    "(assert (<= X_1 1))\n(assert (>= X_1 -1))\n(assert (>= Y_0 1000))\n")
    out = subprocess.run([sys.executable, "-m", "verifier.cli", "verify",
                          str(tmp_path / "small.onnx"), str(spec), "--memory-budget", "lots"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert "--memory-budget" in out.stderr and "Traceback" not in out.stderr

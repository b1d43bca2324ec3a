"""Proofs of true properties (sampled with onnxruntime) are accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from checker import check
from tests.checker import proofgen as pg
from tests.checker.conftest import HI, LO, Instance, make_instance, true_threshold


def _holds(inst: Instance) -> None:
    report = check(str(inst.proof), str(inst.model), str(inst.spec))
    assert report.ok, report.reason
    assert report.reason is None and report.failing_leaf is None and report.cases == 1


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Tanh"])
def test_root_proof_is_accepted(tmp_path: Path, act: str) -> None:
    inst = make_instance(tmp_path, pg.random_net(1, [3, 8, 8, 2], act), LO, HI, frac=1.5)
    man, _ = pg.load_proof(inst.proof)
    assert man["cases"][0]["tree"] == {"leaf": 0}
    _holds(inst)


@pytest.mark.parametrize(("act", "frac"), [("Relu", 0.3), ("Sigmoid", 0.12), ("Tanh", 0.3)])
def test_proof_with_input_splits_is_accepted(tmp_path: Path, act: str, frac: float) -> None:
    net = pg.random_net(0, [3, 16, 16, 2], act, scale=2.0)
    inst = make_instance(tmp_path, net, LO, HI, frac=frac)
    man, _ = pg.load_proof(inst.proof)
    assert "split" in man["cases"][0]["tree"] and len(man["leaves"]) >= 2
    _holds(inst)


def _unstable_neuron(net: pg.Net) -> int:
    """A first-layer ReLU neuron whose input takes both signs on the box."""
    lo, hi = pg.leaf_bounds(net, LO, HI, []).intervals[0]
    return int(np.flatnonzero((lo < 0) & (hi > 0))[0])


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_relu_neuron_split_with_betas_is_accepted(tmp_path: Path, beta: float) -> None:
    net = pg.random_net(1, [3, 8, 8, 2], "Relu")
    j = _unstable_neuron(net)
    inst = make_instance(tmp_path, net, LO, HI, frac=1.5, neuron_split=(0, j), beta=beta)
    man, arrays = pg.load_proof(inst.proof)
    tree = man["cases"][0]["tree"]
    assert tree["split"] == {"activation": 0, "index": j, "at": 0.0}
    assert all(d["betas"] == [beta] for leaf in man["leaves"] for d in leaf["disjuncts"])
    assert np.all(arrays["L0/A0/hi"][j] <= 0) and np.all(arrays["L1/A0/lo"][j] >= 0)
    _holds(inst)


def test_huge_beta_is_charged(tmp_path: Path) -> None:
    """The beta terms enter the bound: a multiplier of 1e4 on an unfixed neuron ruins it."""
    net = pg.random_net(1, [3, 8, 8, 2], "Relu")
    inst = make_instance(tmp_path, net, LO, HI, frac=1.5, neuron_split=(0, _unstable_neuron(net)))
    man, arrays = pg.load_proof(inst.proof)
    for leaf in man["leaves"]:
        for d in leaf["disjuncts"]:
            d["betas"] = [1e4]
    bad = pg.save_proof(tmp_path / "bad.npz", man, arrays)
    report = check(str(bad), str(inst.model), str(inst.spec))
    assert not report.ok and "disjunct 0, row 0: bound" in str(report.reason)


def test_normalisation_and_flatten_are_read(tmp_path: Path) -> None:
    """Sub/Div input normalisation on a (1, 1, 2, 2) image input, flattened."""
    net = pg.random_net(2, [4, 8, 6, 2], "Relu", image=(1, 2, 2),
                        mean=np.array([0.1, -0.2, 0.3, 0.0]), std=np.array([0.5, 2.0, 1.5, 1.0]))
    lo, hi = np.array([0.0, 0.1, -0.3, 0.2]), np.array([0.3, 0.4, 0.0, 0.5])
    _holds(make_instance(tmp_path, net, lo, hi, frac=0.5))


def test_empty_leaves_hold_vacuously(tmp_path: Path) -> None:
    """An input split outside the box, and a neuron split beyond the neuron's range, leave an
    empty side: accepted, with a note; a claimed infeasible_at is accepted too."""
    net = pg.random_net(1, [3, 8, 8, 2], "Relu")
    inst = make_instance(tmp_path, net, LO, HI, frac=1.5)
    man, arrays = pg.load_proof(inst.proof)
    assert man["cases"][0]["tree"] == {"leaf": 0}
    man["cases"][0]["tree"] = {"split": {"input": 0, "at": 5.0}, "children": [
        {"split": {"activation": 1, "index": 2, "at": 1e3},
         "children": [{"leaf": 0}, {"leaf": 1}]},
        {"leaf": 2}]}
    for d in man["leaves"][0]["disjuncts"]:
        d["betas"] = [0.0]
    man["leaves"] += [{"infeasible_at": 1, "disjuncts": []},
                      {"infeasible_at": None, "disjuncts": []}]
    arrays |= {k.replace("L0/", "L1/"): v for k, v in arrays.items() if k.startswith("L0/A0")}
    tampered = pg.save_proof(tmp_path / "empty.npz", man, arrays)
    report = check(str(tampered), str(inst.model), str(inst.spec))
    assert report.ok, report.reason
    assert any("leaf 1 is empty: activation 1" in n for n in report.notes)
    assert any("leaf 2 is empty: its input box" in n for n in report.notes)


def test_several_disjuncts_and_cases(tmp_path: Path) -> None:
    net = pg.random_net(3, [2, 8, 3], "Tanh")
    model = pg.save_onnx(net, tmp_path / "m.onnx")
    lo, hi = np.array([0.0, 0.0]), np.array([0.5, 0.5])
    t0, t1 = (true_threshold(model, lo, hi, 0.3, row) for row in (0, 1))
    box = " ".join(f"(>= X_{i} {float(a)!r}) (<= X_{i} {float(b)!r})"
                   for i, (a, b) in enumerate(zip(lo, hi, strict=True)))
    box2 = box.replace("(>= X_0 0.0)", "(>= X_0 -0.25)").replace("(<= X_0 0.5)", "(<= X_0 0.0)")
    lo2 = np.array([-0.25, 0.0])
    t2 = true_threshold(model, lo2, np.array([0.0, 0.5]), 0.3)
    text = "\n".join([f"(declare-const X_{i} Real)" for i in range(2)]
                     + [f"(declare-const Y_{j} Real)" for j in range(3)]
                     + [f"(assert (or (and {box} (<= Y_0 {t0!r})) (and {box} (<= Y_1 {t1!r}) "
                        f"(<= Y_2 1e3)) (and {box2} (<= Y_0 {t2!r}))))"])
    spec = tmp_path / "p.vnnlib"
    spec.write_text(text + "\n")
    proof = pg.prove(net, model, spec, tmp_path / "p.npz")
    report = check(str(proof), str(model), str(spec))
    assert report.ok, report.reason
    assert report.cases == 2

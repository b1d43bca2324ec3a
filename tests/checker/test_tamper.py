"""Tampered proofs, models and properties are rejected, each with its reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from checker import Unusable, check
from tests.checker import proofgen as pg
from tests.checker.conftest import HI, LO, Instance, make_instance


def _rejected(inst: Instance, man: dict[str, Any], arrays: dict[str, np.ndarray],
              model: Path | None = None, spec: Path | None = None) -> str:
    path = pg.save_proof(inst.proof.parent / "tampered.npz", man, arrays)
    report = check(str(path), str(model or inst.model), str(spec or inst.spec))
    assert not report.ok
    return str(report.reason)


def test_untampered_proof_holds(relu_split: Instance) -> None:
    assert check(str(relu_split.proof), str(relu_split.model), str(relu_split.spec)).ok


def test_narrowed_interval(relu_split: Instance) -> None:
    man, arrays = pg.load_proof(relu_split.proof)
    lo = arrays["L1/A1/lo"].copy()
    lo[2] = (lo[2] + arrays["L1/A1/hi"][2]) / 2
    arrays["L1/A1/lo"] = lo
    reason = _rejected(relu_split, man, arrays)
    assert reason.startswith("leaf 1, activation 1 (z1), entry 2: claimed interval")
    assert "does not contain the computed" in reason


@pytest.mark.parametrize("sign", ["inactive", "active"])
def test_false_stability_claim(relu_split: Instance, sign: str) -> None:
    """A ReLU entry that takes both signs claimed stable, with the stable lines (0, or the
    identity): the side that shows the sign is still bounded and checked, even though the
    checker skips the other side of entries claimed stable."""
    man, arrays = pg.load_proof(relu_split.proof)
    k, j = next((k, j) for k in range(len(man["leaves"])) for j in range(16)
                if f"L{k}/A1/lo" in arrays and arrays[f"L{k}/A1/lo"][j] < -0.01
                and arrays[f"L{k}/A1/hi"][j] > 0.01)
    lo, hi, box = (arrays[f"L{k}/A1/{m}"].copy() for m in ("lo", "hi", "box"))
    if sign == "inactive":
        hi[j], box[:, j] = -1e-3, 0.0
    else:
        lo[j], box[:, j] = 1e-3, [1.0, 0.0, 1.0, 0.0]
    arrays[f"L{k}/A1/lo"], arrays[f"L{k}/A1/hi"], arrays[f"L{k}/A1/box"] = lo, hi, box
    for name in [m for m in arrays if m.startswith(f"L{k}/D") and m.endswith("/A1")]:
        arrays[name] = box  # the disjuncts' own lines, if any, the same stable ones
    reason = _rejected(relu_split, man, arrays)
    assert reason.startswith(f"leaf {k}, activation 1 (z1), entry {j}: claimed interval")
    assert "does not contain the computed" in reason


@pytest.mark.parametrize("row", [1, 3])
def test_moved_relu_line(relu_split: Instance, row: int) -> None:
    """b_l or b_u of one neuron moved by 0.01 the wrong way."""
    man, arrays = pg.load_proof(relu_split.proof)
    box = arrays["L0/A0/box"].copy()
    box[row, 4] += 0.01 if row == 1 else -0.01
    arrays["L0/A0/box"] = box
    side = "lower line" if row == 1 else "upper line"
    reason = _rejected(relu_split, man, arrays)
    assert reason.startswith(f"leaf 0, activation 0 (z0), entry 4: {side}")
    assert ("is above relu" if row == 1 else "is below relu") in reason


def test_moved_sigmoid_tangent(tmp_path: Path) -> None:
    """A tangent lower line (sigmoid convex below 0) touches; moved up by 1e-6 it crosses."""
    net = pg.random_net(4, [3, 6, 2], "Sigmoid")
    net.biases[0][0] = -3.0
    inst = make_instance(tmp_path, net, LO, HI, frac=0.5, tangent=True)
    assert check(str(inst.proof), str(inst.model), str(inst.spec)).ok
    man, arrays = pg.load_proof(inst.proof)
    assert arrays["L0/A0/hi"][0] < 0
    box = arrays["L0/A0/box"].copy()
    m = (arrays["L0/A0/lo"][0] + arrays["L0/A0/hi"][0]) / 2
    assert np.isclose(box[0, 0] * m + box[1, 0], 1 / (1 + np.exp(-m)), rtol=0, atol=1e-15)
    box[1, 0] += 1e-6
    arrays["L0/A0/box"] = box
    reason = _rejected(inst, man, arrays)
    assert reason.startswith("leaf 0, activation 0 (z0), entry 0: lower line")
    assert "is above sigmoid near x = " in reason
    x = float(reason.split("near x = ")[1].split()[0])
    assert abs(x - m) < 1e-2


def test_dropped_leaf_unused(relu_split: Instance) -> None:
    man, arrays = pg.load_proof(relu_split.proof)
    tree = man["cases"][0]["tree"]
    man["cases"][0]["tree"] = tree["children"][0]
    assert "are in no tree" in _rejected(relu_split, man, arrays)


def test_dropped_leaf_renumbered(tmp_path: Path) -> None:
    """A split whose children are leaves 0 and 1 replaced by leaf 0, leaf 1 deleted: leaf
    0's claims, made for half the box, fail on the whole box."""
    net = pg.random_net(0, [3, 16, 16, 2], "Relu", scale=2.0)
    inst = make_instance(tmp_path, net, LO, HI, frac=1.0)
    man, arrays = pg.load_proof(inst.proof)
    assert man["cases"][0]["tree"]["children"] == [{"leaf": 0}, {"leaf": 1}]
    man["cases"][0]["tree"] = {"leaf": 0}
    man["leaves"] = man["leaves"][:1]
    reason = _rejected(inst, man, arrays)
    assert reason.startswith("leaf 0, ")
    assert "does not contain the computed" in reason or "bound" in reason


def _rescaled_model(inst: Instance, path: Path) -> Path:
    model = onnx.load(str(inst.model))
    for init in model.graph.initializer:
        if init.name == "W1":
            W = numpy_helper.to_array(init).copy()
            W[2, 3] *= 1.5
            init.CopyFrom(numpy_helper.from_array(W, "W1"))
    onnx.save(model, str(path))
    return path


def test_changed_weight(relu_split: Instance) -> None:
    man, arrays = pg.load_proof(relu_split.proof)
    other = _rescaled_model(relu_split, relu_split.proof.parent / "other.onnx")
    assert "the proof is for another model" in _rejected(relu_split, man, arrays, model=other)
    man["model_sha256"] = pg.sha256(other)
    reason = _rejected(relu_split, man, arrays, model=other)
    assert "does not contain the computed" in reason or ": bound" in reason


def test_stricter_property(relu_split: Instance) -> None:
    """``Y_0 <= t'`` with t' above the sampled minimum: false, and the bound says so."""
    man, arrays = pg.load_proof(relu_split.proof)
    X = np.random.default_rng(3).uniform(LO, HI, size=(2000, 3))
    t = float(pg.run_onnx(relu_split.model, X)[:, 0].min()) + 0.01
    stricter = pg.write_vnnlib(relu_split.proof.parent / "stricter.vnnlib", LO, HI, 2,
                               [[f"(<= Y_0 {t!r})"]])
    assert "another property" in _rejected(relu_split, man, arrays, spec=stricter)
    man["property_sha256"] = pg.sha256(stricter)
    reason = _rejected(relu_split, man, arrays, spec=stricter)
    assert "disjunct 0, row 0: bound -" in reason and "<= 0" in reason


def test_negative_beta(tmp_path: Path) -> None:
    net = pg.random_net(1, [3, 8, 8, 2], "Relu")
    inst = make_instance(tmp_path, net, LO, HI, frac=1.5, neuron_split=(0, 0), beta=0.0)
    man, arrays = pg.load_proof(inst.proof)
    dj = next(leaf["disjuncts"][0] for leaf in man["leaves"] if leaf["disjuncts"])
    dj["betas"] = [-0.5]
    assert "betas must be finite and >= 0" in _rejected(inst, man, arrays)
    dj["betas"] = [float("nan")]
    assert "betas must be finite and >= 0" in _rejected(inst, man, arrays)
    dj["betas"] = []
    assert "0 betas for 1 neuron splits" in _rejected(inst, man, arrays)


def test_leaf_used_twice(relu_split: Instance) -> None:
    man, arrays = pg.load_proof(relu_split.proof)
    man["cases"][0]["tree"] = {"split": {"input": 0, "at": 0.0},
                               "children": [{"leaf": 0}, {"leaf": 0}]}
    assert "leaf 0 is used more than once" in _rejected(relu_split, man, arrays)


def test_nan_in_line(relu_split: Instance) -> None:
    man, arrays = pg.load_proof(relu_split.proof)
    box = arrays["L2/A1/box"].copy()
    box[2, 1] = np.nan
    arrays["L2/A1/box"] = box
    reason = _rejected(relu_split, man, arrays)
    assert reason.startswith("leaf 2, activation 1 (z1), entry 1: upper line nan")
    assert "not finite" in reason


def test_array_without_value_and_false_emptiness(relu_split: Instance) -> None:
    """A needed row of NaN, a missing member, a member of the wrong shape or type."""
    man, arrays = pg.load_proof(relu_split.proof)
    broken = {k: v for k, v in arrays.items() if k != "L1/A0/box"}  # its row is NaN
    assert _rejected(relu_split, man, broken) == "leaf 1: array A0/box has no value for it"
    _, members = pg.load_members(relu_split.proof)
    path = relu_split.proof.parent / "members.npz"
    n = len(man["leaves"])
    changes: list[tuple[dict[str, np.ndarray | None], str]] = [
            ({"A1/hi": None}, "leaf 0: array A1/hi is missing"),
            ({"A1/hi": members["A1/hi"][:-1]},
             f"leaf 0: array A1/hi has shape ({n - 1}, 16) and type float64, not ({n}, 16) "
             f"float64"),
            ({"A0/box": members["A0/box"].astype(np.int64)},
             f"leaf 0: array A0/box has shape ({n}, 4, 16) and type int64, not ({n}, 4, 16) "
             f"float64")]
    for change, reason in changes:
        changed = {k: v for k, v in (members | change).items() if v is not None}
        report = check(str(pg.save_members(path, man, changed)), str(relu_split.model),
                       str(relu_split.spec))
        assert not report.ok and report.reason == reason
    man["leaves"][1]["infeasible_at"] = 0
    assert "leaf 1 claims to be empty at activation 0" in _rejected(relu_split, man, arrays)


def test_smaller_unit_roundoff(relu_split: Instance) -> None:
    man, arrays = pg.load_proof(relu_split.proof)
    man["unit_roundoff"] = 2.0**-53
    assert "unit roundoff" in _rejected(relu_split, man, arrays)


def test_activation_list_must_match(relu_split: Instance) -> None:
    man, arrays = pg.load_proof(relu_split.proof)
    swapped = copy.deepcopy(man)
    swapped["activations"].reverse()
    assert "not in a topological order" in _rejected(relu_split, swapped, arrays)
    man["activations"][0]["op"] = "Sigmoid"
    assert "is not an activation node of the model" in _rejected(relu_split, man, arrays)
    man["activations"] = man["activations"][:1]
    assert "the manifest lists 1 activations, the model has 2" in _rejected(
        relu_split, man, arrays)


def test_unsupported_op_is_refused_by_name(tmp_path: Path) -> None:
    net = pg.random_net(1, [3, 8, 2], "Relu")
    model = pg.save_onnx(net, tmp_path / "softmax.onnx", extra_node="Softmax")
    spec = pg.write_vnnlib(tmp_path / "p.vnnlib", LO, HI, 2, [["(<= Y_0 -1.0)"]])
    man = {"format": "nnverify-proof/1", "model_sha256": pg.sha256(model),
           "property_sha256": pg.sha256(spec), "unit_roundoff": 2.0**-24, "activations": [],
           "cases": [{"tree": {"leaf": 0}}], "leaves": []}
    proof = pg.save_proof(tmp_path / "p.npz", man, {})
    with pytest.raises(Unusable, match="op Softmax at node extra is not in the checker's "
                                       "trusted set"):
        check(str(proof), str(model), str(spec))


def test_not_a_proof(relu_split: Instance) -> None:
    with pytest.raises(Unusable, match="is not a proof file"):
        check(str(relu_split.spec), str(relu_split.model), str(relu_split.spec))
    man, arrays = pg.load_proof(relu_split.proof)
    man["format"] = "nnverify-proof/2"
    path = pg.save_proof(relu_split.proof.parent / "v2.npz", man, arrays)
    with pytest.raises(Unusable, match="its format is not 'nnverify-proof/1'"):
        check(str(path), str(relu_split.model), str(relu_split.spec))

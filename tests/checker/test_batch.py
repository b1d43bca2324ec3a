"""Leaves are checked in batches: a proof of a few hundred leaves is accepted, and the
verdict (the lowest failing leaf, its first failure, the notes) is the same whatever the
batch size, one leaf at a time included."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from checker import check
from tests.checker import proofgen as pg
from tests.checker.conftest import HI, LO, Instance, make_instance

check_module = importlib.import_module("checker.check")  # (checker.check is the function)
Verdict = tuple[bool, str | None, int | None, tuple[str, ...]]


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    """A ReLU net's proof with 2**8 leaves (every path splits the inputs 8 times)."""
    net = pg.random_net(0, [3, 16, 16, 2], "Relu", scale=2.0)
    return make_instance(tmp_path_factory.mktemp("many"), net, LO, HI, frac=0.3, min_depth=8)


def _reasons(inst: Instance, proof: Path, monkeypatch: pytest.MonkeyPatch,
             sizes: tuple[int, ...] = (256, 16, 1)) -> set[Verdict]:
    """The verdicts under each batch size."""
    out = set()
    for size in sizes:
        monkeypatch.setattr(check_module, "BATCH_LEAVES", size)
        report = check(str(proof), str(inst.model), str(inst.spec))
        out.add((report.ok, report.reason, report.failing_leaf, tuple(report.notes)))
    return out


def test_many_leaves_are_accepted(many: Instance, monkeypatch: pytest.MonkeyPatch) -> None:
    man, _ = pg.load_proof(many.proof)
    assert len(man["leaves"]) == 256
    assert _reasons(many, many.proof, monkeypatch, (256, 16)) == {(True, None, None, ())}


def test_the_lowest_failing_leaf_is_reported_with_its_first_failure(
        many: Instance, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaf 150 fails at activation 1, leaves 151 and 200 earlier (activation 0) and leaf
    170 at its final bound: leaf 150's failure is reported, at any batch size."""
    man, arrays = pg.load_proof(many.proof)
    for name, entry in (("L150/A1/box", 3), ("L151/A0/box", 2), ("L200/A0/box", 5)):
        box = arrays[name].copy()
        box[1, entry] += 0.01  # b_l raised: the lower line is above relu somewhere
        arrays[name] = box
    man["leaves"][170]["disjuncts"][0]["betas"] = []
    bad = pg.save_proof(many.proof.parent / "bad.npz", man, arrays)
    (verdict,) = _reasons(many, bad, monkeypatch)
    ok, reason, leaf, _ = verdict
    assert not ok and leaf == 150 and reason is not None
    assert reason.startswith("leaf 150, activation 1 (z1), entry 3: lower line")


def test_notes_stop_at_the_failing_leaf(many: Instance, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """Leaves 10 and 100 moved to the empty side of a split beyond the box (noted empty),
    leaf 50 failing: only leaf 10's note is kept, at any batch size."""
    man, arrays = pg.load_proof(many.proof)
    tree = man["cases"][0]["tree"]
    for k in (10, 100):  # wrap leaf k in a split at 5.0 whose high side, leaf k, is empty
        _replace(tree, k, {"split": {"input": 0, "at": 5.0},
                           "children": [{"leaf": len(man["leaves"])}, {"leaf": k}]})
        man["leaves"].append(man["leaves"][k])
        arrays |= {n.replace(f"L{k}/", f"L{len(man['leaves']) - 1}/"): v
                   for n, v in list(arrays.items()) if n.startswith(f"L{k}/")}
    arrays["L50/A0/lo"] = arrays["L50/A0/hi"]
    bad = pg.save_proof(many.proof.parent / "notes.npz", man, arrays)
    (verdict,) = _reasons(many, bad, monkeypatch)
    ok, reason, leaf, notes = verdict
    assert not ok and leaf == 50 and "claimed interval" in str(reason)
    assert notes == ("leaf 10 is empty: its input box is empty",)


def _replace(node: dict[str, Any], k: int, new: dict[str, Any]) -> bool:
    """Replace ``{"leaf": k}`` in the tree by ``new``."""
    for i, child in enumerate(node.get("children", [])):
        if child == {"leaf": k}:
            node["children"][i] = new
            return True
        if _replace(child, k, new):
            return True
    return False


def test_nan_where_a_value_is_needed(many: Instance) -> None:
    """A row of NaN in a leaf that needs it is rejected, naming the leaf and the array;
    NaN in rows no leaf needs (a disjunct's own lines it does not use) is not."""
    man, members = pg.load_members(many.proof)
    members["D0/A1"] = np.full((256, 4, 16), np.nan)
    assert check(str(pg.save_members(many.proof.parent / "d.npz", man, members)),
                 str(many.model), str(many.spec)).ok
    members["A1/lo"] = members["A1/lo"].copy()
    members["A1/lo"][77] = np.nan
    report = check(str(pg.save_members(many.proof.parent / "nan.npz", man, members)),
                   str(many.model), str(many.spec))
    assert not report.ok and report.failing_leaf == 77
    assert report.reason == "leaf 77: array A1/lo has no value for it"

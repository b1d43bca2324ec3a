"""Shared builders: tiny networks, true properties (confirmed by sampling with onnxruntime)
and their proofs, written by the test-only generator ``proofgen``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.checker import proofgen as pg


@dataclass
class Instance:
    net: pg.Net
    model: Path
    spec: Path
    proof: Path
    threshold: float


def true_threshold(model: Path, lo: np.ndarray, hi: np.ndarray, frac: float,
                   row: int = 0) -> float:
    """A threshold t below every sampled ``Y_row`` (so ``Y_row <= t`` is unsafe and, by
    dense sampling, unreachable): the sampled minimum less ``frac`` of the sampled range."""
    rng = np.random.default_rng(7)
    X = np.vstack([rng.uniform(lo, hi, size=(20000, len(lo))), lo, hi])
    Y = pg.run_onnx(model, X)[:, row]
    t = float(Y.min() - frac * np.ptp(Y))
    assert np.all(Y > t)
    return t


def make_instance(tmp: Path, net: pg.Net, lo: np.ndarray, hi: np.ndarray, frac: float = 0.1,
                  **prove_kw: object) -> Instance:
    model = pg.save_onnx(net, tmp / "model.onnx")
    t = true_threshold(model, lo, hi, frac)
    spec = pg.write_vnnlib(tmp / "prop.vnnlib", lo, hi, net.weights[-1].shape[0],
                           [[f"(<= Y_0 {t!r})"]])
    proof = pg.prove(net, model, spec, tmp / "proof.npz", **prove_kw)  # type: ignore[arg-type]
    return Instance(net, model, spec, proof, t)


LO, HI = np.array([-0.5, 0.0, 0.2]), np.array([0.1, 0.6, 0.8])


@pytest.fixture
def relu_split(tmp_path: Path) -> Instance:
    """A ReLU net whose proof needs input splits."""
    return make_instance(tmp_path, pg.random_net(0, [3, 16, 16, 2], "Relu", scale=2.0), LO, HI)

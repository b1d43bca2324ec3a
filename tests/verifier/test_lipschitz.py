"""Local Lipschitz bounds bracket the true constant; monotonicity proofs are sound.

The true constant of small networks is found independently: by enumerating the linear pieces
of 1-D ReLU networks exactly, and by dense gridding of autograd gradients otherwise.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import load_model, parse_vnnlib_file
from verifier.lipschitz import (
    LipschitzSettings,
    add_lipschitz_command,
    local_lipschitz,
    monotonicity,
)
from verifier.lipschitz.sampling import full_jacobian
from verifier.ops.nonlinear import Gelu, LeakyRelu, Relu, Sigmoid, Tanh
from verifier.ops.relax import relax

FAST = LipschitzSettings(samples=64, attack_steps=20)


# -- tiny networks -----------------------------------------------------------------------
def mlp(weights: list[np.ndarray], biases: list[np.ndarray], act: str) -> bytes:
    """ONNX bytes of x -> W1 x + b1 -> act -> ... -> W_L x + b_L (weights (out, in))."""
    nodes, inits, prev = [], [], "X"
    for k, (W, b) in enumerate(zip(weights, biases, strict=True)):
        inits += [numpy_helper.from_array(W.astype(np.float32), f"W{k}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{k}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"b{k}"], [f"z{k}"], transB=1))
        prev = f"z{k}"
        if k < len(weights) - 1:
            nodes.append(helper.make_node(act, [prev], [f"h{k}"]))
            prev = f"h{k}"
    n_in = weights[0].shape[1]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("X", TensorProto.FLOAT, (1, n_in))],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model.SerializeToString()


def random_net(seed: int, sizes: list[int], act: str, positive: bool = False):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((o, i)) for i, o in zip(sizes, sizes[1:], strict=False)]
    biases = [rng.standard_normal(o) * 0.5 for o in sizes[1:]]
    if positive:
        weights = [np.abs(w) for w in weights]
    weights = [w.astype(np.float32).astype(np.float64) for w in weights]
    biases = [b.astype(np.float32).astype(np.float64) for b in biases]
    return load_model(mlp(weights, biases, act)), weights, biases


def relu_1d_exact(weights, biases, lo: float, hi: float, norm_rows: np.ndarray) -> float:
    """max over the box of max_i |(C J)_i| for a 1-D ReLU net, by enumerating its pieces:
    within a piece every pre-activation is linear in x, so each crossing is solved exactly."""
    points = {lo, hi}
    segments = [(lo, hi)]
    for k in range(len(weights) - 1):
        new_segments = []
        for a, b in segments:
            za, zb = _pre(weights, biases, a, k), _pre(weights, biases, b, k)
            cuts = sorted(a + za[j] / (za[j] - zb[j]) * (b - a)
                          for j in range(len(za)) if za[j] * zb[j] < 0)
            ends = [a, *cuts, b]
            new_segments += list(zip(ends, ends[1:], strict=False))
            points.update(cuts)
        segments = new_segments
    best = 0.0
    for a, b in segments:
        g = _grad_1d(weights, biases, (a + b) / 2)
        best = max(best, float(np.abs(norm_rows @ g).max()))
    return best


def _pre(weights, biases, x: float, k: int) -> np.ndarray:
    h = np.array([x])
    for j in range(k + 1):
        z = weights[j] @ h + biases[j]
        h = np.maximum(z, 0)
    return z


def _grad_1d(weights, biases, x: float) -> np.ndarray:
    h, J = np.array([x]), np.eye(1)
    for j, (W, b) in enumerate(zip(weights, biases, strict=True)):
        z = W @ h + b
        J = W @ J
        if j < len(weights) - 1:
            J = (z > 0)[:, None] * J
            h = np.maximum(z, 0)
    return J[:, 0]


def grid_constant(model, lo: np.ndarray, hi: np.ndarray, norm: str = "inf",
                  C: np.ndarray | None = None, per_dim: int = 0) -> float:
    """Largest gradient row norm on a dense grid of the box (1-D or 2-D)."""
    n = lo.size
    per_dim = per_dim or (20001 if n == 1 else 301)
    axes = [np.linspace(lo[i], hi[i], per_dim) for i in range(n)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, n)
    Ct = torch.eye(model.n_outputs, dtype=torch.float64) if C is None else torch.tensor(C)
    J = full_jacobian(model.graph, Ct, torch.tensor(pts))
    norms = J.abs().sum(-1) if norm == "inf" else J.norm(dim=-1)
    return float(norms.max())


# -- the bracket -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0])
def test_relu_1d_bracket_contains_the_enumerated_constant(seed, eps):
    model, weights, biases = random_net(seed, [1, 6, 5, 2], "Relu")
    centre = np.random.default_rng(seed + 10).standard_normal(1)
    r = local_lipschitz(model, centre - eps, centre + eps, settings=FAST)
    exact = relu_1d_exact(weights, biases, centre[0] - eps, centre[0] + eps, np.eye(2))
    assert r.lower <= exact + 1e-9
    assert exact <= r.upper + 1e-9
    assert r.upper <= r.naive + 1e-9
    assert r.lower >= exact * 0.5  # sampling finds a large part of it in 1-D


@pytest.mark.parametrize("act", ["Sigmoid", "Tanh", "Gelu", "Relu", "LeakyRelu"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_in,eps", [(1, 0.3), (2, 0.7)])
def test_bracket_contains_the_gridded_constant(act, seed, n_in, eps):
    model, _, _ = random_net(seed, [n_in, 5, 4, 2], act)
    centre = np.random.default_rng(seed + 20).standard_normal(n_in)
    lo, hi = centre - eps, centre + eps
    r = local_lipschitz(model, lo, hi, settings=FAST)
    grid = grid_constant(model, lo, hi)
    assert grid <= r.upper + 1e-9, (grid, r.upper)
    assert r.lower <= grid * (1 + 1e-3) + 1e-9  # the grid may miss the top by a hair
    assert r.lower <= r.upper and r.upper <= r.naive + 1e-9
    x = np.array(r.argmax_input)
    assert np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12)


@pytest.mark.parametrize("act", ["Tanh", "Relu"])
def test_two_norm_and_a_spec_matrix(act):
    model, _, _ = random_net(5, [2, 6, 3], act)
    C = np.array([[1.0, -1.0, 0.0], [0.5, 0.0, 2.0]])
    lo, hi = np.array([-0.4, 0.1]), np.array([0.3, 0.6])
    for norm in ("inf", "2"):
        r = local_lipschitz(model, lo, hi, C, LipschitzSettings(norm=norm, samples=64,
                                                                attack_steps=10))
        grid = grid_constant(model, lo, hi, norm, C)
        assert r.lower <= grid * (1 + 1e-3) + 1e-9 and grid <= r.upper + 1e-9
        assert r.upper <= r.naive + 1e-9
        assert json.loads(json.dumps(r.to_dict()))["norm"] == norm


def test_bound_propagation_beats_interval_products():
    model, _, _ = random_net(7, [2, 16, 16, 16, 3], "Sigmoid")
    r = local_lipschitz(model, np.array([-0.5, 0.0]), np.array([0.5, 1.0]), settings=FAST)
    assert r.upper <= r.details["interval_upper"] + 1e-9
    assert r.upper < r.naive


def test_splitting_never_loosens_and_tightens_a_wide_box():
    model, weights, biases = random_net(3, [1, 8, 8, 2], "Relu")
    lo, hi = np.array([-3.0]), np.array([3.0])
    plain = local_lipschitz(model, lo, hi, settings=FAST)
    split = local_lipschitz(model, lo, hi, settings=LipschitzSettings(
        samples=64, attack_steps=20, bab_seconds=1.0))
    exact = relu_1d_exact(weights, biases, -3.0, 3.0, np.eye(2))
    assert exact <= split.upper + 1e-9
    assert split.upper <= plain.upper + 1e-12
    assert split.upper < plain.upper * 0.99
    assert split.details["bab_leaves"] > 1


def test_zero_width_box_gives_the_gradient_norm():
    model, _, _ = random_net(4, [2, 5, 2], "Tanh")
    x = np.array([0.3, -0.2])
    r = local_lipschitz(model, x, x, settings=FAST)
    assert r.upper == pytest.approx(r.lower, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("link", [True, False])
def test_free_and_linked_derivatives_both_bracket(link):
    model, weights, biases = random_net(11, [1, 7, 6, 2], "Relu")
    settings = LipschitzSettings(samples=64, attack_steps=20, link_derivatives=link)
    r = local_lipschitz(model, np.array([-1.0]), np.array([1.5]), settings=settings)
    exact = relu_1d_exact(weights, biases, -1.0, 1.5, np.eye(2))
    assert r.lower <= exact + 1e-9 <= r.upper + 2e-9


def _activation(cls, **attrs):
    attrs = {"_op_type": cls.onnx_types[0], **attrs}
    return cls(attrs, [], (1, 600))


@pytest.mark.parametrize("op", [_activation(Relu), _activation(LeakyRelu, alpha=0.2),
                                _activation(LeakyRelu, alpha=3.0), _activation(Sigmoid),
                                _activation(Tanh), _activation(Gelu)],
                         ids=["relu", "leaky", "leaky_steep", "sigmoid", "tanh", "gelu"])
def test_derivative_ops_bound_the_true_derivative(op):
    """Interval bounds and relaxation lines of sigma' hold at dense samples of random
    intervals (the step's lines at its jump too)."""
    deriv = op.derivative((1, 600))
    rng = np.random.default_rng(0)
    centre = torch.tensor(rng.standard_normal((1, 600)) * 3)
    radius = torch.tensor(rng.uniform(0, 4, (1, 600)))
    lo, hi = centre - radius, centre + radius
    lines = deriv.step_lines(lo, hi) if hasattr(deriv, "step_lines") else relax(
        deriv.scalar_shape(), lo, hi)
    i_lo, i_hi = deriv.ibp((lo, hi))
    for t in np.linspace(0, 1, 101):
        z = lo + t * (hi - lo)
        d = op.df(z)
        assert bool((d >= i_lo - 1e-9).all() and (d <= i_hi + 1e-9).all())
        assert bool((lines.a_l * z + lines.b_l <= d + 1e-9).all())
        assert bool((lines.a_u * z + lines.b_u >= d - 1e-9).all())
    zero = torch.zeros(1, 600, dtype=torch.float64)  # both sides of a jump at 0
    for d in (op.df(zero - 1e-12), op.df(zero + 1e-12)):
        inside = (lo <= 0) & (hi >= 0)
        assert bool((lines.b_l <= d + 1e-9)[inside].all() and (lines.b_u >= d - 1e-9)[inside].all())


def conv_residual_net(seed: int, act: str) -> bytes:
    """(x - m) / s -> Conv -> BatchNorm -> act -> Conv (+ skip) -> act -> Flatten -> MatMul."""
    rng = np.random.default_rng(seed)

    def const(name: str, arr: np.ndarray):
        return numpy_helper.from_array(arr.astype(np.float32), name)

    inits = [const("m", rng.standard_normal((1, 1, 3, 3)) * 0.1), const("s", np.full(1, 0.5)),
             const("k1", rng.standard_normal((2, 1, 2, 2))), const("c1", rng.standard_normal(2)),
             const("g", rng.uniform(0.5, 1.5, 2)), const("be", rng.standard_normal(2)),
             const("mu", rng.standard_normal(2)), const("var", rng.uniform(0.5, 2, 2)),
             const("k2", rng.standard_normal((2, 2, 1, 1))),
             const("w", rng.standard_normal((8, 3)))]
    H = helper.make_node
    nodes = [H("Sub", ["X", "m"], ["a"]), H("Div", ["a", "s"], ["b"]),
             H("Conv", ["b", "k1", "c1"], ["c"]),
             H("BatchNormalization", ["c", "g", "be", "mu", "var"], ["d"]),
             H(act, ["d"], ["e"]), H("Conv", ["e", "k2"], ["f"]), H("Add", ["f", "e"], ["h"]),
             H(act, ["h"], ["i"]), H("Flatten", ["i"], ["j"]), H("MatMul", ["j", "w"], ["Y"])]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, (1, 1, 3, 3))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


@pytest.mark.parametrize("act", ["Relu", "Tanh"])
def test_conv_batchnorm_residual_net_is_bracketed(act):
    model = load_model(conv_residual_net(2, act))
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(9) * 0.5
    lo, hi = centre - 0.2, centre + 0.2
    r = local_lipschitz(model, lo, hi, settings=FAST)
    pts = torch.tensor(rng.uniform(lo, hi, (4000, 9)))
    J = full_jacobian(model.graph, torch.eye(3, dtype=torch.float64), pts)
    sampled = float(J.abs().sum(-1).max())
    assert r.lower <= r.upper and sampled <= r.upper + 1e-9 and r.upper <= r.naive + 1e-9


# -- monotonicity ------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["Sigmoid", "Tanh", "Relu"])
def test_a_network_built_monotone_is_proved_monotone(act):
    model, _, _ = random_net(8, [2, 5, 4, 2], act, positive=True)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    for out in range(2):
        for i in range(2):
            m = monotonicity(model, lo, hi, out, i)
            assert m["proved"], m
            assert m["min_partial"] >= 0 and m["sampled_min"] >= m["min_partial"]


def test_absolute_value_is_not_proved_monotone():
    W1, b1 = np.array([[1.0], [-1.0]]), np.zeros(2)
    W2, b2 = np.array([[1.0, 1.0]]), np.zeros(1)
    model = load_model(mlp([W1, W2], [b1, b2], "Relu"))
    m = monotonicity(model, np.array([-1.0]), np.array([1.0]), 0, 0)
    assert not m["proved"]
    assert m["sampled_min"] < 0 and m["witness"] is not None
    assert m["min_partial"] <= m["sampled_min"]


def test_monotonicity_bound_holds_at_samples():
    model, _, _ = random_net(9, [2, 6, 6, 2], "Gelu")
    lo, hi = np.array([-1.0, 0.0]), np.array([0.5, 2.0])
    m = monotonicity(model, lo, hi, 1, 0)
    pts = torch.tensor(np.random.default_rng(0).uniform(lo, hi, (2000, 2)))
    partial = full_jacobian(model.graph, torch.eye(2, dtype=torch.float64), pts)[:, 1, 0]
    assert float(partial.min()) >= m["min_partial"] - 1e-9
    assert float(partial.max()) <= m["max_partial"] + 1e-9


# -- errors and the command line ---------------------------------------------------------
def _one_node_model(op: str, **attrs) -> bytes:
    node = helper.make_node(op, ["X", "X"] if op == "Mul" else ["X"], ["Y"], **attrs)
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, (1, 3))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


@pytest.mark.parametrize("op", ["Mul", "Softmax"])
def test_unsupported_ops_are_named(op):
    model = load_model(_one_node_model(op))
    with pytest.raises(ValueError, match=op):
        local_lipschitz(model, np.zeros(3), np.ones(3), settings=FAST)


def test_bad_settings_and_boxes_are_refused():
    model, _, _ = random_net(0, [2, 3, 2], "Relu")
    with pytest.raises(ValueError, match="norm"):
        local_lipschitz(model, np.zeros(2), np.ones(2), settings=LipschitzSettings(norm="1"))
    with pytest.raises(ValueError, match="entries"):
        local_lipschitz(model, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="C must"):
        local_lipschitz(model, np.zeros(2), np.ones(2), C=np.ones((1, 5)))


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nnverify")
    add_lipschitz_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_prints_json_and_refuses_bad_input(tmp_path, capsys):
    path = tmp_path / "net.onnx"
    weights = [np.array([[1.0, 2.0], [-1.0, 0.5]]), np.array([[1.0, -1.0]])]
    path.write_bytes(mlp(weights, [np.zeros(2), np.zeros(1)], "Tanh"))
    np.save(tmp_path / "c.npy", np.array([0.1, 0.2]))
    assert _run_cli(["lipschitz", str(path), "--center", "0.1,0.2", "--eps", "0.05",
                     "--json", "--samples", "16", "--attack-steps", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lower"] <= out["upper"] <= out["naive"] and out["norm"] == "inf"
    assert _run_cli(["lipschitz", str(path), "--center-file", str(tmp_path / "c.npy"),
                     "--eps", "0.05", "--output-row", "0", "--norm", "2"]) == 0
    assert "upper" in capsys.readouterr().out
    spec = tmp_path / "p.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                    "(declare-const Y_0 Real)\n(assert (>= X_0 0.0))\n(assert (<= X_0 0.2))\n"
                    "(assert (>= X_1 0.1))\n(assert (<= X_1 0.3))\n(assert (<= Y_0 0.0))\n")
    assert _run_cli(["lipschitz", str(path), "--center-file", str(spec), "--eps", "0.1",
                     "--json", "--samples", "16", "--attack-steps", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert np.allclose(out["argmax_input"], np.clip(out["argmax_input"], [0, 0.1], [0.2, 0.3]))
    assert _run_cli(["lipschitz", str(path), "--center", "0.1", "--eps", "0.05"]) == 2
    assert _run_cli(["lipschitz", str(tmp_path / "missing.onnx"), "--center", "0,0",
                     "--eps", "0.1"]) == 2
    assert "error" in capsys.readouterr().err


# -- benchmark models --------------------------------------------------------------------
BENCH_CASES = [
    ("eran", "nets/ffnnSIGMOID__Point_6x200.onnx"),
    ("mnist_fc", "onnx/mnist-net_256x2.onnx"),
]


def _first_spec(folder) -> str:
    for line in (folder / "instances.csv").read_text().splitlines():
        onnx_rel, spec_rel, _ = line.split(",")
        return spec_rel
    raise AssertionError("no instances")


@pytest.mark.parametrize("folder,model_rel", BENCH_CASES)
def test_benchmark_models_bracket_below_the_naive_bound(bench, folder, model_rel):
    model = load_model(bench / folder / model_rel)
    case = parse_vnnlib_file(bench / folder / _first_spec(bench / folder),
                             model.n_inputs, model.n_outputs).cases[0]
    centre = (case.lower + case.upper) / 2
    r = local_lipschitz(model, centre - 0.01, centre + 0.01,
                        settings=LipschitzSettings(samples=32, attack_steps=5))
    assert 0 < r.lower <= r.upper < r.naive

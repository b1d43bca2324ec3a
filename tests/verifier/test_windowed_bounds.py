"""Backward passes on windows (verifier/bounds/window.py) and bounds only where the final
rows look (``intermediate.reached``).

On random convolutional networks (Conv and ConvTranspose with strides, dilations, groups
and asymmetric pads, a zero Pad, AveragePool with and without pads, BatchNormalization, a
residual Add, a Sub, Relu and Sigmoid; and a generator whose first layers, a Gemm and a
Reshape, have no windows): each op's windowed transpose equals its dense one on every
window tried; intermediate bounds by windowed passes equal the dense passes' (float64) and hold
at every sampled point (onnxruntime); the final bound of a detector-like net whose rows
read two outputs is the same with its intermediate bounds restricted to the entries those
rows reach, which are a small part of each map.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import load_model
from verifier.bounds import intermediate, window
from verifier.bounds.crown import AlphaSettings, alpha_crown_rows, crown_rows


def _net(seed: int, size: int = 12, head: int = 2) -> bytes:
    """A random (1, 3, size, size) conv net ending in a 1x1 conv with ``head`` channels,
    flattened."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def conv(x: str, name: str, cin: int, cout: int, k: int, **attrs: object) -> str:
        g = int(attrs.get("group", 1))  # type: ignore[call-overload]
        w = const(name + "_w", (rng.standard_normal((cout, cin // g, k, k)) * 0.5
                                ).astype(np.float32))
        b = const(name + "_b", (rng.standard_normal(cout) * 0.2).astype(np.float32))
        nodes.append(helper.make_node("Conv", [x, w, b], [name], kernel_shape=[k, k],
                                      **attrs))
        return name

    stride = int(rng.integers(1, 3))
    h = conv("x", "c1", 3, 4, 3, pads=[int(p) for p in rng.integers(0, 3, 4)])
    nodes.append(helper.make_node("Relu", [h], ["r1"]))
    h = conv("r1", "c2", 4, 4, 3, strides=[stride, stride], dilations=[2, 1], group=2,
             pads=[2, 1, 2, 1])
    nodes.append(helper.make_node(
        "BatchNormalization", [h, const("s", rng.uniform(0.5, 2, 4).astype(np.float32)),
                               const("t", rng.standard_normal(4).astype(np.float32)),
                               const("m", rng.standard_normal(4).astype(np.float32)),
                               const("v", rng.uniform(0.5, 2, 4).astype(np.float32))],
        ["bn"]))
    nodes.append(helper.make_node("Sigmoid", ["bn"], ["s1"]))
    pads = const("pads", np.array([0, 0, 1, 0, 0, 0, 0, 2], dtype=np.int64))
    nodes.append(helper.make_node("Pad", ["s1", pads], ["p1"], mode="constant"))
    nodes.append(helper.make_node("AveragePool", ["p1"], ["ap"], kernel_shape=[2, 2],
                                  pads=[1, 0, 0, 1], count_include_pad=1))
    h = conv("ap", "c3", 4, 4, 3, pads=[1, 1, 1, 1])
    nodes.append(helper.make_node("Add", [h, "ap"], ["res"]))  # a residual connection
    nodes.append(helper.make_node("Sub", ["res", const("k", np.float32(0.3).reshape(1))],
                                  ["sub"]))
    nodes.append(helper.make_node("Relu", ["sub"], ["r3"]))
    nodes.append(helper.make_node("AveragePool", ["r3"], ["ap2"], kernel_shape=[2, 2],
                                  strides=[1, 1]))
    wt = const("t_w", (rng.standard_normal((4, 2, 3, 3)) * 0.5).astype(np.float32))
    nodes.append(helper.make_node("ConvTranspose", ["ap2", wt], ["ct"], kernel_shape=[3, 3],
                                  strides=[2, 2], dilations=[1, 2], group=2,
                                  pads=[1, 0, 0, 2], output_padding=[1, 0]))
    nodes.append(helper.make_node("Relu", ["ct"], ["rt"]))
    h = conv("rt", "c4", 4, 5, 3, pads=[1, 1, 1, 1], strides=[2, 2])
    nodes.append(helper.make_node("Relu", [h], ["r4"]))
    h = conv("r4", "c5", 5, head, 1)
    nodes.append(helper.make_node("Flatten", [h], ["y"]))
    graph = helper.make_graph(
        nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         (1, 3, size, size))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def _generator(seed: int) -> bytes:
    """(1, 4) -> Gemm -> Reshape (1, 2, 5, 5) -> ConvTranspose -> Relu -> Conv -> Relu ->
    1x1 Conv -> Flatten: the passes from the maps end on whole tensors."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("W", rng.standard_normal((4, 50)) * 0.8), ("b", rng.standard_normal(50) * 0.2),
        ("shape", np.array([1, 2, 5, 5])), ("t", rng.standard_normal((2, 3, 3, 3)) * 0.5),
        ("k", rng.standard_normal((4, 3, 3, 3)) * 0.5), ("h", rng.standard_normal((2, 4, 1, 1))))]
    inits[2] = numpy_helper.from_array(np.array([1, 2, 5, 5], dtype=np.int64), "shape")
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["m"]),
             helper.make_node("ConvTranspose", ["m", "t"], ["ct"], kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1, 1, 0, 0]),
             helper.make_node("Relu", ["ct"], ["r1"]),
             helper.make_node("Conv", ["r1", "k"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r2"]),
             helper.make_node("Conv", ["r2", "h"], ["o"], kernel_shape=[1, 1]),
             helper.make_node("Flatten", ["o"], ["y"])]
    graph = helper.make_graph(
        nodes, "generator", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def _pooled(seed: int) -> bytes:
    """(1, 3, 12, 12) -> Conv -> Relu -> MaxPool (2, stride 2, ceil_mode) -> Conv -> Relu ->
    1x1 Conv -> Flatten: the passes from the second map reach an op with no linear rule
    (MaxPool: its interval), where they end."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
             for n, s in (("k1", (4, 3, 3, 3)), ("k2", (4, 4, 3, 3)), ("h", (2, 4, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "k1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["mp"], kernel_shape=[2, 2], strides=[2, 2],
                              ceil_mode=1),
             helper.make_node("Conv", ["mp", "k2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "h"], ["o"]),
             helper.make_node("Flatten", ["o"], ["y"])]
    graph = helper.make_graph(
        nodes, "pooled", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        (1, 3, 12, 12))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def _load(tmp_path, data: bytes, name: str = "net.onnx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path, load_model(path)


def _box(model, seed: int, eps: float, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, model.n_inputs, generator=g, dtype=dtype)
    return x - eps, x + eps


def _dense(monkeypatch, fn):
    with monkeypatch.context() as m:
        m.setattr(window, "tiles", lambda *a: None)
        return fn()


@pytest.mark.parametrize("seed", range(4))
def test_each_ops_windowed_transpose_is_its_dense_one(tmp_path, seed):
    _, model = _load(tmp_path, _net(seed))
    rng = np.random.default_rng(seed)
    checked = 0
    for node in model.graph.nodes:
        if not node.op.linear or len(node.shape) != 4:
            continue
        H, W = node.shape[-2:]
        for _ in range(6):
            y0, x0 = int(rng.integers(0, H)), int(rng.integers(0, W))
            win = ((y0, int(rng.integers(y0 + 1, H + 1))), (x0, int(rng.integers(x0 + 1, W + 1))))
            inner = node.op.window_of_input(0, win)
            assert inner is not None, node.op_type
            if any(a >= b for a, b in inner):  # outputs only padding reaches: no pass plans it
                continue
            A = torch.zeros(1, 3, *node.shape, dtype=torch.float64)
            A[..., win[0][0]:win[0][1], win[1][0]:win[1][1]] = torch.randn(
                1, 3, *node.shape[:2], win[0][1] - win[0][0], win[1][1] - win[1][0],
                dtype=torch.float64)
            dense = node.op.backward(A)[0]
            got = node.op.window_transpose(A[..., win[0][0]:win[0][1], win[1][0]:win[1][1]],
                                           win)[0]
            (a0, a1), (b0, b1) = inner
            assert torch.allclose(got, dense[..., a0:a1, b0:b1], atol=1e-12), node.op_type
            outside = dense.clone()
            outside[..., a0:a1, b0:b1] = 0
            assert not outside.any(), f"{node.op_type}: coefficients outside its window"
            checked += 1
    assert checked >= 6 * 7


def test_pads_on_channels_or_with_a_value_have_no_window(tmp_path):
    for pads, value in (([0, 1, 0, 0, 0, 0, 0, 0], 0.0), ([0, 0, 1, 0, 0, 0, 0, 0], 0.5)):
        inits = [numpy_helper.from_array(np.array(pads, dtype=np.int64), "p"),
                 numpy_helper.from_array(np.float32(value).reshape(()), "v")]
        graph = helper.make_graph(
            [helper.make_node("Pad", ["x", "p", "v"], ["y0"], mode="constant"),
             helper.make_node("Relu", ["y0"], ["y"])], "pad",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2, 4, 4))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                                 ).SerializeToString()
        _, model = _load(tmp_path, data)
        assert model.graph.nodes[0].op.window_of_input(0, ((0, 2), (0, 2))) is None


@pytest.mark.parametrize("seed", range(4))
def test_windowed_intermediate_bounds_equal_dense_ones(tmp_path, monkeypatch, seed):
    _, model = _load(tmp_path, _net(seed))
    lo, hi = _box(model, seed, 0.05)
    monkeypatch.setattr(window, "TILES_PER_SIDE", 3)
    planned = []
    real_tiles = window.tiles

    def spy(*args):
        groups = real_tiles(*args)
        planned.append(groups is not None)
        return groups

    monkeypatch.setattr(window, "tiles", spy)
    tiled = intermediate.compute(model.graph, lo, hi)
    assert len(planned) == 4 and all(planned), "the passes did not run on windows"
    dense = _dense(monkeypatch, lambda: intermediate.compute(model.graph, lo, hi))
    for node in model.graph.nodes:
        for a, b in zip(tiled.box[node.name], dense.box[node.name], strict=True):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), node.name


@pytest.mark.parametrize("seed", range(3))
def test_passes_end_on_whole_tensors_below_an_op_without_windows(tmp_path, monkeypatch,
                                                                  seed):
    _, model = _load(tmp_path, _generator(seed))
    lo, hi = _box(model, seed, 0.2)
    monkeypatch.setattr(window, "TILES_PER_SIDE", 3)
    groups = window.tiles(model.graph, "c", torch.arange(4 * 9 * 9))
    assert groups is not None
    plan = groups[0][0]
    assert plan["r1"] is not None and plan["ct"] is not None and plan["m"] is None
    assert plan["g"] is None and plan["x"] is None
    tiled = intermediate.compute(model.graph, lo, hi)
    dense = _dense(monkeypatch, lambda: intermediate.compute(model.graph, lo, hi))
    for node in model.graph.nodes:
        for a, b in zip(tiled.box[node.name], dense.box[node.name], strict=True):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), node.name


@pytest.mark.parametrize("seed", range(2))
def test_passes_end_at_an_op_without_a_linear_rule(tmp_path, monkeypatch, seed):
    """A MaxPool below a windowed node: the pass meets it as its interval and ends (it used
    to fail there); the bounds equal the dense passes' and hold on onnxruntime's samples."""
    path, model = _load(tmp_path, _pooled(seed))
    lo, hi = _box(model, seed, 0.05)
    monkeypatch.setattr(window, "TILES_PER_SIDE", 3)
    assert window.tiles(model.graph, "c2", torch.arange(4 * 6 * 6)) is not None
    tiled = intermediate.compute(model.graph, lo, hi)
    dense = _dense(monkeypatch, lambda: intermediate.compute(model.graph, lo, hi))
    for node in model.graph.nodes:
        for a, b in zip(tiled.box[node.name], dense.box[node.name], strict=True):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), node.name
    m = model.n_outputs
    C = torch.eye(m, dtype=torch.float64).expand(2, m, m)
    lower = crown_rows(model.graph, lo, hi, C, torch.zeros(2, m, dtype=torch.float64))
    upper = -crown_rows(model.graph, lo, hi, -C, torch.zeros(2, m, dtype=torch.float64))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    for b in range(2):
        xs = (lo[b].numpy() + rng.uniform(size=(300, model.n_inputs)) * (hi - lo)[b].numpy())
        xs = np.clip(xs.astype(np.float32), lo[b].numpy(), hi[b].numpy()).astype(np.float32)
        ys = np.concatenate([sess.run(None, {"x": x.reshape(1, 3, 12, 12)})[0] for x in xs])
        assert (ys >= lower[b].numpy()).all() and (ys <= upper[b].numpy()).all()


@pytest.mark.parametrize("seed", range(3))
def test_windowed_bounds_hold_on_onnxruntime_samples(tmp_path, seed):
    path, model = _load(tmp_path, _net(seed))
    lo, hi = _box(model, seed, 0.08, torch.float32)
    lo, hi = lo[:1], hi[:1]
    m = model.n_outputs
    C = torch.eye(m).unsqueeze(0)
    lower = crown_rows(model.graph, lo, hi, C, torch.zeros(1, m))
    upper = -crown_rows(model.graph, lo, hi, -C, torch.zeros(1, m))
    rng = np.random.default_rng(seed)
    xs = lo.numpy() + rng.uniform(size=(1000, model.n_inputs)).astype(np.float32) * (
        hi - lo).numpy()
    xs = np.clip(xs, lo.numpy(), hi.numpy()).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ys = np.concatenate([sess.run(None, {"x": x.reshape(1, 3, 12, 12)})[0] for x in xs])
    assert (ys >= lower.numpy()).all() and (ys <= upper.numpy()).all()
    assert torch.isfinite(lower).all() and (upper - lower).max() < 1e3


@pytest.mark.parametrize("seed", range(3))
def test_bounds_where_the_rows_look_give_the_same_final_bound(tmp_path, monkeypatch, seed):
    """Two outputs of a 20x20 map: the rows reach a part of each map; the intermediate
    bounds they miss are the interval ones, and the final bound is the same."""
    _, model = _load(tmp_path, _net(seed, size=20, head=3))
    lo, hi = _box(model, seed, 0.03)
    C = torch.zeros(2, 2, model.n_outputs, dtype=torch.float64)
    _, _, H, W = model.graph.nodes[-2].shape
    C[:, 0, 2] = 1  # output (0, 0, 2) and (1, 1, 1): near each other
    C[:, 1, H * W + W + 1] = -1
    d = torch.zeros(2, 2, dtype=torch.float64)
    reach = intermediate.reached(model.graph, C)
    relu_inputs = [n.inputs[0] for n in model.graph.nodes if n.op_type == "Relu"]
    assert all(0 < int(reach[name].sum()) < reach[name].numel() // 2 for name in relu_inputs)
    looked = crown_rows(model.graph, lo, hi, C, d)
    everywhere = crown_rows(model.graph, lo, hi, C, d, intermediate.compute(model.graph, lo, hi))
    assert torch.allclose(looked, everywhere, rtol=1e-9, atol=1e-9)
    nb = intermediate.compute(model.graph, lo, hi, reach=reach)
    full = intermediate.compute(model.graph, lo, hi)
    name = relu_inputs[-1]  # outside the reach: interval bounds, looser
    assert ((nb.box[name][1] - nb.box[name][0]) >= (full.box[name][1] - full.box[name][0])
            - 1e-12).all()


def test_alpha_crown_passes_without_parameters_run_on_windows(tmp_path, monkeypatch):
    """Where no intermediate pass would get alpha-CROWN's parameters (budget 0), its
    passes run on windows, and its bound is the one of passes on whole tensors."""
    _, model = _load(tmp_path, _net(5))
    lo, hi = _box(model, 5, 0.05)
    C = torch.eye(model.n_outputs, dtype=torch.float64)[:4].expand(2, 4, -1)
    d = torch.full((2, 4), 1e3, dtype=torch.float64)  # every row open: all iterations run
    settings = AlphaSettings(iterations=5, refine_iterations=3, memory_budget=0)
    planned = []
    real_tiles = window.tiles
    monkeypatch.setattr(window, "tiles", lambda *a: planned.append(1) or real_tiles(*a))
    windowed = alpha_crown_rows(model.graph, lo, hi, C, d, settings)
    assert len(planned) > 4
    dense = _dense(monkeypatch, lambda: alpha_crown_rows(model.graph, lo, hi, C, d, settings))
    assert torch.allclose(windowed, dense, rtol=1e-7, atol=1e-9)  # Adam on rounding noise


def test_infinite_input_sides_stay_sound(tmp_path, monkeypatch):
    """An unbounded input entry: the dense pass's rounding term meets it with a zero
    coefficient (0 * inf: NaN, so the interval bound stands); windows leave it out where
    it is out of reach, so they may be tighter, never looser, and they hold at points with
    that entry far out (onnxruntime)."""
    path, model = _load(tmp_path, _net(2))
    lo, hi = _box(model, 2, 0.05, torch.float32)
    lo, hi = lo[:1], hi[:1]
    lo[0, 5] = -torch.inf
    monkeypatch.setattr(window, "TILES_PER_SIDE", 3)
    tiled = intermediate.compute(model.graph, lo, hi)
    dense = _dense(monkeypatch, lambda: intermediate.compute(model.graph, lo, hi))
    for node in model.graph.nodes:
        (t_lo, t_hi), (d_lo, d_hi) = tiled.box[node.name], dense.box[node.name]
        assert not (t_lo < d_lo - 1e-5).any() and not (t_hi > d_hi + 1e-5).any(), node.name
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    low = lo.clone()
    low[0, 5] = hi[0, 5] - 1e3
    y_lo, y_hi = (t.reshape(-1).numpy() for t in tiled.box["y"])
    for _ in range(200):
        x = (low + torch.from_numpy(rng.uniform(size=low.shape).astype(np.float32))
             * (hi - low)).numpy()
        y = sess.run(None, {"x": x.reshape(1, 3, 12, 12)})[0].reshape(-1)
        assert (y >= y_lo).all() and (y <= y_hi).all()

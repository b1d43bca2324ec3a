"""Sign, Floor, Ceil and Round (verifier/ops/step.py) against independent references.

- onnxruntime: one-node models at every opset where the op exists (and refusal below it),
  chains Gemm -> step -> Gemm -> step on a grid where every sum is exact, so that the steps
  meet their jumps and .5 values exactly; float32 and float64.
- numpy (exact: floor, ceil, round half to even, sign): the lines and the interval bounds
  contain f on dense samples of random intervals (narrow, wide, one or several jumps, an end
  on a jump, degenerate, huge, infinite, NaN), at the ends, at each jump inside (its value
  and both one-sided limits) and one ulp either side of it; the branching children too.
- Hand-computed lines and splits on small cases; the engine's IBP, CROWN and alpha-CROWN
  bounds of a chain contain its outputs.
- ``verify``: a property true with a margin is verified, a violated one falsified with a
  counterexample onnxruntime confirms, and a narrow planted violation (one of them a single
  point, the value f takes at a jump) is never verified.
- The Lipschitz engine refuses the ops by name.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.bounds.crown import AlphaSettings, alpha_crown_rows, crown_rows
from verifier.errors import UnsupportedOpError
from verifier.importer.onnx_attrs import MAX_OPSET, MIN_OPSET
from verifier.lipschitz import LipschitzSettings, local_lipschitz, monotonicity
from verifier.ops.base import Var
from verifier.ops.step import Ceil, Floor, Round, Sign, StepOp

INF, NAN = math.inf, math.nan


def _sign(x: np.ndarray) -> np.ndarray:
    return np.sign(x)  # NaN stays NaN, as in onnxruntime


# op -> (class, numpy reference, first ONNX opset, jump lattice (offset, spacing) or None)
OPS: dict[str, tuple[type[StepOp], Callable[[np.ndarray], np.ndarray], int,
                     tuple[float, float] | None]] = {
    "Sign": (Sign, _sign, 9, None),
    "Floor": (Floor, np.floor, 1, (0.0, 1.0)),
    "Ceil": (Ceil, np.ceil, 1, (0.0, 1.0)),
    "Round": (Round, np.round, 11, (0.5, 1.0)),  # numpy rounds half to even, as ONNX
}
NAMES = sorted(OPS)
DTYPES = {"float32": (np.float32, torch.float32, TensorProto.FLOAT),
          "float64": (np.float64, torch.float64, TensorProto.DOUBLE)}


def _rng(*key: object) -> np.random.Generator:
    """A generator seeded by the test's parameters (crc32: stable across processes)."""
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def _op(name: str) -> StepOp:
    return OPS[name][0]({"_op_type": name}, [Var("x", (1, 1))], (1, 1))


def _f(name: str, x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return OPS[name][1](np.asarray(x, dtype=np.float64))


# -- onnxruntime agreement -----------------------------------------------------------------
def _model(nodes: list, inits: list, n_in: int, elem: int, opset: int) -> bytes:
    graph = helper.make_graph(
        nodes, "step", [helper.make_tensor_value_info("X", elem, (1, n_in))],
        [helper.make_tensor_value_info("Y", elem, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model.SerializeToString()


def _one_node(name: str, n: int, elem: int, opset: int) -> bytes:
    return _model([helper.make_node(name, ["X"], ["Y"], name="step")], [], n, elem, opset)


def _ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"X": x[None]})[0].ravel() for x in xs])


def _ours(data: bytes, xs: np.ndarray) -> np.ndarray:
    model = load_model(data)
    with torch.no_grad():
        y = model.graph.forward(torch.from_numpy(xs.copy()))
    return y.reshape(len(xs), -1).numpy()


def _special_inputs(np_dtype: type, rng: np.random.Generator) -> np.ndarray:
    """Jump points and .5 values, one ulp either side of them, the largest magnitudes
    where .5 is still held, random values, signed zeros, infinities, NaN."""
    half = 2.0 ** (np.finfo(np_dtype).nmant - 1)  # ulp 0.5 from here, 1 from twice it
    base = np.concatenate([np.arange(-4, 4.5, 0.5), [1e-45, 1e-300, 0.49999997, 1e6 + 0.5],
                           [half + 0.5, half - 0.5, half + 1.5, 2 * half - 0.5, 2 * half + 2]])
    base = np.concatenate([base, -base]).astype(np_dtype)
    near = np.concatenate([np.nextafter(base, np_dtype(INF)), np.nextafter(base, np_dtype(-INF))])
    rand = np.concatenate([rng.standard_normal(40) * 3, rng.integers(-40, 40, 20) / 4])
    special = [0.0, -0.0, INF, -INF, NAN, 1e30, -1e30]
    return np.concatenate([base, near, rand.astype(np_dtype), special]).astype(np_dtype)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", NAMES)
def test_one_node_agrees_with_onnxruntime_at_every_opset(name: str, dtype: str):
    np_dtype, _, elem = DTYPES[dtype]
    xs = _special_inputs(np_dtype, _rng(name, dtype))[None]  # one row: (1, n)
    reference = _f(name, xs).astype(np_dtype)
    first = max(OPS[name][2], MIN_OPSET)
    for opset in range(first, MAX_OPSET + 1):
        data = _one_node(name, xs.shape[1], elem, opset)
        ref = _ort(data, xs)
        np.testing.assert_array_equal(ref, reference, err_msg=f"numpy at opset {opset}")
        np.testing.assert_array_equal(_ours(data, xs), ref, err_msg=f"opset {opset}")


@pytest.mark.parametrize("name", ["Sign", "Round"])
def test_opsets_before_the_op_exists_are_refused(name: str):
    for opset in range(MIN_OPSET, OPS[name][2]):
        with pytest.raises(UnsupportedOpError, match=f"{name} is not an operator of ONNX "
                                                     f"opset {opset}"):
            load_model(_one_node(name, 3, TensorProto.FLOAT, opset))


def _grid(rng: np.random.Generator, *shape: int, step: float, size: int) -> np.ndarray:
    return rng.integers(-size, size + 1, shape) * step


def _chain(name: str, elem: int, np_dtype: type, opset: int, rng: np.random.Generator
           ) -> bytes:
    """X (1, 4) -> Gemm -> step -> Gemm -> step -> Y (1, 3).  Weights on a coarse grid
    (halves, integers) and inputs on eighths keep every sum exact (so onnxruntime and we
    meet the jumps at the same points, exactly) and often on a jump."""
    w1 = _grid(rng, 6, 4, step=0.5, size=2)
    b1 = _grid(rng, 6, step=0.25, size=4)
    w2 = _grid(rng, 3, 6, step=1.0, size=2)
    b2 = _grid(rng, 3, step=0.5, size=2)
    inits = [numpy_helper.from_array(a.astype(np_dtype), k)
             for k, a in (("W1", w1), ("B1", b1), ("W2", w2), ("B2", b2))]
    nodes = [helper.make_node("Gemm", ["X", "W1", "B1"], ["z1"], transB=1),
             helper.make_node(name, ["z1"], ["h1"]),
             helper.make_node("Gemm", ["h1", "W2", "B2"], ["z2"], transB=1),
             helper.make_node(name, ["z2"], ["Y"])]
    return _model(nodes, inits, 4, elem, opset)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", NAMES)
def test_chain_agrees_with_onnxruntime(name: str, dtype: str):
    np_dtype, _, elem = DTYPES[dtype]
    rng = _rng("chain", name, dtype)
    for opset in sorted({max(OPS[name][2], MIN_OPSET), 17, MAX_OPSET}):
        data = _chain(name, elem, np_dtype, opset, rng)
        xs = _grid(rng, 64, 4, step=0.125, size=24).astype(np_dtype)
        ref = _ort(data, xs)
        np.testing.assert_array_equal(_ours(data, xs), ref, err_msg=f"opset {opset}")


# -- relaxations and interval bounds -------------------------------------------------------
def _jumps_near(name: str, x: np.ndarray) -> np.ndarray:
    """Jump points around each x (the three nearest lattice points; Sign: 0)."""
    lattice = OPS[name][3]
    if lattice is None:
        return np.zeros((1, *x.shape))
    o, _ = lattice
    with np.errstate(invalid="ignore"):
        base = np.floor(x - o) + o
    return np.stack([base - 1, base, base + 1, base + 2])


def _jump_points(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    lattice = OPS[name][3]
    if lattice is None:
        return np.zeros(n)
    return rng.integers(-6, 7, n) + lattice[0]


def _intervals(name: str, np_dtype: type, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """(lo, hi), float64 holding ``np_dtype`` values: every kind of interval a step meets."""
    n = 60
    c = rng.uniform(-5, 5, n)
    pieces = [
        (c, c + 10.0 ** rng.uniform(-7, 0, n)),  # narrow
        (c - 10.0 ** rng.uniform(0, 3, n), c + 10.0 ** rng.uniform(0, 3, n)),  # wide
    ]
    p = _jump_points(name, rng, n)
    d1, d2 = rng.uniform(0, 0.95, n), rng.uniform(0, 0.95, n)
    tiny = 10.0 ** rng.uniform(-9, -1, n)
    k = rng.integers(1, 6, n)
    pieces += [
        (p - d1, p + d2),  # one jump inside
        (p - d1, p + k + d2), (p - k - d1, p + d2),  # several
        (p - tiny, p + tiny), (p - tiny, p), (p, p + tiny),  # around, ending on a jump
        (p, p + d2), (p - d1, p), (p, p + k), (p - 1, p), (p, p),  # ends on jumps
        (c, c),  # degenerate
    ]
    big = 0.25 / np.finfo(np_dtype).eps  # where the lattice stops being held exactly
    top = float(np.finfo(np_dtype).max)
    special = [
        (-1e6, 1e6), (-1e6 - 0.5, 1e6 + 0.5), (big - 3.5, big + 3.5), (2 * big - 4, 2 * big),
        (4 * big, 4 * big + 16), (-4 * big - 40, 4 * big), (1e7, 1e7 + 5), (-1e30, 1e30),
        (-top, top), (top / 2, top), (-INF, 3.5), (-2.0, INF), (-INF, INF), (-INF, -INF),
        (INF, INF), (-INF, -1e30), (1e30, INF), (-INF, 0.0), (0.0, INF), (-0.0, 0.0),
        (NAN, 1.0), (0.0, NAN), (NAN, NAN), (-1e-300, 1e-300), (-1e-45, 1e-45),
    ]
    lo = np.concatenate([a for a, _ in pieces] + [[a for a, _ in special]])
    hi = np.concatenate([b for _, b in pieces] + [[b for _, b in special]])
    with np.errstate(over="ignore"):
        lo, hi = lo.astype(np_dtype), hi.astype(np_dtype)
    ok = ~(lo > hi)
    return lo[ok].astype(np.float64), hi[ok].astype(np.float64)


def _with_children(name: str, lo: np.ndarray, hi: np.ndarray, torch_dtype: torch.dtype
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The intervals and branch-and-bound's two closed children of each finite one."""
    finite = np.isfinite(lo) & np.isfinite(hi)
    lt = torch.tensor(lo[finite], dtype=torch_dtype)
    ht = torch.tensor(hi[finite], dtype=torch_dtype)
    p = _op(name).split_point(lt, ht).double().numpy()
    return (np.concatenate([lo, lo[finite], p]), np.concatenate([hi, p, hi[finite]]))


def _samples(name: str, lo: float, hi: float) -> np.ndarray:
    """Dense points of [lo, hi]: a grid, the ends, the jumps inside, one ulp either side of
    them (in float64, finer than any input format), and points towards an infinite end."""
    a, b = max(lo, -1e308), min(hi, 1e308)
    pts = [np.array([lo, hi])]
    if a <= b:
        pts.append(a + np.linspace(0, 1, 257) * (b - a) if b - a < INF else
                   np.linspace(a / 2, b / 2, 257) * 2)
        if lo == -INF:
            pts.append(b - 10.0 ** np.linspace(-3, 300, 60))
        if hi == INF:
            pts.append(a + 10.0 ** np.linspace(-3, 300, 60))
    x = np.concatenate(pts)
    x = x[(x >= lo) & (x <= hi)]
    p = _jumps_near(name, x[np.isfinite(x)]).ravel()
    with np.errstate(over="ignore"):
        p = np.concatenate([p, np.nextafter(p, INF), np.nextafter(p, -INF)])
    return np.unique(np.concatenate([x, p[(p >= lo) & (p <= hi)]]))


def _line(a: float, b: float, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a x + b (b where a = 0, also at an infinite x) and a bound on its rounding."""
    with np.errstate(invalid="ignore", over="ignore"):
        value = np.where(a == 0, b, a * x + b)
        err = 4 * np.finfo(np.float64).eps * (np.abs(np.where(a == 0, 0.0, a * x)) + abs(b))
    return value, np.where(np.isfinite(err), err, 0.0) + 1e-300  # none on infinite values


def _limits(name: str, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(p-) and f(p+) at jump points p (exact: the lattice's spacing is at least 1/2)."""
    return _f(name, p - 0.25), _f(name, p + 0.25)


def _check_lines(name: str, lo: float, hi: float, lines: tuple[float, ...]) -> None:
    a_l, b_l, a_u, b_u = lines
    where = f"{name} on [{lo!r}, {hi!r}]: lines {lines}"
    assert not any(math.isnan(v) for v in lines), where
    if math.isnan(lo) or math.isnan(hi):
        assert lines == (0.0, -INF, 0.0, INF), where
        return
    if not (math.isfinite(lo) and math.isfinite(hi)):
        assert a_l == 0 and a_u == 0, where
    x = _samples(name, lo, hi)
    y = _f(name, x)
    low, e_l = _line(a_l, b_l, x)
    high, e_u = _line(a_u, b_u, x)
    with np.errstate(over="ignore"):
        low, high = low - e_l, high + e_u
    assert np.all(low <= y), (where, x[low > y])
    assert np.all(high >= y), (where, x[high < y])
    # at each jump p inside, the lines must hold up to the one-sided limits too
    p = np.unique(_jumps_near(name, x[np.isfinite(x)]).ravel())
    p = p[(p >= lo) & (p <= hi) & (np.abs(p) < 2.0**50)]
    left, right = _limits(name, p)
    low, e_l = _line(a_l, b_l, p)
    high, e_u = _line(a_u, b_u, p)
    assert np.all((p == lo) | (low - e_l <= left)), (where, p)
    assert np.all((p == hi) | (high + e_u >= right)), (where, p)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", NAMES)
def test_lines_contain_the_function(name: str, dtype: str):
    np_dtype, torch_dtype, _ = DTYPES[dtype]
    lo, hi = _with_children(name, *_intervals(name, np_dtype, _rng("lines", name, dtype)),
                            torch_dtype)
    lines = _op(name).lines(torch.tensor(lo, dtype=torch_dtype),
                            torch.tensor(hi, dtype=torch_dtype))
    assert all(t.dtype == torch_dtype for t in (lines.a_l, lines.b_l, lines.a_u, lines.b_u))
    table = torch.stack([lines.a_l, lines.b_l, lines.a_u, lines.b_u], 1).double().numpy()
    assert np.all(table[:, [0, 2]] >= 0)  # f rises
    for i in range(len(lo)):
        _check_lines(name, lo[i], hi[i], tuple(float(v) for v in table[i]))


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", NAMES)
def test_interval_bounds_contain_the_function(name: str, dtype: str):
    np_dtype, torch_dtype, _ = DTYPES[dtype]
    lo, hi = _intervals(name, np_dtype, _rng("ibp", name, dtype))
    low, high = _op(name).ibp((torch.tensor(lo, dtype=torch_dtype),
                               torch.tensor(hi, dtype=torch_dtype)))
    low, high = low.double().numpy(), high.double().numpy()
    for i in range(len(lo)):
        where = f"{name} on [{lo[i]!r}, {hi[i]!r}]: [{low[i]}, {high[i]}]"
        if math.isnan(lo[i]) or math.isnan(hi[i]):
            assert (low[i], high[i]) == (-INF, INF), where
            continue
        y = _f(name, _samples(name, lo[i], hi[i]))
        assert low[i] <= y.min() and y.max() <= high[i], where
        assert (low[i], high[i]) == (y.min(), y.max()), where  # the exact range
        ends = _f(name, np.array([lo[i], hi[i]]))
        assert (low[i], high[i]) == tuple(ends), where


@pytest.mark.parametrize("name", NAMES)
def test_insensitive_exactly_where_no_jump(name: str):
    """Entries marked insensitive hold no jump: f constant on them, the lines that
    constant; the others change value somewhere in the closed interval."""
    op = _op(name)
    lo, hi = _intervals(name, np.float64, _rng("insensitive", name))
    keep = np.isfinite(lo) & np.isfinite(hi)
    lo, hi = lo[keep], hi[keep]
    lt, ht = torch.tensor(lo), torch.tensor(hi)
    mask = op.insensitive(0, [(lt, ht)]).numpy()
    lines = op.lines(lt, ht)
    for i in range(len(lo)):
        x = _samples(name, lo[i], hi[i])
        constant = np.all(_f(name, x) == _f(name, x[:1]))
        assert mask[i] == constant, (name, lo[i], hi[i])
        if mask[i]:
            assert float(lines.a_l[i]) == float(lines.a_u[i]) == 0.0
            assert float(lines.b_l[i]) == float(lines.b_u[i]) == _f(name, x[:1])[0]


@pytest.mark.parametrize("name", NAMES)
def test_split_point_is_the_jump_nearest_the_middle(name: str):
    lo, hi = _intervals(name, np.float64, _rng("split", name))
    keep = (np.abs(lo) < 1e9) & (np.abs(hi) < 1e9)  # finite, and jumps a float64 holds
    lo, hi = lo[keep], hi[keep]
    keep = hi - lo < 50
    lo, hi = lo[keep], hi[keep]
    p = _op(name).split_point(torch.tensor(lo), torch.tensor(hi)).numpy()
    for i in range(len(lo)):
        mid = lo[i] / 2 + hi[i] / 2
        if OPS[name][3] is None:
            jumps = np.array([0.0])
        else:
            o = OPS[name][3][0]
            jumps = np.arange(np.floor(lo[i]) - 1, np.ceil(hi[i]) + 2) + o
        inside = jumps[(jumps > lo[i]) & (jumps < hi[i])]
        if len(inside):
            assert p[i] in inside, (name, lo[i], hi[i], p[i])
            assert abs(p[i] - mid) == np.abs(inside - mid).min(), (name, lo[i], hi[i], p[i])
        else:
            assert p[i] == mid, (name, lo[i], hi[i], p[i])


def _lines_of(name: str, lo: float, hi: float) -> tuple[float, ...]:
    ln = _op(name).lines(torch.tensor([lo], dtype=torch.float64),
                         torch.tensor([hi], dtype=torch.float64))
    return tuple(float(t[0]) for t in (ln.a_l, ln.b_l, ln.a_u, ln.b_u))


@pytest.mark.parametrize("name,lo,hi,expected", [
    # one jump right of the middle: the lower hull's flat edge, the chord to the top corner
    ("Floor", -0.6, 0.3, (0.0, -1.0, 10 / 6, 0.0)),
    # left of the middle: the edge from the bottom corner up to (u, f(u)), the flat top
    ("Floor", -0.3, 0.6, (10 / 6, -1.0, 0.0, 0.0)),
    ("Ceil", -0.3, 0.6, (10 / 6, 0.0, 0.0, 1.0)),
    ("Round", -0.3, 0.6, (0.0, 0.0, 1.25, 0.375)),  # jump at 0.5: chord to (0.5, 1)
    ("Sign", -0.3, 0.6, (10 / 3, -1.0, 0.0, 1.0)),
    ("Sign", -0.6, 0.3, (0.0, -1.0, 10 / 3, 1.0)),
    # many jumps: the lattice's slope 1, f(x) - x's range
    ("Floor", -1e6, 1e6, (1.0, -1.0, 1.0, 0.0)),
    ("Ceil", -2.5, 3.25, (1.0, 0.0, 1.0, 1.0)),
    ("Round", -1e6, 1e6, (1.0, -0.5, 1.0, 0.5)),
    ("Round", -1e300, 1e300, (1.0, -0.5, 1.0, 0.5)),
    # a jump on an end counts on one side only: Floor's at 1 is no bottom corner of [1, 2.5]
    # (f(1-) = 0 lies outside), Ceil's at 0 no top corner of [-1.5, 0] (f(0+) = 1)
    ("Floor", 1.0, 2.5, (0.0, 1.0, 1.0, 0.0)),
    ("Ceil", -1.5, 0.0, (1.0, 0.0, 0.0, 0.0)),
    # no jump in the closed interval: exact constants
    ("Floor", 2.0, 2.75, (0.0, 2.0, 0.0, 2.0)),
    ("Ceil", 1.25, 2.0, (0.0, 2.0, 0.0, 2.0)),
    ("Round", -0.5, 0.5, (0.0, 0.0, 0.0, 0.0)),  # both ends round to even 0
    ("Round", 0.5, 1.5, (1.0, -0.5, 1.0, 0.5)),  # 0 at 0.5, 2 at 1.5
    ("Sign", 0.0, 0.0, (0.0, 0.0, 0.0, 0.0)),
    # infinite ends: the interval bounds as constants
    ("Floor", -INF, 3.5, (0.0, -INF, 0.0, 3.0)),
    ("Sign", -INF, 3.5, (0.0, -1.0, 0.0, 1.0)),
    ("Sign", -INF, -2.0, (0.0, -1.0, 0.0, -1.0)),
])
def test_hand_computed_lines(name: str, lo: float, hi: float, expected: tuple[float, ...]):
    got = _lines_of(name, lo, hi)
    scale = max([1.0] + [abs(v) for v in (lo, hi) if math.isfinite(v)])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14 * scale)  # rounding


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", ["Floor", "Ceil", "Round"])
def test_lines_beyond_the_exact_lattice_are_x_plus_the_shift(name: str, dtype: str):
    """Where the format no longer holds every jump (float32 from 2^21), the lines are
    x + min (f(x) - x) and x + max (f(x) - x), exactly, not rounding-sized margins."""
    np_dtype, torch_dtype, _ = DTYPES[dtype]
    big = 0.25 / float(np.finfo(np_dtype).eps)
    lo = torch.tensor([big, 4 * big, -8 * big], dtype=torch_dtype)
    ln = _op(name).lines(lo, lo + torch.tensor([3.0, 64.0, 8 * big], dtype=torch_dtype))
    low, high = {"Floor": (-1.0, 0.0), "Ceil": (0.0, 1.0), "Round": (-0.5, 0.5)}[name]
    assert (ln.a_l == 1).all() and (ln.a_u == 1).all()
    assert (ln.b_l == low).all() and (ln.b_u == high).all()


@pytest.mark.parametrize("name,lo,p,hi", [
    ("Floor", -0.7, 0.0, 0.4), ("Ceil", 1.4, 2.0, 2.9), ("Round", 0.1, 0.5, 0.9),
    ("Round", 1.1, 1.5, 1.9), ("Sign", -0.5, 0.0, 0.5),
])
def test_split_at_a_jump_shrinks_the_gap(name: str, lo: float, p: float, hi: float):
    """The docstring's claim: the child on the side f(p) belongs to is exact, the other's
    gap falls from the jump at p to 0 at its far end (Sign: both, half the jump each)."""
    op = _op(name)
    t = torch.tensor
    assert float(op.split_point(t([lo]), t([hi]))[0]) == p
    f_p, (left, right) = _f(name, np.array([p]))[0], _limits(name, np.array([p]))
    for a, b, far in ((lo, p, lo), (p, hi, hi)):
        a_l, b_l, a_u, b_u = _lines_of(name, a, b)
        gap_far = (a_u - a_l) * far + b_u - b_l
        gap_p = (a_u - a_l) * p + b_u - b_l
        side = left[0] if a < p else right[0]
        if f_p == side:
            assert (a_l, a_u, b_l, b_u) == (0.0, 0.0, f_p, f_p)
        else:
            assert gap_far == pytest.approx(0.0, abs=1e-12)
            assert gap_p == pytest.approx(abs(f_p - side), rel=1e-12)


def _bounds_case(name: str) -> bytes:
    return _chain(name, TensorProto.DOUBLE, np.float64, 17, _rng("bounds-model", name))


@pytest.mark.parametrize("width", [1 / 64, 0.25, 3.0], ids=["narrow", "medium", "wide"])
@pytest.mark.parametrize("name", NAMES)
def test_engine_bounds_contain_the_outputs(name: str, width: float):
    """IBP, CROWN and alpha-CROWN through the step's lines, on boxes whose grid points hit
    the jumps exactly (and random points)."""
    g = load_model(_bounds_case(name)).graph
    rng = _rng("bounds", name, width)
    centre = _grid(rng, 4, step=0.125, size=12)
    lo, hi = centre - width, centre + width
    x = np.concatenate([lo + rng.uniform(size=(300, 4)) * (hi - lo),
                        lo + _grid(rng, 300, 4, step=1, size=1000) % 65 / 64 * (hi - lo),
                        np.where(rng.integers(0, 2, (50, 4)), lo, hi)])
    with torch.no_grad():
        y = g.forward(torch.tensor(x)).reshape(len(x), -1)
    L, U = torch.tensor(lo).reshape(1, -1), torch.tensor(hi).reshape(1, -1)
    ilo, ihi = (t.reshape(-1) for t in g.ibp(L, U))
    assert (y >= ilo).all() and (y <= ihi).all(), "IBP"
    m = y.shape[1]
    C = torch.cat([torch.eye(m), -torch.eye(m)]).double().unsqueeze(0)
    d = torch.zeros(1, 2 * m, dtype=torch.float64)
    with torch.no_grad():
        crown = crown_rows(g, L, U, C, d)
    alpha = alpha_crown_rows(g, L, U, C, d, AlphaSettings(iterations=5, early_stop=False))
    for method, rows in (("CROWN", crown), ("alpha-CROWN", alpha)):
        assert (y >= rows[0, :m]).all(), f"{method} lower bound above an output"
        assert (y <= -rows[0, m:]).all(), f"{method} upper bound below an output"


# -- verify ----------------------------------------------------------------------------------
# y = c . (f(x1 + x2), f(x1), f(x2)): identities that bound y by 1 (e.g. floor(a + b) -
# floor(a) - floor(b) is 0 or 1), with y = 1 on a large part of the box; x2's range keeps
# f(x2) constant, so the only jumps left in a small box are those of one other step
IDENTITIES = {
    "Floor": ((1, -1, -1), (-1.9, 1.8), (0.1, 0.4)),
    "Ceil": ((-1, 1, 1), (-1.8, 1.9), (-0.4, -0.1)),  # ceil(x) = -floor(-x): the mirror
    "Round": ((1, -1, -1), (-1.9, 1.8), (0.1, 0.4)),
    "Sign": ((-1, 1, 1), (-1.9, 1.8), (0.1, 0.4)),  # sign(x1) + 1 - sign(x1 + x2)
}


def _identity_model(name: str) -> bytes:
    coeffs = IDENTITIES[name][0]
    w1 = np.array([[1, 1], [1, 0], [0, 1]], np.float32)
    nodes = [helper.make_node("Gemm", ["X", "W1"], ["z"], transB=1),
             helper.make_node(name, ["z"], ["h"]),
             helper.make_node("Gemm", ["h", "W2"], ["Y"], transB=1)]
    inits = [numpy_helper.from_array(w1, "W1"),
             numpy_helper.from_array(np.array([coeffs], np.float32), "W2")]
    return _model(nodes, inits, 2, TensorProto.FLOAT, 17)


def _spec(boxes: list[tuple[float, float]], threshold: float, n_out: int = 1) -> str:
    """Unsafe: x in the boxes and Y_0 >= threshold."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(len(boxes)))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    text += "".join(f"(assert (>= X_{i} {a!r}))\n(assert (<= X_{i} {b!r}))\n"
                    for i, (a, b) in enumerate(boxes))
    return text + f"(assert (>= Y_0 {threshold!r}))\n"


def _session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _check_counterexamples(data: bytes, result, prop, boxes, threshold: float) -> None:
    sess = _session(data)
    assert result.counterexamples
    for cex in result.counterexamples:
        x = np.asarray(cex.x, dtype=np.float32)
        assert all(a <= float(v) <= b for v, (a, b) in zip(x, boxes, strict=True)), x
        y = sess.run(None, {"X": x.reshape(1, -1)})[0].ravel()
        assert y[0] >= threshold, (x, y)
        assert prop.violated_by(x, y, tol=0.0)


@pytest.mark.parametrize("name", NAMES)
def test_true_property_is_verified_and_violated_one_falsified(name: str):
    data = _identity_model(name)
    model = load_model(data)
    boxes = list(IDENTITIES[name][1:])
    safe = parse_vnnlib(_spec(boxes, 1.5), 2, 1)
    result = verify(model, safe, Settings(timeout=10))
    assert result.verdict == "verified", result.message
    unsafe = parse_vnnlib(_spec(boxes, 1.0), 2, 1)
    result = verify(model, unsafe, Settings(timeout=10))
    assert result.verdict == "falsified", result.message
    _check_counterexamples(data, result, unsafe, boxes, 1.0)


P = float(np.float32(0.3137))  # the planted point: not a centre, corner or dyadic midpoint


def _bump(name: str, n: int) -> bytes:
    """y (1, 1) from s = K (x - P) (n = 1) or K (x_1 + ... + x_n - n P): a bump of y = 1
    around s = 0, y <= 0 outside it:

    - Sign:  (sign(s + 1) - sign(s - 1)) / 2, K = 1e4: 1 iff |x - P| < 1e-4
    - Floor: floor(1.5 - |s|), K = 1e4: 1 iff |x - P| <= 0.5e-4
    - Ceil:  ceil(-|s|) + 1, K = 1e4: 1 iff |x - P| < 1e-4
    - Round: round(1 - |s|), K = 1e4: 1 iff |x - P| < 0.5e-4 (round(0.5) = 0)
    - Point: floor(1 - |s|), K = 1e4: 1 only where fl(1 - |s|) = 1, the value floor takes
      at its jump: at x = P alone (n = 1; (x - P) * K is 0 there, and 3e-4 one ulp away)
    """
    inits: list = []
    nodes: list = []

    def const(value: float | np.ndarray) -> str:
        key = f"c{len(inits)}"
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), key))
        return key

    def op(kind: str, *ins: str) -> str:
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(kind, list(ins), [out]))
        return out

    K = 1e4
    total = "X" if n == 1 else op("MatMul", "X", const(np.ones((n, 1))))
    s = op("Mul", op("Sub", total, const(n * P)), const(K))
    a = op("Abs", s)
    if name == "Sign":
        up, down = op("Sign", op("Add", s, const(1.0))), op("Sign", op("Sub", s, const(1.0)))
        y = op("Mul", op("Sub", up, down), const(0.5))
    elif name == "Floor":
        y = op("Floor", op("Sub", const(1.5), a))
    elif name == "Ceil":
        y = op("Add", op("Ceil", op("Neg", a)), const(1.0))
    elif name == "Round":
        y = op("Round", op("Sub", const(1.0), a))
    else:
        y = op("Floor", op("Sub", const(1.0), a))
    nodes.append(helper.make_node("Identity", [y], ["Y"]))
    return _model(nodes, inits, n, TensorProto.FLOAT, 17)


BUMPS = [(name, n) for name in [*NAMES, "Point"] for n in (1, 20) if (name, n) != ("Point", 20)]
BUMP_IDS = [f"{name}-{n}d" for name, n in BUMPS]


@pytest.mark.parametrize("name,n", BUMPS, ids=BUMP_IDS)
def test_planted_counterexample_is_real_and_hidden(name: str, n: int):
    sess = _session(_bump(name, n))

    def y(x: np.ndarray) -> float:
        return float(sess.run(None, {"X": x.astype(np.float32).reshape(1, -1)})[0].ravel()[0])

    assert y(np.full(n, P)) == 1.0
    xs = [*_rng("hidden", name, n).uniform(-1, 1, (300, n)), np.zeros(n), -np.ones(n),
          np.ones(n)]
    if name == "Point":  # one ulp away is already outside
        xs += [np.full(n, np.nextafter(np.float32(P), np.float32(d))) for d in (-1, 1)]
    assert max(y(x) for x in xs) <= 0.0


@pytest.mark.parametrize("name,n", BUMPS, ids=BUMP_IDS)
def test_hidden_counterexample_is_never_verified(name: str, n: int):
    """Unsafe: y >= 0.5, true only in the bump: `verified` would be unsound, `falsified`
    must carry a counterexample onnxruntime confirms; and y >= 1.5 (above y's maximum)
    must not be falsified."""
    data = _bump(name, n)
    model = load_model(data)
    boxes = [(-1.0, 1.0)] * n
    prop = parse_vnnlib(_spec(boxes, 0.5), n, 1)
    result = verify(model, prop, Settings(timeout=1.0))
    assert result.verdict in ("falsified", "unknown", "timeout"), result.message
    if result.verdict == "falsified":
        _check_counterexamples(data, result, prop, boxes, 0.5)
    control = verify(model, parse_vnnlib(_spec(boxes, 1.5), n, 1), Settings(timeout=1.0))
    assert control.verdict in ("verified", "unknown", "timeout"), control.message


# -- the Lipschitz engine --------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_lipschitz_engine_refuses_step_ops_by_name(name: str):
    model = load_model(_identity_model(name))
    with pytest.raises(ValueError, match=f"op {name} "):
        local_lipschitz(model, np.zeros(2), np.ones(2),
                        settings=LipschitzSettings(samples=16, attack_steps=2))
    with pytest.raises(ValueError, match=f"op {name} "):
        monotonicity(model, np.zeros(2), np.ones(2), output=0, input_index=0, samples=16)


@pytest.mark.parametrize("name", NAMES)
def test_no_finite_derivative_bound_across_a_jump(name: str):
    """What an engine asking for f' gets: [0, 0] off the jumps, [0, inf] across one (never
    autograd's 0 at a jump)."""
    op = _op(name)
    lo = torch.tensor([-0.5, 0.1, 0.6, 2.1], dtype=torch.float64)
    hi = torch.tensor([0.55, 0.2, 0.6, 2.2], dtype=torch.float64)
    d_lo, d_hi = op.derivative_range(lo, hi)
    assert (d_lo == 0).all()
    assert d_hi[0] == INF and (d_hi[1:] == 0).all()
    assert op.max_slope(lo, hi) == INF
    assert op.derivative((1, 1)) is None and not op.exact_derivative_range

"""Tests of the VNN-LIB reader (verifier.property.vnnlib)."""

from __future__ import annotations

import gzip
import random
import re
import time
from pathlib import Path

import numpy as np
import pytest

from verifier.property import SpecError, parse_vnnlib, parse_vnnlib_file
from verifier.property.core import Property
from verifier.property.vnnlib import parser as vnnlib_parser

BENCHMARKS = Path("/work/shared/benchmarks")
BENCH_FILES = sorted(BENCHMARKS.glob("**/*.vnnlib")) + sorted(BENCHMARKS.glob("**/*.vnnlib.gz"))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def declare(n_in: int, n_out: int) -> str:
    """Declarations of X_0..X_{n_in-1} and Y_0..Y_{n_out-1}, one per line."""
    xs = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    ys = "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    return xs + ys


def box(lo: list[float], up: list[float]) -> str:
    """Top-level asserts bounding X_i to [lo[i], up[i]], one per line."""
    return "".join(
        f"(assert (>= X_{i} {a}))\n(assert (<= X_{i} {b}))\n"
        for i, (a, b) in enumerate(zip(lo, up, strict=True))
    )


def assert_same(a: Property, b: Property) -> None:
    """Two properties are identical (sizes, cases, boxes, rows)."""
    assert (a.n_inputs, a.n_outputs, len(a.cases)) == (b.n_inputs, b.n_outputs, len(b.cases))
    for ca, cb in zip(a.cases, b.cases, strict=True):
        np.testing.assert_array_equal(ca.lower, cb.lower)
        np.testing.assert_array_equal(ca.upper, cb.upper)
        assert len(ca.disjuncts) == len(cb.disjuncts)
        for da, db in zip(ca.disjuncts, cb.disjuncts, strict=True):
            np.testing.assert_array_equal(da.C, db.C)
            np.testing.assert_array_equal(da.d, db.d)


def rows(prop: Property, case: int = 0) -> list[tuple[list[list[float]], list[float]]]:
    """The (C, d) of each disjunct of one case, as lists."""
    return [(dj.C.tolist(), dj.d.tolist()) for dj in prop.cases[case].disjuncts]


def spec_error(text: str, **kwargs: int) -> SpecError:
    """The SpecError raised by parsing ``text``."""
    with pytest.raises(SpecError) as info:
        parse_vnnlib(text, **kwargs)
    return info.value


# ----------------------------------------------------------------------------------------------
# the public benchmarks
# ----------------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    """Text of a benchmark file (gunzipped if needed)."""
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode()
    return path.read_text()


def _top_level_box(text: str) -> tuple[dict[int, float], dict[int, float]]:
    """Bounds of ``(assert (<= X_i c))``/``(assert (>= X_i c))`` lines, by a plain regex."""
    lo: dict[int, float] = {}
    up: dict[int, float] = {}
    for op, i, c in re.findall(r"\(assert \((<=|>=) X_(\d+) ([^\s()]+)\)\)", text):
        i, c = int(i), float(c)
        if op == ">=":
            lo[i] = max(lo.get(i, -np.inf), c)
        else:
            up[i] = min(up.get(i, np.inf), c)
    return lo, up


@pytest.mark.skipif(not BENCH_FILES, reason="benchmarks not available")
@pytest.mark.parametrize("path", BENCH_FILES, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_every_benchmark_parses(path: Path) -> None:
    text = _read(path)
    n_in = len(re.findall(r"declare-const X_\d+", text))
    n_out = len(re.findall(r"declare-const Y_\d+", text))
    prop = parse_vnnlib_file(path, n_inputs=n_in, n_outputs=n_out)
    assert (prop.n_inputs, prop.n_outputs) == (n_in, n_out)
    assert prop.cases
    for case in prop.cases:
        assert case.lower.shape == case.upper.shape == (n_in,)
        assert np.all(case.lower <= case.upper)
        for dj in case.disjuncts:
            assert dj.C.shape == (len(dj.d), n_out)
    lo, up = _top_level_box(text)
    if len(lo) == n_in and len(up) == n_in:  # the whole box is given by top-level atoms
        for case in prop.cases:
            np.testing.assert_array_equal(case.lower, [lo[i] for i in range(n_in)])
            np.testing.assert_array_equal(case.upper, [up[i] for i in range(n_in)])
    assert_same(prop, parse_vnnlib(text))


CLASS_SPECS = [p for p in BENCH_FILES if re.search(r"(eran|mnist_fc|vit)/", str(p))]


@pytest.mark.skipif(not CLASS_SPECS, reason="benchmarks not available")
@pytest.mark.parametrize("path", CLASS_SPECS, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_classification_specs_have_nine_single_row_disjuncts(path: Path) -> None:
    text = _read(path)
    pairs = re.findall(r"\(and \(>= Y_(\d+) Y_(\d+)\)\)", text)
    assert len(pairs) == text.count("(and") == 9
    label = int(pairs[0][1])
    prop = parse_vnnlib_file(path)
    assert len(prop.cases) == 1
    disjuncts = prop.cases[0].disjuncts
    assert len(disjuncts) == 9
    for (other, lab), dj in zip(pairs, disjuncts, strict=True):
        assert int(lab) == label
        expected = np.zeros((1, 10))
        expected[0, label] = 1.0
        expected[0, int(other)] = -1.0
        np.testing.assert_array_equal(dj.C, expected)
        np.testing.assert_array_equal(dj.d, [0.0])


@pytest.mark.skipif(not BENCH_FILES, reason="benchmarks not available")
def test_acasxu_properties_exactly() -> None:
    p1 = parse_vnnlib_file(BENCHMARKS / "acasxu/vnnlib/prop_1.vnnlib")
    np.testing.assert_array_equal(p1.cases[0].lower, [0.6, -0.5, -0.5, 0.45, -0.5])
    np.testing.assert_array_equal(p1.cases[0].upper, [0.679857769, 0.5, 0.5, 0.5, -0.45])
    assert rows(p1) == [([[-1.0, 0.0, 0.0, 0.0, 0.0]], [-3.991125645861615])]
    p2 = parse_vnnlib_file(BENCHMARKS / "acasxu/vnnlib/prop_2.vnnlib")  # (<= Y_j Y_0), j=1..4
    expected = [
        [1.0 if k == j else (-1.0 if k == 0 else 0.0) for k in range(5)] for j in (1, 2, 3, 4)
    ]
    assert rows(p2) == [(expected, [0.0] * 4)]
    p9 = parse_vnnlib_file(BENCHMARKS / "acasxu/vnnlib/prop_9.vnnlib")  # or of (<= Y_j Y_3)
    assert len(p9.cases) == 1
    got = rows(p9)
    assert [c for c, _ in got] == [
        [[1.0 if k == j else (-1.0 if k == 3 else 0.0) for k in range(5)]] for j in (0, 1, 2, 4)
    ]
    assert all(d == [0.0] for _, d in got)


@pytest.mark.skipif(not BENCH_FILES, reason="benchmarks not available")
def test_test_small_box_inside_disjunct() -> None:
    prop = parse_vnnlib_file(BENCHMARKS / "test/test_small.vnnlib")
    assert (prop.n_inputs, prop.n_outputs, len(prop.cases)) == (1, 1, 1)
    assert prop.cases[0].lower.tolist() == [-1.0] and prop.cases[0].upper.tolist() == [1.0]
    assert rows(prop) == [([[-1.0]], [-100.0])]
    assert prop.violated_by([0.5], [150.0]) and not prop.violated_by([0.5], [50.0])


# ----------------------------------------------------------------------------------------------
# hand-written forms
# ----------------------------------------------------------------------------------------------


def test_single_output_atom_and_box() -> None:
    prop = parse_vnnlib(declare(2, 2) + box([0, -1], [1, 2]) + "(assert (<= Y_0 -1))\n")
    assert (prop.n_inputs, prop.n_outputs, len(prop.cases)) == (2, 2, 1)
    assert prop.cases[0].lower.tolist() == [0.0, -1.0]
    assert prop.cases[0].upper.tolist() == [1.0, 2.0]
    assert rows(prop) == [([[1.0, 0.0]], [-1.0])]
    assert prop.cases[0].lower.dtype == np.float64


def test_conjunction_of_top_level_atoms_in_file_order() -> None:
    text = (
        declare(1, 3)
        + box([0], [1])
        + (
            "(assert (>= Y_1 2.5))\n(assert (<= Y_0 Y_2))\n"
            "(assert (>= Y_2 Y_1))\n(assert (< Y_0 4))\n"
        )
    )
    assert rows(parse_vnnlib(text)) == [
        (
            [[0.0, -1.0, 0.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [1.0, 0.0, 0.0]],
            [-2.5, 0.0, 0.0, 4.0],
        )
    ]


def test_or_of_ands_of_outputs() -> None:
    text = (
        declare(1, 2)
        + box([0], [1])
        + ("(assert (or\n  (and (>= Y_0 1) (<= Y_1 2))\n  (and (> Y_1 Y_0))\n  (<= Y_0 -3)\n))\n")
    )
    assert rows(parse_vnnlib(text)) == [
        ([[-1.0, 0.0], [0.0, 1.0]], [-1.0, 2.0]),
        ([[1.0, -1.0]], [0.0]),
        ([[1.0, 0.0]], [-3.0]),
    ]


def test_equal_bounds_integers_scientific_comments_tabs_multiline() -> None:
    text = (
        "; a comment line\n"
        "(declare-const X_0 Real) ; trailing comment\n"
        "(declare-const\tX_1\tReal)\n"
        "(declare-const Y_0 Real)\n"
        "(assert (<= X_0 3))   ; integer\n"
        "(assert (>= X_0 3))\n"
        "(assert\n\t(>=\n\t\tX_1\n\t\t1e-05))\n"
        "(assert (<= X_1 -3.5E+2))\n"
        "(assert (<= Y_0 +2.))\n"
    )
    err = spec_error(text)  # 1e-05 > -350: empty box on X_1, reported on the later bound
    assert err.line == 11 and "X_1 has lower bound 1e-05 above its upper bound -350.0" in str(err)
    prop = parse_vnnlib(text.replace("-3.5E+2", "3.5E+2"))
    assert prop.cases[0].lower.tolist() == [3.0, 1e-05]
    assert prop.cases[0].upper.tolist() == [3.0, 350.0]
    assert rows(prop) == [([[1.0]], [2.0])]
    crlf = text.replace("-3.5E+2", "3.5E+2").replace("\n", "\r\n")
    assert_same(parse_vnnlib(crlf), prop)
    assert_same(
        parse_vnnlib("( assert (<= Y_0 2))".join(crlf.rsplit("(assert (<= Y_0 +2.))"))), prop
    )


def test_linear_output_terms() -> None:
    text = (
        declare(1, 3)
        + box([0], [1])
        + (
            "(assert (<= (+ Y_0 (* 2.0 Y_1)) 3))\n"
            "(assert (>= (- Y_0 Y_2) 0.5))\n"
            "(assert (<= (- Y_1) (* Y_2 4) (/ 1 2)))\n"  # chain: -y1 <= 4 y2 and 4 y2 <= 1/2
            "(assert (= (+ Y_0 1) Y_2))\n"
        )
    )
    assert rows(parse_vnnlib(text)) == [
        (
            [
                [1.0, 2.0, 0.0],
                [-1.0, 0.0, 1.0],
                [0.0, -1.0, -4.0],
                [0.0, 0.0, 4.0],
                [1.0, 0.0, -1.0],
                [-1.0, 0.0, 1.0],
            ],
            [3.0, -0.5, 0.0, 0.5, -1.0, 1.0],
        )
    ]


def test_input_atoms_written_in_other_ways() -> None:
    text = declare(2, 1) + (
        "(assert (<= 0 X_0 (/ 1 4)))\n"  # chain: 0 <= X_0 <= 0.25
        "(assert (and (>= (* 2 X_1) -1) (<= (+ X_1 1) 3)))\n"  # nested and at top level
        "(assert (<= Y_0 0))\n"
    )
    prop = parse_vnnlib(text)
    assert prop.cases[0].lower.tolist() == [0.0, -0.5]
    assert prop.cases[0].upper.tolist() == [0.25, 2.0]
    assert rows(prop) == [([[1.0]], [0.0])]


def test_no_output_constraint_means_every_output_is_unsafe() -> None:
    prop = parse_vnnlib(declare(2, 3) + box([0, 0], [1, 1]))
    (dj,) = prop.cases[0].disjuncts
    assert dj.C.shape == (0, 3) and dj.d.shape == (0,)
    assert dj.holds(np.array([1e9, -1e9, 0.0]))


def test_disjunction_of_input_boxes_with_top_level_outputs() -> None:
    """acasxu prop_6 style: one case per box, each with the same disjuncts."""
    text = declare(2, 2) + (
        "(assert (or\n"
        "    (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1))\n"
        "    (and (>= X_0 2) (<= X_0 3) (>= X_1 0) (<= X_1 1))\n"
        "))\n"
        "(assert (<= Y_1 Y_0))\n"
    )
    prop = parse_vnnlib(text)
    assert [c.lower.tolist() for c in prop.cases] == [[0.0, 0.0], [2.0, 0.0]]
    assert [c.upper.tolist() for c in prop.cases] == [[1.0, 1.0], [3.0, 1.0]]
    assert rows(prop, 0) == rows(prop, 1) == [([[-1.0, 1.0]], [0.0])]


def test_terms_with_own_boxes_are_grouped_by_identical_box() -> None:
    text = declare(2, 1) + (
        "(assert (>= X_1 0))\n"
        "(assert (<= X_1 5))\n"
        "(assert (or\n"
        "  (and (>= X_0 0) (<= X_0 1) (<= X_1 2) (>= Y_0 1))\n"
        "  (and (>= X_0 1) (<= X_0 2) (>= Y_0 2))\n"
        "  (and (<= X_0 1) (>= X_0 0) (<= X_1 2) (<= Y_0 -1))\n"
        "  (and (>= X_0 1) (<= X_0 2) (>= Y_0 3))\n"
        "))\n"
    )
    prop = parse_vnnlib(text)
    assert len(prop.cases) == 2
    assert prop.cases[0].lower.tolist() == [0.0, 0.0]
    assert prop.cases[0].upper.tolist() == [1.0, 2.0]  # top-level X_1 <= 5 tightened to 2
    assert rows(prop, 0) == [([[-1.0]], [-1.0]), ([[1.0]], [-1.0])]
    assert prop.cases[1].lower.tolist() == [1.0, 0.0]
    assert prop.cases[1].upper.tolist() == [2.0, 5.0]
    assert rows(prop, 1) == [([[-1.0]], [-2.0]), ([[-1.0]], [-3.0])]


def test_dnf_product_of_asserts() -> None:
    text = (
        declare(1, 2)
        + box([0], [1])
        + (
            "(assert (or (>= Y_0 1) (>= Y_0 2)))\n"
            "(assert (<= Y_1 7))\n"
            "(assert (or (and (<= Y_1 3)) (and (<= Y_1 4) (<= Y_0 9))))\n"
        )
    )
    prop = parse_vnnlib(text)
    assert len(prop.cases) == 1
    assert rows(prop) == [
        ([[-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [-1.0, 7.0, 3.0]),
        ([[-1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], [-1.0, 7.0, 4.0, 9.0]),
        ([[-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [-2.0, 7.0, 3.0]),
        ([[-1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], [-2.0, 7.0, 4.0, 9.0]),
    ]


def test_nested_or_inside_and_is_expanded() -> None:
    text = (
        declare(1, 2)
        + box([0], [1])
        + ("(assert (and (or (<= Y_0 1) (<= Y_1 2)) (>= Y_0 -5) (or true false)))\n")
    )
    assert rows(parse_vnnlib(text)) == [
        ([[1.0, 0.0], [-1.0, 0.0]], [1.0, 5.0]),
        ([[0.0, 1.0], [-1.0, 0.0]], [2.0, 5.0]),
    ]


def test_constant_false_assert_gives_no_cases() -> None:
    prop = parse_vnnlib(declare(1, 1) + box([0], [1]) + "(assert (or))\n")
    assert prop.cases == ()


def test_product_above_one_million_terms_is_refused() -> None:
    terms = " ".join(f"(<= Y_0 {k})" for k in range(1001))
    text = declare(1, 1) + box([0], [1]) + f"(assert (or {terms}))\n(assert (or {terms}))\n"
    err = spec_error(text)
    assert err.line == 6 and "1002001" in str(err)


def test_product_limit_inside_an_and(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vnnlib_parser, "MAX_TERMS", 8)
    ors = "(or (<= Y_0 1) (<= Y_0 2) (<= Y_0 3))"
    text = declare(1, 1) + box([0], [1]) + f"(assert\n (and {ors} {ors}))\n"
    err = spec_error(text)
    assert err.line == 6 and "9 disjuncts" in str(err)


def test_str_and_bytes_give_the_same_property() -> None:
    text = declare(2, 2) + box([0, 1], [1, 2]) + "(assert (>= Y_0 Y_1))\n"
    assert_same(parse_vnnlib(text), parse_vnnlib(text.encode()))


def test_declared_sizes_are_checked() -> None:
    text = declare(5, 2) + box([0] * 5, [1] * 5) + "(assert (<= Y_0 0))\n"
    parse_vnnlib(text, n_inputs=5, n_outputs=2)
    err = spec_error(text, n_inputs=784)
    assert "declares 5 inputs (X_0..X_4) but the model has 784" in str(err)
    assert err.line == 5
    err = spec_error(text, n_inputs=5, n_outputs=10)
    assert "declares 2 outputs (Y_0..Y_1) but the model has 10" in str(err)


# ----------------------------------------------------------------------------------------------
# malformed input
# ----------------------------------------------------------------------------------------------

# lines 1-4 declare X_0, X_1, Y_0, Y_1; lines 5-8 bound X_0 then X_1; line 9 is the output atom
GOOD = declare(2, 2) + box([0, 0], [1, 1]) + "(assert (<= Y_0 Y_1))\n"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (GOOD + "(assert (or\n (and (<= Y_0 1)\n", 10, "never closed"),
        (GOOD.replace("(assert (<= X_0 1))", "(assert (<= X_0 1)"), 6, "not closed before"),
        (GOOD + "(assert (<= Y_0 1)))\n", 10, "unexpected ')'"),
        (GOOD + "\n(assert (<= Y_0 1.2.3))\n", 11, "invalid number '1.2.3'"),
        (GOOD + "(assert (and (<= Y_0 --1)))\n", 10, "invalid number '--1'"),
        (GOOD + "(assert (<= Y_0 1e999))\n", 10, "out of range"),
        (GOOD + "(assert (<= Y_0 ))\n", 10, "expected a second operand after '<=', found ')'"),
        (GOOD + "(assert (<= ))\n", 10, "expected a number or variable after '<=', found ')'"),
        (GOOD + "(assert (>= Z_1 0))\n", 10, "unknown variable 'Z_1'"),
        (GOOD + "(assert (>= Y_7 0))\n", 10, "Y_7 is not declared (declared: Y_0..Y_1)"),
        (GOOD + "(assert (or (and (>= X_9 0) (<= Y_0 1))))\n", 10, "X_9 is not declared"),
        (GOOD + "(assert (<= (+ Y_0 Y_3) 0))\n", 10, "Y_3 is not declared"),
        (GOOD + "(assert (<= X_0 Y_0))\n", 10, "mixes input X_0 with output Y_0"),
        (GOOD + "(assert (<= X_0 X_1))\n", 10, "relates inputs X_0 and X_1"),
        (GOOD + "(assert (<= (* Y_0 Y_1) 0))\n", 10, "not linear"),
        (GOOD + "(assert (not (<= Y_0 0)))\n", 10, "expected a formula"),
        (GOOD + "(assert Y_0)\n", 10, "expected a formula"),
        (GOOD + "(assert (<= Y_0 1) (<= Y_1 1))\n", 10, "second formula"),
        (GOOD + "(check-sat)\n(assert)\n", 11, "expected a formula after '(assert'"),
        (GOOD + "(push 1)\n", 10, "expected a command"),
        (GOOD + "hello\n", 10, "expected '(' to start a command"),
        (GOOD + "(declare-const X_2 Int)\n", 10, "only Real variables"),
        (GOOD + "(declare-const W_2 Real)\n", 10, "X_<i> or Y_<j>"),
        (GOOD + "(declare-const X_1 Real)\n", 10, "X_1 is declared twice (lines 2 and 10)"),
        (GOOD + "(declare-const X_3 Real)\n", 10, "X_2 is not declared"),
        (GOOD + "(assert (<= Y_0 1)) (\n)\n", 11, "expected an operator after '('"),
        (GOOD + "( (<= Y_0 1))\n", 10, "expected an operator after '(', found '(<='"),
        (GOOD.replace("(assert (>= X_1 0))\n", ""), 2, "X_1 has no lower bound"),
        (GOOD.replace("(assert (<= X_0 1))\n", ""), 1, "X_0 has no upper bound"),
        (GOOD + "(assert (>= X_1 3))\n", 10, "X_1 has lower bound 3.0 above its upper bound 1.0"),
    ],
)
def test_malformed_input_names_the_line(text: str, line: int, fragment: str) -> None:
    err = spec_error(text)
    assert err.line == line, str(err)
    assert fragment in str(err)
    assert str(err).startswith(f"line {line}: ")


def test_error_inside_disjunct_box() -> None:
    text = declare(1, 1) + (
        "(assert (or\n"
        "  (and (>= X_0 0) (<= X_0 1) (<= Y_0 0))\n"
        "  (and (>= X_0 0) (<= Y_0 0))\n"
        "  (and (>= X_0 2) (<= X_0 1) (<= Y_0 0))\n"
        "))\n"
    )
    err = spec_error(text)
    assert err.line == 1 and "X_0 has no upper bound in disjunct 2" in str(err)
    err = spec_error(text.replace("(and (>= X_0 0) (<= Y_0 0))", "(and (>= X_0 0) (<= X_0 0))"))
    assert err.line == 6 and "in disjunct 3" in str(err)


def test_missing_declarations() -> None:
    err = spec_error("")
    assert err.line is None and "declares no inputs" in str(err)
    err = spec_error(declare(1, 0) + box([0], [1]))
    assert err.line is None and "declares no outputs" in str(err)
    err = spec_error(declare(1, 0) + box([0], [1]), n_outputs=3)
    assert "declares 0 outputs but the model has 3" in str(err)


def test_no_internal_exception_leaks_from_garbage() -> None:
    rng = random.Random(7)
    alphabet = "()XY_0123456789.-+e <=>andorassertdeclare-constReal;\n\t"
    pieces = [GOOD, "(assert (or (and (<= Y_0 1))))", "(declare-const X_9 Real)"]
    for _ in range(300):
        base = rng.choice(pieces)
        chars = list(base)
        for _ in range(rng.randint(1, 4)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(alphabet))
        if chars and rng.random() < 0.5:
            del chars[rng.randrange(len(chars))]
        text = "".join(chars)
        try:
            parse_vnnlib(text)
        except SpecError as err:
            assert err.line is None or 1 <= err.line <= text.count("\n") + 1
    with pytest.raises(SpecError):
        parse_vnnlib(b"\xff\xfe(assert")


# ----------------------------------------------------------------------------------------------
# streaming
# ----------------------------------------------------------------------------------------------


def nn4sys_like(n_terms: int, n_in: int, seed: int = 0) -> str:
    """An ``(or (and X-box Y-atom) ...)`` file with a few irregular spots."""
    rng = random.Random(seed)
    out = [declare(n_in, 2), "; generated\n(assert (or\n"]
    for t in range(n_terms):
        atoms = []
        for i in range(n_in):
            a = round(rng.uniform(-1, 1), rng.randint(1, 17))
            atoms.append(f"(>= X_{i} {a}) (<= X_{i} {a + rng.choice([0, 1e-3, 2.5e-7])!r})")
        atoms.append(f"(<= Y_{t % 2} {rng.uniform(-5, 5)!r})")
        sep = rng.choice([" ", "  ", "\t", "\n      "])
        line = "    (and " + sep.join(atoms) + ")"
        if t % 7 == 3:
            line += " ; comment (with parens) and ; more"
        if t % 11 == 5:
            line = line.replace("(and ", "(and (>= Y_0 Y_1) ")
        out.append(line + "\n")
    out.append("))\n")
    return "".join(out)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    text = nn4sys_like(300, 4)
    path = tmp_path_factory.mktemp("spec") / "gen.vnnlib"
    path.write_text(text)
    return path, text


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000, 1 << 20])
def test_streaming_equals_in_memory(generated: tuple[Path, str], chunk: int) -> None:
    path, text = generated
    assert path.stat().st_size > 64 * 1000
    reference = parse_vnnlib(text)
    assert len(reference.cases) == 300
    assert_same(parse_vnnlib_file(path, chunk_size=chunk), reference)
    assert_same(parse_vnnlib(text, chunk_size=chunk), reference)


def test_streaming_single_line_files_with_comments(tmp_path: Path) -> None:
    text = nn4sys_like(60, 3, seed=1)
    one_line = re.sub(r";[^\n]*", "", text).replace("\n", " ")
    with_comment = one_line + " ; trailing comment ( with ) parens " + "x" * 5000
    reference = parse_vnnlib(text)
    for body in (one_line, with_comment):
        path = tmp_path / "one.vnnlib"
        path.write_text(body)
        for chunk in (3, 50, 999, 1 << 16):
            assert_same(parse_vnnlib_file(path, chunk_size=chunk), reference)


def test_gzip_file(tmp_path: Path, generated: tuple[Path, str]) -> None:
    _, text = generated
    path = tmp_path / "gen.vnnlib.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert_same(parse_vnnlib_file(path, chunk_size=4096), parse_vnnlib(text))
    broken = tmp_path / "broken.vnnlib.gz"
    broken.write_bytes(gzip.compress(text.encode())[:-100])
    with pytest.raises(SpecError, match="cannot read"):
        parse_vnnlib_file(broken)
    with pytest.raises(SpecError, match="cannot read"):
        parse_vnnlib_file(tmp_path / "missing.vnnlib")


@pytest.mark.parametrize("chunk", [5, 333, 1 << 20])
def test_error_lines_do_not_depend_on_chunking(tmp_path: Path, chunk: int) -> None:
    text = nn4sys_like(200, 3, seed=2)
    lines = text.split("\n")
    target = next(
        i
        for i, line in enumerate(lines)
        if i > 150 and all(k in line for k in ("(and", "(>= X_1", "(<= X_2", "(<= Y_"))
    )
    # an empty box in one disjunct, inside a run of atoms: located by a second parse
    bad_box = lines.copy()
    bad_box[target] = bad_box[target].replace("(>= X_1", "(>= X_1 9) (>= X_1", 1)
    # a bad number
    bad_num = lines.copy()
    bad_num[target] = re.sub(r"\(<= X_2 [^)]*\)", "(<= X_2 1.2.3)", bad_num[target], count=1)
    for variant, fragment in ((bad_box, "X_1 has lower bound 9.0"), (bad_num, "'1.2.3'")):
        path = tmp_path / "bad.vnnlib"
        path.write_text("\n".join(variant))
        with pytest.raises(SpecError) as info:
            parse_vnnlib_file(path, chunk_size=chunk)
        assert info.value.line == target + 1, str(info.value)
        assert fragment in str(info.value)


def test_parse_speed_smoke(tmp_path: Path) -> None:
    """A loose guard against accidental slow paths (the real figures: bench/parse_speed.py)."""
    text = nn4sys_like(4000, 8, seed=3)
    path = tmp_path / "speed.vnnlib"
    path.write_text(text)
    start = time.perf_counter()
    prop = parse_vnnlib_file(path)
    elapsed = time.perf_counter() - start
    assert sum(len(c.disjuncts) for c in prop.cases) == 4000
    assert len(text) / elapsed > 1e6  # > 1 MB/s even on a loaded machine


def test_sizes_of_the_wrong_type_are_named() -> None:
    """A caller passing something other than a count (say, the model itself) is told so,
    not shown the object's repr in a size mismatch."""
    text = ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0))\n"
            "(assert (<= X_0 1))\n(assert (<= Y_0 0))")
    with pytest.raises(TypeError, match="n_inputs is the model's number of inputs"):
        parse_vnnlib(text, object())  # type: ignore[arg-type]
    assert parse_vnnlib(text, np.int64(1), 1).n_inputs == 1

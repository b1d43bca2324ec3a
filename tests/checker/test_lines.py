"""The rigorous 1-D line checks: sound lines are accepted, lines pushed past f by a tiny
amount (confirmed by dense sampling) are rejected."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checker.lines import SECOND_DERIVATIVE_BOUND, check_lines, slack
from tests.checker import proofgen as pg

OPS = ["Relu", "Sigmoid", "Tanh"]


@st.composite
def intervals(draw: st.DrawFn) -> tuple[str, float, float]:
    """An op and an interval: wide or narrow, around 0 or far in a tail."""
    op = draw(st.sampled_from(OPS))
    centre = draw(st.one_of(st.floats(-1, 1), st.floats(-40, 40)))
    width = 10 ** draw(st.floats(-6, 1.6))
    return op, centre - width / 2, centre + width / 2


def _grid(lo: float, hi: float) -> np.ndarray:
    """A dense grid of [lo, hi], with ReLU's kink 0 when inside."""
    return np.sort(np.append(np.linspace(lo, hi, 4001), [0.0] if lo < 0 < hi else []))


def _tight(op: str, lo: float, hi: float, a: float) -> tuple[float, float, float, float]:
    """For slope a: the extreme intercepts on a dense grid, the point where the lower one
    is reached, and the grid's error bound ``K h^2 / 8``."""
    grid = _grid(lo, hi)
    dev = pg.f(op, grid) - a * grid
    err = pg.SECOND_DERIVATIVE[op] * ((hi - lo) / 4000) ** 2 / 8 + 1e-12 * (1 + abs(a) * 40)
    return float(dev.min()), float(dev.max()), float(grid[np.argmin(dev)]), err


def _check(op: str, a: float, b: float, lo: float, hi: float, lower: bool) -> bool:
    arr = np.array
    return check_lines(op, arr([a]), arr([b]), arr([lo]), arr([hi]), lower) is None


@settings(max_examples=60, deadline=None)
@given(intervals(), st.floats(-0.3, 1.3))
def test_sampled_lines_accepted_and_pushed_lines_rejected(
        case: tuple[str, float, float], tilt: float) -> None:
    op, lo, hi = case
    fl, fh = pg.f(op, np.array([lo, hi]))
    a = float((fh - fl) / (hi - lo)) * tilt
    bmin, bmax, x_at, err = _tight(op, lo, hi, a)
    assert _check(op, a, bmin - err, lo, hi, lower=True)
    assert _check(op, a, bmax + err, lo, hi, lower=False)
    push = 1e-8 * (1 + abs(bmin) + abs(a) * max(abs(lo), abs(hi)))
    assert pg.f(op, np.array([x_at]))[0] < a * x_at + bmin + push  # invalid at a grid point
    assert not _check(op, a, bmin + push, lo, hi, lower=True)
    grid = _grid(lo, hi)
    x_up = float(grid[np.argmax(pg.f(op, grid) - a * grid)])
    assert pg.f(op, np.array([x_up]))[0] > a * x_up + bmax - push
    assert not _check(op, a, bmax - push, lo, hi, lower=False)


@pytest.mark.parametrize(("op", "lo", "hi"), [("Sigmoid", -6.0, -0.5), ("Sigmoid", 0.2, 9.0),
                                              ("Tanh", -3.0, -0.01), ("Tanh", 0.0, 2.5)])
def test_exact_tangents_and_chords_are_accepted(op: str, lo: float, hi: float) -> None:
    """Lines that touch f (tangent at the midpoint, chord through the ends) are accepted
    thanks to the charged slack; 1e-7 past, they are not."""
    m = (lo + hi) / 2
    d = float(pg.df(op, np.array([m]))[0])
    tangent_b = float(pg.f(op, np.array([m]))[0]) - d * m
    fl, fh = pg.f(op, np.array([lo, hi]))
    chord_a = float((fh - fl) / (hi - lo))
    chord_b = float(fl) - chord_a * lo
    convex = hi <= 0
    assert _check(op, d, tangent_b, lo, hi, lower=convex)
    assert _check(op, chord_a, chord_b, lo, hi, lower=not convex)
    assert not _check(op, d, tangent_b + (1e-7 if convex else -1e-7), lo, hi, lower=convex)
    assert not _check(op, chord_a, chord_b + (-1e-7 if convex else 1e-7), lo, hi,
                      lower=not convex)


def test_relu_lines() -> None:
    lo, hi = -1.0, 1.0
    assert _check("Relu", 0.5, 0.0, lo, hi, lower=True)
    assert _check("Relu", 0.5, 0.5, lo, hi, lower=False)
    assert not _check("Relu", 0.5, 0.49, lo, hi, lower=False)
    assert not _check("Relu", 0.5, 1e-9, lo, hi, lower=True)  # above relu at the kink
    assert _check("Relu", 0.0, 0.0, -2.0, -1.0, lower=False)
    assert not _check("Relu", 1.0, 0.0, -2.0, 0.5, lower=False)


def test_first_bad_neuron_is_reported_with_its_place() -> None:
    a = np.array([0.0, 0.25, 0.0])
    b = np.array([0.0, 0.5 + 1e-6, 0.5])
    lo, hi = np.full(3, -2.0), np.full(3, 2.0)
    bad = check_lines("Sigmoid", a, b, lo, hi, lower=True)
    assert bad is not None and bad.index == 1 and abs(bad.x) < 1e-2  # tangent at 0, moved up
    assert bad.why == "is above sigmoid"
    nan = check_lines("Tanh", a, np.array([0.0, np.nan, 0.0]), lo, hi, lower=True)
    assert nan is not None and nan.index == 1 and "not finite" in nan.why
    inf = check_lines("Tanh", a, b, lo, np.array([2.0, 2.0, np.inf]), lower=False)
    assert inf is not None and inf.index == 2


def test_slack_is_tiny() -> None:
    tol = slack(np.array([1.0]), np.array([0.5]), np.array([-10.0]), np.array([10.0]))
    assert 0 < tol[0] < 1e-9


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_second_derivative_bounds(op: str) -> None:
    """K bounds |f''| (finite differences on a fine grid, and the closed-form maximum)."""
    x = np.linspace(-10, 10, 200001)
    h = x[1] - x[0]
    second = np.diff(pg.f(op, x), 2) / h**2
    exact = 1 / (6 * np.sqrt(3)) if op == "Sigmoid" else 4 / (3 * np.sqrt(3))
    assert abs(np.abs(second).max() - exact) < 1e-4
    assert exact < SECOND_DERIVATIVE_BOUND[op]

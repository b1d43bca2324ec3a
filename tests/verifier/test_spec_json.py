"""Tests of the JSON specification reader (verifier.property.json_spec)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from verifier.property import SpecError, parse_json_spec
from verifier.property.core import Property


def robustness(**changes: Any) -> dict[str, Any]:
    """A valid robustness object with some keys changed (None removes a key)."""
    obj: dict[str, Any] = {
        "kind": "robustness",
        "center": [[0.5, 0.2], [0.99, 0.0]],
        "epsilon": 0.1,
        "norm": "inf",
        "label": 1,
        "n_outputs": 3,
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


def output_range(**changes: Any) -> dict[str, Any]:
    """A valid output_range object with some keys changed (None removes a key)."""
    obj: dict[str, Any] = {
        "kind": "output_range",
        "input": {"lower": [0, -1], "upper": [1, 2]},
        "unsafe": [
            [{"output": 0, "op": "<=", "value": 1.5}, {"output": 2, "op": ">=", "value": -1}],
            [{"output": {"coeffs": {"0": 1, "3": -2.5}}, "op": "<", "value": 0}],
        ],
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


def rows(prop: Property) -> list[tuple[list[list[float]], list[float]]]:
    """(C, d) of every disjunct of the single case, as lists."""
    (case,) = prop.cases
    return [(dj.C.tolist(), dj.d.tolist()) for dj in case.disjuncts]


def error(obj: Any, **kwargs: Any) -> SpecError:
    """The SpecError raised for ``obj``."""
    with pytest.raises(SpecError) as info:
        parse_json_spec(obj, **kwargs)
    return info.value


def test_robustness_box_and_disjuncts() -> None:
    prop = parse_json_spec(robustness(clip=[0, 1]))
    assert (prop.n_inputs, prop.n_outputs) == (4, 3)
    (case,) = prop.cases
    np.testing.assert_allclose(case.lower, [0.4, 0.1, 0.89, 0.0])
    np.testing.assert_allclose(case.upper, [0.6, 0.3, 1.0, 0.1])
    assert case.lower[3] == 0.0 and case.upper[2] == 1.0  # clipped exactly
    assert rows(prop) == [([[-1.0, 1.0, 0.0]], [0.0]), ([[0.0, 1.0, -1.0]], [0.0])]
    assert prop.violated_by([0.5, 0.2, 0.99, 0.0], [2.0, 1.0, 0.0])
    assert not prop.violated_by([0.5, 0.2, 0.99, 0.0], [0.0, 1.0, 0.5])


def test_robustness_without_clip_with_target_and_json_text() -> None:
    text = json.dumps(robustness(center=[1, 2], epsilon=0.5, target=0, norm=None))
    prop = parse_json_spec(text, n_inputs=2, n_outputs=3)
    (case,) = prop.cases
    assert case.lower.tolist() == [0.5, 1.5] and case.upper.tolist() == [1.5, 2.5]
    assert rows(prop) == [([[-1.0, 1.0, 0.0]], [0.0])]
    assert case.lower.dtype == np.float64


def test_robustness_per_input_clip_arrays() -> None:
    prop = parse_json_spec(robustness(center=[0.0, 0.5], clip=[[0.0, 0.45], [1.0, 0.52]]))
    assert prop.cases[0].lower.tolist() == [0.0, 0.45]
    assert prop.cases[0].upper.tolist() == [0.1, 0.52]


def test_output_range_exact_rows() -> None:
    prop = parse_json_spec(output_range(), n_inputs=2, n_outputs=4)
    (case,) = prop.cases
    assert case.lower.tolist() == [0.0, -1.0] and case.upper.tolist() == [1.0, 2.0]
    assert rows(prop) == [
        ([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]], [1.5, 1.0]),
        ([[1.0, 0.0, 0.0, -2.5]], [0.0]),
    ]


def test_output_range_ball_input_and_empty_conjunction() -> None:
    obj = output_range(input={"center": [[1.0], [2.0]], "epsilon": 0.25}, unsafe=[[]])
    prop = parse_json_spec(obj, n_outputs=2)
    (case,) = prop.cases
    assert case.lower.tolist() == [0.75, 1.75] and case.upper.tolist() == [1.25, 2.25]
    ((C, d),) = rows(prop)
    assert C == [] and d == []
    assert case.disjuncts[0].C.shape == (0, 2)
    assert prop.violated_by([1.0, 2.0], [123.0, -4.0])


@pytest.mark.parametrize(
    ("obj", "kwargs", "path", "fragment"),
    [
        (robustness(norm="2"), {}, "norm", "only the L-infinity norm"),
        (robustness(norm=1), {}, "norm", "only the L-infinity norm"),
        (robustness(center=[[1, 2], [3]]), {}, "center[1]", "expected 2 elements"),
        (robustness(center=[1, "a"]), {}, "center[1]", "expected a number"),
        (robustness(center=[1, True]), {}, "center[1]", "expected a number"),
        (robustness(center=[]), {}, "center", "at least one number"),
        (robustness(epsilon=-0.1), {}, "epsilon", "non-negative"),
        (robustness(label=3), {}, "label", "out of range (expected 0..2)"),
        (robustness(label=1.5), {}, "label", "expected an integer"),
        (robustness(target=1), {}, "target", "must differ from label"),
        (robustness(clip=[1, 0]), {}, "clip", "lower clip bound above upper"),
        (robustness(clip=[2, 3]), {}, "clip", "lies outside the clip range"),
        (robustness(clip=[0]), {}, "clip", "expected [lower, upper]"),
        (robustness(center=None), {}, "center", "missing"),
        (robustness(epsilion=2), {}, "epsilion", "unknown key"),
        (robustness(n_outputs=None), {}, "n_outputs", "number of outputs is unknown"),
        (robustness(), {"n_outputs": 5}, "n_outputs", "is 3 but the model has 5"),
        (robustness(), {"n_inputs": 784}, "center", "has 4 values but the model has 784"),
        (robustness(kind="fairness"), {}, "kind", 'expected "robustness" or'),
        (output_range(), {}, "n_outputs", "number of outputs is unknown"),
        (
            output_range(unsafe=[[{"output": 0, "op": "==", "value": 1}]]),
            {"n_outputs": 4},
            "unsafe[0][0].op",
            "expected one of <=, >=",
        ),
        (
            output_range(unsafe=[[], [{"output": 0, "op": "<="}]]),
            {"n_outputs": 4},
            "unsafe[1][0].value",
            "missing",
        ),
        (
            output_range(unsafe=[[{"output": 7, "op": "<=", "value": 1}]]),
            {"n_outputs": 4},
            "unsafe[0][0].output",
            "out of range (expected 0..3)",
        ),
        (
            output_range(unsafe=[[{"output": {"coeffs": {"x": 1}}, "op": "<=", "value": 1}]]),
            {"n_outputs": 4},
            "unsafe[0][0].output.coeffs.x",
            "expected an output index",
        ),
        (
            output_range(unsafe=[[{"output": {"coeffs": {}}, "op": "<=", "value": 1}]]),
            {"n_outputs": 4},
            "unsafe[0][0].output.coeffs",
            "at least one",
        ),
        (output_range(unsafe=[]), {"n_outputs": 4}, "unsafe", "non-empty list"),
        (output_range(unsafe=[{"a": 1}]), {"n_outputs": 4}, "unsafe[0]", "list of constraints"),
        (
            output_range(input={"lower": [0, 3], "upper": [1, 2]}),
            {"n_outputs": 4},
            "input.lower[1]",
            "above the upper bound",
        ),
        (
            output_range(input={"lower": [0], "upper": [1, 2]}),
            {"n_outputs": 4},
            "input.upper",
            "has 2 values but lower has 1",
        ),
        (output_range(input=[0, 1]), {"n_outputs": 4}, "input", "expected an object"),
        ([1, 2], {}, "(root)", "expected an object"),
    ],
)
def test_errors_name_the_json_path(
    obj: Any, kwargs: dict[str, Any], path: str, fragment: str
) -> None:
    err = error(obj, **kwargs)
    assert err.path == path
    assert str(err).startswith(f"{path}: ")
    assert fragment in str(err)
    assert err.line is None


def test_invalid_json_text_reports_the_line() -> None:
    err = error('{"kind": "robustness",\n "center": [1, 2,]}')
    assert err.line == 2 and "invalid JSON" in str(err)

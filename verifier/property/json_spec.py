"""JSON specifications -> :class:`verifier.property.core.Property`.

``parse_json_spec(obj_or_text, n_inputs=None, n_outputs=None)`` accepts a dict (already decoded)
or JSON text (str/bytes).  Inputs and outputs are flat vectors in row-major order; nested lists
are flattened row-major.  The number of outputs comes from the ``n_outputs`` argument or an
``"n_outputs"`` key (both, if given, must agree); the number of inputs from the input data (and
must equal ``n_inputs`` when that is given).  Keys ``name``, ``description`` and ``comment`` are
ignored; any other unknown key is an error.

Robustness (local, L-infinity)::

    {"kind": "robustness", "center": [...], "epsilon": 0.01, "norm": "inf", "label": 3,
     "clip": [0, 1], "target": null}

The input box is ``[center - epsilon, center + epsilon]``, intersected with ``clip`` when given
(two numbers, or two arrays shaped like ``center``).  It is unsafe when some other class ``j``
scores at least as high as ``label``: one disjunct per ``j != label`` with the row
``y_label - y_j <= 0``; with an integer ``target`` only ``j = target`` is considered.  ``norm``
is optional and must be ``"inf"`` (other norms are not supported yet).

Output range::

    {"kind": "output_range",
     "input": {"lower": [...], "upper": [...]}      or  {"center": [...], "epsilon": 0.1},
     "unsafe": [[{"output": 0, "op": "<=", "value": 1.5}, ...], ...]}

``unsafe`` is a disjunction (outer list) of conjunctions (inner lists) of constraints.  A
constraint compares ``y[output]`` (or a linear combination ``{"coeffs": {"0": 1, "3": -1}}``)
with ``value`` using ``<=`` or ``>=`` (``<`` and ``>`` are treated as closed).  An empty inner
list means every output is unsafe for inputs in the box.

Every problem raises :class:`SpecError` whose message starts with the JSON path of the offending
value, e.g. ``unsafe[1][0].op: expected one of <=, >=, found '=='``; ``SpecError.path`` holds
that path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from verifier.property.core import Case, Conjunction, Property
from verifier.property.vnnlib import SpecError

__all__ = ["parse_json_spec"]

_IGNORED_KEYS = frozenset(["name", "description", "comment"])
_OPS = ("<=", ">=", "<", ">")


def _fail(path: str, message: str) -> SpecError:
    """A SpecError located at JSON ``path``."""
    where = path or "(root)"
    return SpecError(f"{where}: {message}", path=where)


def _join(path: str, key: str | int) -> str:
    """The JSON path of ``key`` inside ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonable(value: Any) -> bool:
    """Whether ``value`` can be shown as JSON."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    """``value`` as a JSON object."""
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected an object, found {_describe(value)}")
    return value


def _check_keys(obj: Mapping[str, Any], path: str, required: set[str], optional: set[str]) -> None:
    """Every required key is present and no unknown key is."""
    for key in sorted(required):
        if key not in obj:
            raise _fail(_join(path, key), "missing")
    allowed = required | optional | _IGNORED_KEYS
    for key in obj:
        if key not in allowed:
            raise _fail(
                _join(path, str(key)),
                f"unknown key (expected {', '.join(sorted(required | optional))})",
            )


def _number(value: Any, path: str) -> float:
    """A finite JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, f"expected a number, found {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _fail(path, f"expected a finite number, found {_describe(value)}")
    return number


def _integer(value: Any, path: str, limit: int | None = None) -> int:
    """A JSON integer in ``[0, limit)``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer, found {_describe(value)}")
    if value < 0 or (limit is not None and value >= limit):
        bound = f"0..{limit - 1}" if limit is not None else ">= 0"
        raise _fail(path, f"{value} is out of range (expected {bound})")
    return value


def _array(value: Any, path: str) -> np.ndarray:
    """A (possibly nested, rectangular) list of numbers, flattened row-major to float64."""
    if not isinstance(value, list | tuple):
        raise _fail(path, f"expected a list of numbers, found {_describe(value)}")
    out: list[float] = []
    _flatten(value, path, _shape(value), out)
    if not out:
        raise _fail(path, "expected at least one number")
    return np.asarray(out, dtype=np.float64)


def _shape(value: Any) -> tuple[int, ...]:
    """The shape of a nested list, following its first elements."""
    shape: list[int] = []
    while isinstance(value, list | tuple):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _flatten(value: Any, path: str, shape: tuple[int, ...], out: list[float]) -> None:
    """Append the numbers of ``value`` to ``out``, checking it has ``shape``."""
    if not shape:
        out.append(_number(value, path))
        return
    if not isinstance(value, list | tuple):
        raise _fail(path, f"expected a list, found {_describe(value)}")
    if len(value) != shape[0]:
        raise _fail(path, f"expected {shape[0]} elements like its siblings, found {len(value)}")
    for i, item in enumerate(value):
        _flatten(item, _join(path, i), shape[1:], out)


def _sizes(
    obj: Mapping[str, Any],
    n_inputs: int | None,
    n_outputs: int | None,
    n_found: int,
    input_path: str,
) -> int:
    """Check the input count against ``n_inputs`` and return the number of outputs."""
    if n_inputs is not None and n_found != n_inputs:
        raise _fail(input_path, f"has {n_found} values but the model has {n_inputs} inputs")
    declared = obj.get("n_outputs")
    if declared is not None:
        declared = _integer(declared, "n_outputs")
        if n_outputs is not None and declared != n_outputs:
            raise _fail("n_outputs", f"is {declared} but the model has {n_outputs} outputs")
    size = n_outputs if n_outputs is not None else declared
    if size is None:
        raise _fail(
            "n_outputs",
            "the number of outputs is unknown: pass n_outputs or add an 'n_outputs' key",
        )
    if size < 1:
        raise _fail("n_outputs", "the model must have at least one output")
    return size


def _ball(center: np.ndarray, eps: float, clip: Any, path: str) -> tuple[np.ndarray, np.ndarray]:
    """The L-infinity ball around ``center``, intersected with ``clip`` if given."""
    with np.errstate(over="ignore"):
        lower = center - eps
        upper = center + eps
    overflow = np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))
    if len(overflow):
        raise _fail(_join(path, "epsilon"), f"input {int(overflow[0])}: the ball around "
                    f"{float(center[overflow[0]])!r} with radius {eps!r} overflows to infinity")
    if clip is not None:
        lo, hi = _clip_bounds(clip, len(center), _join(path, "clip"))
        lower = np.maximum(lower, lo)
        upper = np.minimum(upper, hi)
        empty = np.flatnonzero(lower > upper)
        if len(empty):
            i = int(empty[0])
            raise _fail(
                _join(path, "clip"),
                f"input {i}: the ball [{float(center[i] - eps)!r}, "
                f"{float(center[i] + eps)!r}] lies outside the clip range",
            )
    return lower, upper


def _clip_bounds(clip: Any, n: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """``clip`` as per-input (lower, upper) arrays."""
    if not isinstance(clip, list | tuple) or len(clip) != 2:
        raise _fail(path, f"expected [lower, upper], found {_describe(clip)}")
    bounds = []
    for k, item in enumerate(clip):
        if isinstance(item, list | tuple):
            arr = _array(item, _join(path, k))
            if len(arr) != n:
                raise _fail(
                    _join(path, k), f"expected {n} values like the center, found {len(arr)}"
                )
        else:
            arr = np.full(n, _number(item, _join(path, k)))
        bounds.append(arr)
    bad = np.flatnonzero(bounds[0] > bounds[1])
    if len(bad):
        raise _fail(path, f"lower clip bound above upper at input {int(bad[0])}")
    return bounds[0], bounds[1]


def _epsilon(value: Any, path: str) -> float:
    """A non-negative radius."""
    eps = _number(value, path)
    if eps < 0:
        raise _fail(path, f"expected a non-negative number, found {_describe(value)}")
    return eps


def _robustness(obj: Mapping[str, Any], n_inputs: int | None, n_outputs: int | None) -> Property:
    """Property of a ``robustness`` object."""
    _check_keys(
        obj,
        "",
        {"kind", "center", "epsilon", "label"},
        {"norm", "clip", "target", "n_outputs"},
    )
    norm = obj.get("norm", "inf")
    if not (isinstance(norm, str) and norm.lower() in ("inf", "linf", "l_inf")):
        raise _fail(
            "norm",
            f'only the L-infinity norm ("inf") is supported for now, found {_describe(norm)}',
        )
    center = _array(obj["center"], "center")
    eps = _epsilon(obj["epsilon"], "epsilon")
    size = _sizes(obj, n_inputs, n_outputs, len(center), "center")
    label = _integer(obj["label"], "label", size)
    target = obj.get("target")
    if target is not None:
        target = _integer(target, "target", size)
        if target == label:
            raise _fail("target", f"must differ from label ({label})")
    lower, upper = _ball(center, eps, obj.get("clip"), "")
    others = [target] if target is not None else [j for j in range(size) if j != label]
    disjuncts = []
    for j in others:
        row = np.zeros((1, size))
        row[0, label] = 1.0
        row[0, j] = -1.0
        disjuncts.append(Conjunction(row, np.zeros(1)))
    return Property(len(center), size, (Case(lower, upper, tuple(disjuncts)),))


def _input_box(value: Any, path: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``input`` object of an output_range spec as (lower, upper)."""
    obj = _mapping(value, path)
    if "lower" in obj or "upper" in obj:
        _check_keys(obj, path, {"lower", "upper"}, set())
        lower = _array(obj["lower"], _join(path, "lower"))
        upper = _array(obj["upper"], _join(path, "upper"))
        if len(lower) != len(upper):
            raise _fail(
                _join(path, "upper"),
                f"has {len(upper)} values but lower has {len(lower)}",
            )
        bad = np.flatnonzero(lower > upper)
        if len(bad):
            i = int(bad[0])
            raise _fail(
                _join(_join(path, "lower"), i),
                f"lower bound {float(lower[i])!r} is above the upper bound {float(upper[i])!r}",
            )
        return lower, upper
    _check_keys(obj, path, {"center", "epsilon"}, {"clip", "norm"})
    norm = obj.get("norm", "inf")
    if not (isinstance(norm, str) and norm.lower() in ("inf", "linf", "l_inf")):
        raise _fail(
            _join(path, "norm"),
            f'only the L-infinity norm ("inf") is supported for now, found {_describe(norm)}',
        )
    center = _array(obj["center"], _join(path, "center"))
    eps = _epsilon(obj["epsilon"], _join(path, "epsilon"))
    return _ball(center, eps, obj.get("clip"), path)


def _constraint(value: Any, path: str, size: int) -> tuple[np.ndarray, float]:
    """One constraint as a row ``c @ y <= d``."""
    obj = _mapping(value, path)
    _check_keys(obj, path, {"output", "op", "value"}, set())
    op = obj["op"]
    if op not in _OPS:
        raise _fail(_join(path, "op"), f"expected one of <=, >=, found {_describe(op)}")
    bound = _number(obj["value"], _join(path, "value"))
    row = np.zeros(size)
    target = obj["output"]
    out_path = _join(path, "output")
    if isinstance(target, Mapping):
        _check_keys(target, out_path, {"coeffs"}, set())
        coeffs = _mapping(target["coeffs"], _join(out_path, "coeffs"))
        if not coeffs:
            raise _fail(_join(out_path, "coeffs"), "expected at least one output coefficient")
        for key, coef in coeffs.items():
            key_path = _join(_join(out_path, "coeffs"), str(key))
            j = _output_key(key, key_path, size)
            row[j] += _number(coef, key_path)
    else:
        row[_integer(target, out_path, size)] = 1.0
    if op in (">=", ">"):
        return -row + 0.0, -bound + 0.0
    return row, bound


def _output_key(key: Any, path: str, size: int) -> int:
    """An output index written as an object key (a decimal string, or an int)."""
    if isinstance(key, str):
        if not key.isdigit():
            raise _fail(path, 'expected an output index such as "0" as key')
        key = int(key)
    return _integer(key, path, size)


def _output_range(obj: Mapping[str, Any], n_inputs: int | None, n_outputs: int | None) -> Property:
    """Property of an ``output_range`` object."""
    _check_keys(obj, "", {"kind", "input", "unsafe"}, {"n_outputs"})
    lower, upper = _input_box(obj["input"], "input")
    in_path = "input.lower" if "lower" in obj["input"] else "input.center"
    size = _sizes(obj, n_inputs, n_outputs, len(lower), in_path)
    unsafe = obj["unsafe"]
    if not isinstance(unsafe, list) or not unsafe:
        raise _fail(
            "unsafe", f"expected a non-empty list of conjunctions, found {_describe(unsafe)}"
        )
    disjuncts = []
    for i, conj in enumerate(unsafe):
        conj_path = _join("unsafe", i)
        if not isinstance(conj, list):
            raise _fail(conj_path, f"expected a list of constraints, found {_describe(conj)}")
        rows = [_constraint(c, _join(conj_path, k), size) for k, c in enumerate(conj)]
        C = np.array([r for r, _ in rows], dtype=np.float64).reshape(len(rows), size)
        d = np.array([b for _, b in rows], dtype=np.float64)
        disjuncts.append(Conjunction(C, d))
    return Property(len(lower), size, (Case(lower, upper, tuple(disjuncts)),))


def parse_json_spec(
    obj_or_text: Mapping[str, Any] | str | bytes,
    n_inputs: int | None = None,
    n_outputs: int | None = None,
) -> Property:
    """Parse a JSON specification (see the module docstring) into a Property."""
    obj: Any = obj_or_text
    if isinstance(obj_or_text, str | bytes | bytearray):
        try:
            obj = json.loads(obj_or_text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
        except (UnicodeDecodeError, RecursionError) as exc:
            raise SpecError(f"invalid JSON: {exc}") from None
    obj = _mapping(obj, "")
    kind = obj.get("kind")
    if kind == "robustness":
        return _robustness(obj, n_inputs, n_outputs)
    if kind == "output_range":
        return _output_range(obj, n_inputs, n_outputs)
    if kind is None:
        raise _fail("kind", 'missing (expected "robustness" or "output_range")')
    raise _fail("kind", f'expected "robustness" or "output_range", found {_describe(kind)}')

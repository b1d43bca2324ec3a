"""ONNX op census of benchmark folders: which ops and attribute values the models use, and
whether nnverify's importer takes them.

    OMP_NUM_THREADS=1 python bench/op_census.py                # ../shared/benchmarks
    OMP_NUM_THREADS=1 python bench/op_census.py FOLDER ... --markdown

Every ``.onnx`` (or ``.onnx.gz``) file under the folders is read once; its nodes are counted
per op type, and the same bytes go to ``verifier.load_model``.  Per op it prints the families
(top-level folder names) and models using it, every attribute value seen, the opsets seen,
and a status:

* ``supported``: the importer builds it with a variable input (an op of
  ``verifier.ops.base.REGISTRY``, Softmax / LayerNormalization / Div lowered on the way;
  Shape and Constant are turned into constants whatever their input);
* ``constant inputs only``: the importer's FOLD_ONLY ops, evaluated at import when every
  input is constant and refused otherwise;
* ``refused``: any other op, and any op outside the default ONNX domain.

Per op it also counts the models and nodes where it reads a tensor computed from the
model's input ("on a variable", as the importer sees it: Shape's output is constant), which
is what decides a ``constant inputs only`` op; and the nodes ``load_model`` refused, with
its reason.  Per model it prints whether ``load_model`` succeeds, else the first line of its
error.  Attribute values the importer would refuse on a variable input
(``check_attributes``) are listed too, whether or not the node's input varies.
"""

from __future__ import annotations

import argparse
import gzip
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from verifier import load_model
from verifier.errors import UnsupportedOpError
from verifier.importer.onnx_attrs import check_attributes
from verifier.importer.onnx_import import FOLD_ONLY
from verifier.ops.base import REGISTRY

DEFAULT_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
DEFAULT_DOMAINS = ("", "ai.onnx")
ALWAYS_CONSTANT = {"Shape", "Constant"}  # folded whatever their input (static shape; none)
MAX_LIST = 6  # list attribute values longer than this are shortened
MAX_VALUES = 8  # distinct values shown per attribute


@dataclass
class OpUse:
    """Everything seen of one op type across the models."""

    models: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)
    nodes: int = 0
    variable_nodes: int = 0  # nodes with an input computed from the model's input
    variable: set[str] = field(default_factory=set)  # models with such a node
    opsets: set[int] = field(default_factory=set)
    attributes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    attr_refusals: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    import_refusals: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


@dataclass
class ModelResult:
    name: str  # path relative to its folder
    family: str
    opset: int | None
    n_nodes: int
    load: str  # "ok", or the first line of the importer's error


def find_models(folders: list[Path]) -> list[tuple[str, Path, Path]]:
    """(family, folder, path) of every ONNX file; the family is the top-level folder under
    ``folder`` (the folder itself when it holds an instances.csv or the file directly)."""
    found, seen = [], set()
    for folder in folders:
        paths = sorted(p for pat in ("*.onnx", "*.onnx.gz") for p in folder.rglob(pat))
        for path in paths:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            rel = path.relative_to(folder)
            own = (folder / "instances.csv").exists() or len(rel.parts) == 1
            found.append((folder.name if own else rel.parts[0], folder, path))
    return found


def op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


def status(op: str) -> str:
    """The importer's verdict on an op type (see the module docstring)."""
    if op in ALWAYS_CONSTANT or (op in REGISTRY and op not in FOLD_ONLY):
        return "supported"
    return "constant inputs only" if op in FOLD_ONLY else "refused"


def show(value: Any) -> str:
    """A short, stable text for one attribute value."""
    if isinstance(value, bytes):
        return repr(value.decode(errors="replace"))
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, onnx.TensorProto):
        arr = onnx.numpy_helper.to_array(value)
        text = f"tensor {arr.dtype}{list(arr.shape)}"
        return text + (f" {np.array2string(arr.ravel(), precision=4)}" if arr.size <= 4 else "")
    if isinstance(value, onnx.GraphProto):
        return f"<graph of {len(value.node)} nodes>"
    if isinstance(value, list):
        items = [show(v) for v in value]
        if len(items) > MAX_LIST:
            items = items[:MAX_LIST - 1] + [f"... ({len(value)} values)"]
        return "[" + ", ".join(items) + "]"
    return repr(value)


def show_attribute(attr: onnx.AttributeProto) -> str:
    """An attribute's value; Cast's ``to`` with its type name."""
    value = helper.get_attribute_value(attr)
    if attr.name == "to" and isinstance(value, int):
        return f"{value} ({onnx.TensorProto.DataType.Name(value)})"
    return show(value)


def census_model(family: str, folder: Path, path: Path,
                 ops: dict[str, OpUse]) -> ModelResult:
    """Count one model's nodes into ``ops`` and try the importer on the same bytes."""
    name = str(path.relative_to(folder))
    try:
        data = path.read_bytes()
        data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data  # .onnx.gz
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # a damaged file is a row of the census, not a crash
        return ModelResult(name, family, None, 0, f"unreadable: {type(exc).__name__}: {exc}")
    opsets = {o.domain or "": o.version for o in proto.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx"))
    varying = variable_tensors(proto.graph)
    for node in proto.graph.node:
        use = ops.setdefault(op_key(node), OpUse())
        use.models.add(name)
        use.families.add(family)
        use.nodes += 1
        if varying.intersection(node.input):
            use.variable_nodes += 1
            use.variable.add(name)
        use.opsets.add(opsets.get(node.domain or "", opset or 0))
        for attr in node.attribute:
            use.attributes[attr.name].add(show_attribute(attr))
        refusal = attribute_refusal(node, opset)
        if refusal:
            use.attr_refusals[refusal].add(name)
    load = try_load(data, name, {op_key(n) for n in proto.graph.node}, ops)
    return ModelResult(name, family, opset, len(proto.graph.node), load)


def variable_tensors(graph: onnx.GraphProto) -> set[str]:
    """The tensors computed from a graph input (not an initializer), as the importer sees
    them: the output of Shape is a constant (the input's static shape).  ONNX nodes are in
    topological order."""
    consts = {init.name for init in graph.initializer}
    varying = {i.name for i in graph.input if i.name not in consts}
    for node in graph.node:
        if node.op_type not in ALWAYS_CONSTANT and varying.intersection(node.input):
            varying.update(node.output)
    return varying


def attribute_refusal(node: onnx.NodeProto, opset: int | None) -> str | None:
    """The importer's attribute check on a node of a supported op (None if it passes)."""
    if node.domain not in DEFAULT_DOMAINS or node.op_type not in REGISTRY or opset is None:
        return None
    try:
        check_attributes(node, opset)
    except Exception as exc:  # OpFormError, or whatever else: the census reports it
        return str(exc)
    return None


def try_load(data: bytes, name: str, used: set[str], ops: dict[str, OpUse]) -> str:
    """'ok' (naming the patterns fused at import), or the first line of load_model's
    error; the nodes it refused go into ``ops`` with the reason."""
    try:
        model = load_model(data)
    except UnsupportedOpError as exc:
        keys = {key.split("::")[-1]: key for key in used}  # the error names no domain
        for op, _node, _pos, why in exc.problems:
            use = ops.setdefault(keys.get(op, op), OpUse())
            use.import_refusals[why.splitlines()[0]].add(name)
        return str(exc).splitlines()[0]
    except Exception as exc:  # ModelError, or an internal error: report, never crash
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {first}"
    fused = sorted({n.op_type for n in model.graph.nodes} - used)  # importer/patterns.py
    return "ok" + (f" (fused: {', '.join(fused)})" if fused else "")


def values_text(values: set[str]) -> str:
    shown = sorted(values)
    more = len(shown) - MAX_VALUES
    return ", ".join(shown[:MAX_VALUES]) + (f", ... (+{more} more)" if more > 0 else "")


def attributes_text(use: OpUse) -> list[str]:
    return [f"{a} = {{{values_text(v)}}}" for a, v in sorted(use.attributes.items())]


def refusals_text(use: OpUse) -> list[str]:
    """The importer's refusals of this op: at import (per model) and by the attribute check."""
    lines = [f"import: {why} ({len(m)} models)" for why, m in sorted(use.import_refusals.items())]
    return lines + [f"attribute check: {why} ({len(m)} models)"
                    for why, m in sorted(use.attr_refusals.items())]


def print_text(ops: dict[str, OpUse], models: list[ModelResult]) -> None:
    print(f"{len(models)} models, {len({m.family for m in models})} families, "
          f"{len(ops)} op types\n")
    for op, use in sorted(ops.items()):
        print(f"{op}  [{status(op)}]  {len(use.models)} models ({len(use.variable)} on a "
              f"variable), {use.nodes} nodes ({use.variable_nodes} on a variable), opsets "
              f"{sorted(use.opsets)}")
        print(f"  families: {', '.join(sorted(use.families))}")
        for line in attributes_text(use) + refusals_text(use):
            print(f"  {line}")
    print("\nmodels:")
    for m in models:
        print(f"  {m.family:<30} opset {m.opset!s:<4} {m.n_nodes:>5} nodes  {m.name}: {m.load}")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def print_markdown(ops: dict[str, OpUse], models: list[ModelResult]) -> None:
    print(f"{len(models)} models, {len({m.family for m in models})} families, "
          f"{len(ops)} op types.\n")
    print("| op | status | families | models (on a variable) | nodes (on a variable) | "
          "opsets | attributes seen |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for op, use in sorted(ops.items()):
        attrs = "<br>".join(cell(a) for a in attributes_text(use))
        print(f"| {op} | {status(op)} | {', '.join(sorted(use.families))} | "
              f"{len(use.models)} ({len(use.variable)}) | {use.nodes} ({use.variable_nodes}) | "
              f"{', '.join(map(str, sorted(use.opsets)))} | "
              f"{attrs or '-'} |")
    refused = [(op, line) for op, use in sorted(ops.items()) for line in refusals_text(use)]
    print("\n### Refusals by the importer\n")
    print("| op | refusal |\n| --- | --- |")
    for op, line in refused or [("-", "none")]:
        print(f"| {op} | {cell(line)} |")
    print("\n### Models\n")
    print("| family | model | opset | nodes | load_model |\n| --- | --- | --- | --- | --- |")
    for m in models:
        print(f"| {m.family} | {cell(m.name)} | {m.opset} | {m.n_nodes} | {cell(m.load)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[DEFAULT_FOLDER])
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    ops: dict[str, OpUse] = {}
    models = [census_model(family, folder, path, ops)
              for family, folder, path in find_models(args.folders)]
    (print_markdown if args.markdown else print_text)(ops, models)


if __name__ == "__main__":
    main()

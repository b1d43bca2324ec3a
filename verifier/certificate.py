"""Certificates (DESIGN.md: The certificate): what was proved, about which bytes, how.

Identical (model, property, settings) give identical certificates apart from timings.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from verifier import __version__
from verifier.importer.onnx_import import Model
from verifier.lipschitz import LipschitzResult
from verifier.verify import Result, Settings

if TYPE_CHECKING:
    from verifier.search.blackbox import OpaqueModel


def property_sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def make_certificate(model: Model | OpaqueModel, property_text: str | bytes, settings: Settings,
                     result: Result) -> dict[str, Any]:
    """A JSON-able certificate of one verification."""
    body = result.to_dict()
    return {
        "engine": {"name": "nnverify", "version": __version__},
        "model_sha256": model.sha256,
        "property_sha256": property_sha256(property_text),
        "verdict": result.verdict,
        "message": result.message,
        "bounds": body["bounds"],
        "counterexamples": body["counterexamples"],
        "methods": body["methods"],
        "settings": settings.to_dict(),
        "timings": {"seconds": result.seconds},
        "domains": result.domains,
    }


LIPSCHITZ_METHOD = {
    "upper": "CROWN on the Jacobian's backward graph (linked derivatives), min with the naive "
             "bound; input splitting when bab_leaves > 1",
    "lower": "largest gradient row norm at sampled and gradient-ascended points of the box",
    "naive": "product of the layers' operator norms",
}


def make_lipschitz_certificate(model: Model, property_text: str | bytes, lower: Any,
                               upper: Any, C: Any, result: LipschitzResult,
                               monotonicity: list[dict[str, Any]] | None = None
                               ) -> dict[str, Any]:
    """A JSON-able certificate of one local Lipschitz bracket: over the box [lower, upper]
    (flat inputs), ``result.lower <= max_x max_i ||(C J(x))_i|| <= result.upper`` with the
    rows' norm ``result.norm`` (l1 for "inf", l2 for "2"); C None means every output.
    With input splitting under a time budget the upper bound may vary between runs."""
    return {
        "kind": "lipschitz",
        "engine": {"name": "nnverify", "version": __version__},
        "model_sha256": model.sha256,
        "property_sha256": property_sha256(property_text),
        "verdict": "bounded",
        "region": {"lower": [float(v) for v in lower], "upper": [float(v) for v in upper]},
        "norm": result.norm,
        "C": None if C is None else [[float(v) for v in row] for row in C],
        "lower": result.lower,
        "upper": result.upper,
        "naive": result.naive,
        "argmax_input": result.argmax_input,
        "method": dict(LIPSCHITZ_METHOD, bab_leaves=result.details.get("bab_leaves", 1)),
        "settings": result.details.get("settings", {}),
        "monotonicity": monotonicity or [],
        "timings": {"seconds": result.seconds},
    }

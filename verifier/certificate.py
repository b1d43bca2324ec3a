"""Certificates (DESIGN.md: The certificate): what was proved, about which bytes, how.

Identical (model, property, settings) give identical certificates apart from timings.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import __version__
from .onnx_import import Model
from .verify import Result, Settings


def property_sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def make_certificate(model: Model, property_text: str | bytes, settings: Settings,
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

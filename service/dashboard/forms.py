"""The page forms turned into the API's request bodies, so a job made from a page goes
through exactly the code of ``POST /api/v1/jobs``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..api.schemas import JobCreate


class FormError(ValueError):
    """A form field is malformed; the message says which and why."""


def parse_numbers(text: str, name: str) -> list[float]:
    parts = [p for p in text.replace("\n", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise FormError(f"{name}: give at least one number")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise FormError(f"{name}: {text[:60]!r} is not a comma-separated list of numbers"
                        ) from None


def parse_number(text: str, name: str, kind: type = float) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        raise FormError(f"{name}: {text.strip()[:40]!r} is not a valid number") from None


def robustness_spec(center: str, epsilon: str, label: str, clip_lo: str,
                    clip_hi: str) -> dict[str, Any]:
    """The JSON robustness property of the robustness form."""
    spec: dict[str, Any] = {"kind": "robustness", "norm": "inf",
                            "center": parse_numbers(center, "centre"),
                            "epsilon": parse_number(epsilon, "epsilon"),
                            "label": parse_number(label, "label", int)}
    if clip_lo.strip() or clip_hi.strip():
        spec["clip"] = [parse_number(clip_lo or "-inf", "clip lower"),
                        parse_number(clip_hi or "inf", "clip upper")]
    return spec


def job_body(model_id: str, form: dict[str, str]) -> JobCreate:
    """The API body for the submission form: ``kind`` is ``vnnlib`` or ``robustness``."""
    if form.get("kind") == "robustness":
        prop: dict[str, Any] = {"json": robustness_spec(
            form.get("center", ""), form.get("epsilon", ""), form.get("label", ""),
            form.get("clip_lo", ""), form.get("clip_hi", ""))}
    else:
        # browsers send a textarea's line breaks as CRLF; store the text as pasted
        text = form.get("vnnlib", "").replace("\r\n", "\n")
        if not text.strip():
            raise FormError("VNN-LIB: paste the property text")
        prop = {"vnnlib": text}
    options = {"timeout": parse_number(form.get("timeout") or "60", "timeout")}
    try:
        return JobCreate.model_validate({"model_id": model_id, "property": prop,
                                         "options": options})
    except ValidationError as exc:
        raise FormError("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                  for e in exc.errors())) from None

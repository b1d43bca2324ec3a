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


def _vnnlib_text(form: dict[str, str], field: str = "vnnlib") -> str:
    # browsers send a textarea's line breaks as CRLF; store the text as pasted
    text = form.get(field, "").replace("\r\n", "\n")
    if not text.strip():
        raise FormError("VNN-LIB: paste the property text")
    return text


def lipschitz_body(model_id: str, form: dict[str, str]) -> dict[str, Any]:
    """The API body of the Lipschitz form: the region as centre + eps, or the first input
    box of a pasted VNN-LIB property (its centre + eps when eps is given)."""
    eps = form.get("eps", "").strip()
    params: dict[str, Any] = {"norm": form.get("norm") or "inf"}
    if eps:
        params["eps"] = parse_number(eps, "eps")
    if form.get("output", "").strip():
        params["output"] = parse_number(form["output"], "output", int)
    body: dict[str, Any] = {"model_id": model_id, "kind": "lipschitz", "lipschitz": params}
    if form.get("region") == "property":
        body["property"] = {"vnnlib": _vnnlib_text(form, "lip_vnnlib")}
    else:
        if not eps:
            raise FormError("eps: give the half-width of the box around the centre")
        params["center"] = parse_numbers(form.get("lip_center", ""), "centre")
    bab = form.get("bab") == "on"
    if bab and form.get("bab_seconds", "").strip():
        params["bab_seconds"] = parse_number(form["bab_seconds"], "splitting seconds")
    body["options"] = {"timeout": parse_number(form.get("timeout") or "30", "timeout"),
                       "bab": bab}
    return body


def job_body(model_id: str, form: dict[str, str]) -> JobCreate:
    """The API body for the submission forms: ``kind`` is ``vnnlib``, ``robustness`` or
    ``lipschitz``."""
    if form.get("kind") == "lipschitz":
        return _validated(lipschitz_body(model_id, form))
    if form.get("kind") == "robustness":
        prop: dict[str, Any] = {"json": robustness_spec(
            form.get("center", ""), form.get("epsilon", ""), form.get("label", ""),
            form.get("clip_lo", ""), form.get("clip_hi", ""))}
    else:
        prop = {"vnnlib": _vnnlib_text(form)}
    options = {"timeout": parse_number(form.get("timeout") or "60", "timeout")}
    return _validated({"model_id": model_id, "property": prop, "options": options})


def _validated(body: dict[str, Any]) -> JobCreate:
    try:
        return JobCreate.model_validate(body)
    except ValidationError as exc:
        raise FormError("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                  for e in exc.errors())) from None

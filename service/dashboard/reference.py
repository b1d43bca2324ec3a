"""The API reference page (``/docs``): the OpenAPI schema read into plain rows that a
template renders on the server, so the page needs no script and no CDN (it works offline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    description: str
    parameters: list[dict[str, str]]
    body: str | None  # the request body's media type and schema name
    responses: list[tuple[str, str, str]]  # status, description, schema name
    auth: bool
    anchor: str = ""


@dataclass
class Reference:
    title: str
    version: str
    description: str
    groups: dict[str, list[Operation]] = field(default_factory=dict)
    schemas: dict[str, list[tuple[str, str, bool]]] = field(default_factory=dict)


def schema_name(schema: dict[str, Any] | None) -> str:
    """A short name for a schema: its $ref's name, ``list of X``, its type."""
    if not schema:
        return ""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(schema_name(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {schema_name(schema.get('items'))}"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    return str(schema.get("type", "object"))


def _operation(method: str, path: str, op: dict[str, Any]) -> Operation:
    params = [{"name": p["name"], "in": p["in"], "type": schema_name(p.get("schema")),
               "required": "required" if p.get("required") else "optional",
               "description": p.get("description") or p.get("schema", {}).get("description", "")}
              for p in op.get("parameters", []) if p.get("in") != "header"]
    content = op.get("requestBody", {}).get("content", {})
    body = next((f"{media}: {schema_name(c.get('schema'))}" for media, c in content.items()),
                None)
    responses = []
    for status, resp in sorted(op.get("responses", {}).items()):
        media = resp.get("content", {})
        schema = next((schema_name(c.get("schema")) for c in media.values()), "")
        responses.append((status, resp.get("description", ""), schema))
    return Operation(method=method.upper(), path=path, summary=op.get("summary", ""),
                     description=op.get("description", ""), parameters=params, body=body,
                     responses=responses, auth=bool(op.get("security")),
                     anchor=f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""))


def api_reference(openapi: dict[str, Any]) -> Reference:
    """The schema's operations by tag, and its schemas' fields (name, type, required)."""
    info = openapi.get("info", {})
    ref = Reference(title=info.get("title", ""), version=info.get("version", ""),
                    description=info.get("description", ""))
    for path, item in openapi.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["other"])[0]
                ref.groups.setdefault(tag, []).append(_operation(method, path, op))
    for name, schema in sorted(openapi.get("components", {}).get("schemas", {}).items()):
        required = set(schema.get("required", []))
        ref.schemas[name] = [(prop, schema_name(s), prop in required)
                             for prop, s in schema.get("properties", {}).items()]
    return ref

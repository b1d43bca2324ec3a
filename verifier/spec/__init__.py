"""Specification readers: VNN-LIB files and the JSON form, both producing a Property."""

from verifier.spec.json_spec import parse_json_spec
from verifier.spec.vnnlib import SpecError, parse_vnnlib, parse_vnnlib_file

__all__ = ["SpecError", "parse_json_spec", "parse_vnnlib", "parse_vnnlib_file"]

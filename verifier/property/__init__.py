"""Properties: the Property a verification decides (``core``) and the two forms users write
it in, VNN-LIB files and JSON, each read into a Property."""

from verifier.property.core import Case, Conjunction, Property
from verifier.property.json_spec import parse_json_spec
from verifier.property.vnnlib import SpecError, parse_vnnlib, parse_vnnlib_file

__all__ = ["Case", "Conjunction", "Property", "SpecError", "parse_json_spec", "parse_vnnlib",
           "parse_vnnlib_file"]

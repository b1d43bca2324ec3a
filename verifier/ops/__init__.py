"""Every op module, imported so that each registers its classes (DESIGN.md: Ops)."""

from verifier.ops import base, bilinear, composite, linear, nonlinear, shape

__all__ = ["base", "bilinear", "composite", "linear", "nonlinear", "shape"]

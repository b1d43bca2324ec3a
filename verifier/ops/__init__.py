"""The ops, one class per op kind (DESIGN.md: Ops).  Every module of this package is
imported here so that its classes register themselves: a new op is a new module (or a new
class in one), and nothing else changes."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

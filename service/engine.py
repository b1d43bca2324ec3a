"""The service's calls into the engine: importing a model, parsing a property against it,
and turning a job's options into engine settings.  The API and the workers share these, so
a property accepted at job creation is read the same way when the job runs."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from verifier.importer.onnx_import import Model
from verifier.property import parse_json_spec, parse_vnnlib
from verifier.search.blackbox import OpaqueModel, load_or_opaque
from verifier.verify import Settings

PROPERTY_FORMATS = ("vnnlib", "json")
EngineModel = Model | OpaqueModel


def import_model(data: bytes) -> EngineModel:
    """The engine's model for ONNX bytes; where the engine refuses an op but onnxruntime
    runs the model, the model as onnxruntime runs it (verification then searches for
    counterexamples, or enumerates inputs read only as integers: search/blackbox.py).
    Raises verifier.errors.ModelError (the importer's reason when onnxruntime cannot run
    the model either)."""
    return load_or_opaque(data)


def canonical_property_text(fmt: str, value: Any) -> str:
    """The text stored for a property: VNN-LIB as given, JSON in a canonical form."""
    if fmt == "vnnlib":
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def parse_property(fmt: str, text: str, model: EngineModel) -> Any:
    """The engine's Property for stored text, checked against the model's sizes.

    Raises verifier.property.SpecError (a ValueError) saying what is wrong and where.
    """
    if fmt == "vnnlib":
        return parse_vnnlib(text, n_inputs=model.n_inputs, n_outputs=model.n_outputs)
    if fmt == "json":
        return parse_json_spec(json.loads(text), model.n_inputs, model.n_outputs)
    raise ValueError(f"unknown property format {fmt!r}; use one of {PROPERTY_FORMATS}")


def engine_settings(options: dict[str, Any], device: str | None = None) -> Settings:
    """Engine settings for a job's options; ``device`` (a worker's own) overrides the job's.

    Raises ValueError for settings the engine refuses.
    """
    kwargs: dict[str, Any] = {"timeout": float(options["timeout"]), "bab": bool(options["bab"]),
                              "device": device or options.get("device") or "cpu"}
    if options.get("methods"):
        kwargs["methods"] = tuple(options["methods"])
    settings = Settings(**kwargs)
    settings.validate()
    return settings


class ModelCache:
    """Recently imported models by sha256, so creating jobs does not re-import each time."""

    def __init__(self, size: int = 8):
        self.size = size
        self._items: OrderedDict[str, EngineModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str, load: Callable[[], bytes]) -> EngineModel:
        """The model for ``sha256``, calling ``load()`` for its bytes when not cached."""
        with self._lock:
            if sha256 in self._items:
                self._items.move_to_end(sha256)
                return self._items[sha256]
        model = import_model(load())
        with self._lock:
            self._items[sha256] = model
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return model

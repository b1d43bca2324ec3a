"""nnverify's engine: ONNX import, specifications, bound propagation, falsification.

The Python API in four names::

    from verifier import load_model, parse_vnnlib_file, verify, Settings
    model = load_model("net.onnx")
    prop = parse_vnnlib_file("prop.vnnlib", model.n_inputs, model.n_outputs)
    result = verify(model, prop, Settings(timeout=30))
    print(result.verdict, result.to_dict())

Nothing here keeps global state: two verifications may run side by side in one process.
"""

__version__ = "0.1.0"

from verifier.importer.onnx_import import Model, load_model  # noqa: E402
from verifier.property import SpecError, parse_json_spec, parse_vnnlib, parse_vnnlib_file  # noqa: E402
from verifier.verify import Result, Settings, verify  # noqa: E402

__all__ = [
    "Model", "Result", "Settings", "SpecError", "load_model", "parse_json_spec",
    "parse_vnnlib", "parse_vnnlib_file", "verify", "__version__",
]

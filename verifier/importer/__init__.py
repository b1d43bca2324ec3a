"""Import: ONNX bytes to a checked Graph (attributes, lowering of composite ops, fused
patterns), and the guard that checks the imported graph against onnxruntime."""

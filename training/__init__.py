"""Training (torch): models, importers, training loops and ONNX export. May import engine."""

"""Running trained policies: the runner, inference backends, ONNX export and ONNX Runtime."""

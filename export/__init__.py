"""Export: ONNX and TorchScript bundles with parity checks, and the runtime backends."""

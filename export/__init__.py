"""Export: ONNX and TorchScript bundles with parity checks, and the runtime
backends ``serve`` and ``play`` run the model through.

This package's own import stays free of torch: ``export.onnx_runtime`` runs a
bundle with only numpy and onnxruntime.
"""

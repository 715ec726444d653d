"""Export: ONNX and TorchScript bundles with parity checks (``export.exporter``),
and the bundle runtime ``serve`` and ``play`` run a model through.

The runtime (``manifest``, ``bundle``, ``dream``, ``onnx_runtime``, ``runtime``,
``cli``) needs numpy, Pillow and onnxruntime only; ``export.torch_backends``,
loaded on demand, runs eager PyTorch and TorchScript, and ``export.torch_device``
keeps dreams' state in torch tensors on the model's device.
"""

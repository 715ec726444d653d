"""Run a bundle's ONNX model with ONNX Runtime: numpy and onnxruntime only."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from export.bundle import ONNX_FILE, check_io_shapes, load_start_frames, verify_file
from export.dream import HOST, LARGEST_BATCH, Arrays, latent_input
from export.manifest import (
    CONTROLS_INPUT,
    FRAMES_INPUT,
    LATENT_INPUT,
    NOISE_INPUT,
    OUTPUTS,
    BundleError,
    Manifest,
)

log = logging.getLogger(__name__)

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
TRT_CACHE_DIR = "tensorrt-cache"  # beside the model in the bundle: engines built once


def tensorrt_profile(manifest: Manifest, largest: int = LARGEST_BATCH,
                     usual: int = 16) -> dict[str, str]:
    """TensorRT's explicit shape profile for a model's inputs: batches of 1 to
    ``largest``, tuned for ``usual``, so one engine takes every batch a server
    forms instead of a new one being built when a bigger batch first comes."""
    per_sample = {FRAMES_INPUT: manifest.frame_shape, CONTROLS_INPUT: (manifest.control_dim,),
                  NOISE_INPUT: (), LATENT_INPUT: (manifest.latent_dim,)}

    def shapes(batch: int) -> str:
        return ",".join(f"{name}:" + "x".join(map(str, (batch, *per_sample[name])))
                        for name in manifest.inputs)

    return {"trt_profile_min_shapes": shapes(1),
            "trt_profile_opt_shapes": shapes(min(usual, largest)),
            "trt_profile_max_shapes": shapes(largest)}


def provider_chain(device: str, available: list[str], cache_dir: Path, fp16: bool = False,
                   profile: dict[str, str] | None = None) -> list[Any]:
    """The execution providers to ask ONNX Runtime for, fastest first, each
    node running on the first that takes it: TensorRT (its engines and timing
    cache in ``cache_dir``, fp16 engines when ``fp16``, the shape ``profile``
    of ``tensorrt_profile`` when given), then CUDA, then the CPU. ``device``
    ``cpu`` asks for the CPU alone; ``cuda`` refuses a machine without a GPU
    provider."""
    chain: list[Any] = []
    if device in ("auto", "cuda"):
        if TENSORRT in available:
            chain.append((TENSORRT, {
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir),
                "trt_fp16_enable": fp16, **(profile or {})}))
        if CUDA in available:
            chain.append(CUDA)
        if device == "cuda" and not chain:
            raise ValueError(f"device cuda asked for, but ONNX Runtime offers only {available}; "
                             f"install onnxruntime-gpu (tools/install.sh does on a GPU machine)")
    return [*chain, CPU]


def _dream_arrays(device: str) -> Arrays:
    """Where dreams keep their state for a session on ``device``: tensors on the
    GPU when torch is installed with CUDA (bound there through I/O binding),
    else host numpy (copied to the GPU by ONNX Runtime each step)."""
    if device != "cuda":
        return HOST
    try:
        import torch

        from export.torch_device import TorchArrays
    except ImportError:
        log.info("onnxruntime: without torch, dreams keep their windows on the host")
        return HOST
    if not torch.cuda.is_available():
        log.info("onnxruntime: torch has no CUDA, so dreams keep their windows on the host")
        return HOST
    return TorchArrays("cuda")


def open_session(ort: Any, path: Path, options: Any, providers: list[Any]) -> Any:
    """An ONNX Runtime session of ``path`` on ``providers``; should TensorRT
    refuse its explicit shape profile (a graph split between TensorRT and CUDA
    needs profiles for inputs the bundle does not name), again without it, so
    TensorRT builds an engine for each batch size as it comes."""
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # ORT raises its own exception types
        first = providers[0]
        if isinstance(first, tuple) and any(k.startswith("trt_profile_") for k in first[1]):
            log.warning("onnxruntime: TensorRT refused the batch profile (%s); engines will "
                        "be built per batch size", str(err).splitlines()[0])
            plain = {k: v for k, v in first[1].items() if not k.startswith("trt_profile_")}
            return open_session(ort, path, options, [(first[0], plain), *providers[1:]])
        raise BundleError(f"{path}: ONNX Runtime cannot load it ({err})") from None


class OnnxBackend:
    """A bundle's ``model.onnx`` in an ONNX Runtime session.

    ``step(frames, controls)`` takes ``(B, K, 3, H, W)`` frames in [0, 1] and
    ``(B, control_dim)`` controls as numpy arrays (or anything ``np.asarray``
    takes) and returns the next frames ``(B, 3, H, W)`` float32. A
    noise-conditioned model also gets ``noise_level``: a number or ``(B,)``
    levels, by default the manifest's ``noise_level``.

    Args:
        bundle: The bundle directory.
        device: ``auto`` (a GPU provider when one is available), ``cpu`` or ``cuda``.
        threads: Intra-op threads (default: ``OMP_NUM_THREADS``, else every CPU this
            process may run on).
        fp16: TensorRT builds fp16 engines (approximate: the parity against the
            CPU is measured and logged on load).
    """

    name = "onnxruntime"

    def __init__(self, bundle: str | Path, device: str = "auto", threads: int | None = None,
                 model_file: str = ONNX_FILE, fp16: bool = False) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("onnxruntime is not installed: pip install -e '.[runtime]' "
                              "(or '.[gpu]' for onnxruntime-gpu; never both)") from err
        self.bundle = Path(bundle)
        self.manifest = Manifest.read(bundle)
        path = verify_file(bundle, model_file, self.manifest)
        if fp16 and TENSORRT not in ort.get_available_providers():
            raise ValueError("fp16 engines need ONNX Runtime's TensorRT provider, which this "
                             "onnxruntime lacks")
        providers = provider_chain(device, ort.get_available_providers(),
                                   self.bundle / TRT_CACHE_DIR, fp16,
                                   tensorrt_profile(self.manifest))
        if providers[0] != CPU:
            (self.bundle / TRT_CACHE_DIR).mkdir(exist_ok=True)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not threads and os.environ.get("OMP_NUM_THREADS"):
            threads = int(os.environ["OMP_NUM_THREADS"])
        # ORT's own default (0) measured 11 ms a step here against 8 ms with the
        # thread count given explicitly as the CPUs this process may use.
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        self.session: Any = open_session(ort, path, options, providers)
        self.provider = self.session.get_providers()[0]
        log.info("onnxruntime: running %s on %s (of %s)", path, self.provider,
                 ", ".join(self.session.get_providers()))
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = self.manifest.inputs
        if tuple(inputs) != self.inputs or tuple(outputs) != OUTPUTS:
            raise BundleError(f"{path}: inputs {list(inputs)} and outputs {outputs}, expected "
                              f"{list(self.inputs)} and {list(OUTPUTS)} (the manifest's "
                              f"model.noise_conditioning and model.latent_dim decide the "
                              f"inputs after controls)")
        check_io_shapes(path, self.manifest, inputs["frames"], inputs["controls"])
        self.device = "cuda" if self.provider != CPU else "cpu"
        self.arrays = _dream_arrays(self.device)
        self._rng = np.random.default_rng()  # the latents of a model that takes them
        self.parity: float | None = None  # max |GPU - CPU| on a start frame, on a GPU
        if self.device == "cuda":
            self.parity = self._parity_against_cpu(ort, path, options)
            log.info("onnxruntime: %s matches the CPU to %.1e (max abs, one step)",
                     self.provider, self.parity)

    def _parity_against_cpu(self, ort: Any, path: Path, options: Any) -> float:
        """Max abs difference of one step from a start frame, this session
        against a CPU session of the same model (the same latent)."""
        frames = self.start_frames()[:1].astype(np.float32) / 255.0
        controls = np.zeros((1, self.manifest.control_dim), np.float32)
        feed = self._feed(HOST, frames, controls, latent=latent_input(
            self.manifest, 1, None, np.random.default_rng(0)))
        cpu = ort.InferenceSession(str(path), options, providers=[CPU])
        ours, theirs = self.session.run(None, feed)[0], cpu.run(None, feed)[0]
        return float(np.abs(ours - theirs).max())

    def start_frames(self) -> np.ndarray:
        """``(S, K, 3, H, W)`` uint8 contexts to start a dream from."""
        return load_start_frames(self.bundle, self.manifest)

    def step(self, frames: Any, controls: Any, noise_level: Any = None,
             latent: Any = None) -> Any:
        """Numpy in, numpy out; torch tensors in, torch tensors out: on the GPU
        (``arrays`` are tensors there) bound where they lie, elsewhere through
        the host."""
        as_torch = type(frames).__module__.startswith("torch")
        arrays = self.arrays if as_torch else HOST
        inputs = [frames, controls, noise_level, latent]
        if as_torch and arrays is HOST:  # torch is imported already: we were handed its tensors
            import torch

            device = frames.device
            inputs = [x.detach().cpu() if isinstance(x, torch.Tensor) else x for x in inputs]
            return torch.from_numpy(self._run(HOST, *inputs)).to(device)
        return self._run(arrays, *inputs)

    def _run(self, arrays: Arrays, frames: Any, controls: Any, noise_level: Any = None,
             latent: Any = None) -> Any:
        """One step through I/O binding: the inputs and the output are ``arrays``,
        bound where they lie (host memory, or the GPU's)."""
        feed = self._feed(arrays, frames, controls, noise_level, latent)
        m = self.manifest
        out = arrays.empty((feed["frames"].shape[0], 3, m.height, m.width))
        binding = self.session.io_binding()
        for name, x in feed.items():
            device, index, pointer = arrays.address(x)
            binding.bind_input(name, device, index, np.float32, list(x.shape), pointer)
        device, index, pointer = arrays.address(out)
        binding.bind_output(OUTPUTS[0], device, index, np.float32, list(out.shape), pointer)
        arrays.settle()  # the inputs torch queued are written before ONNX Runtime reads them
        self.session.run_with_iobinding(binding)  # which returns once its output is written
        return out

    def _feed(self, arrays: Arrays, frames: Any, controls: Any, noise_level: Any = None,
              latent: Any = None) -> dict[str, Any]:
        """The session's inputs as contiguous float32 ``arrays``, checked against
        the manifest."""
        m = self.manifest
        f, c = arrays.put(frames), arrays.put(controls)
        want = m.frame_shape
        if f.ndim != 5 or tuple(f.shape[1:]) != want:
            raise ValueError(f"frames must have shape (B, {', '.join(map(str, want))}), "
                             f"got {tuple(f.shape)}")
        batch = f.shape[0]
        if tuple(c.shape) != (batch, m.control_dim):
            raise ValueError(f"controls must have shape ({batch}, {m.control_dim}), "
                             f"got {tuple(c.shape)}")
        feed = {"frames": f, "controls": c}
        if NOISE_INPUT in self.inputs:
            level = arrays.put(m.noise_level if noise_level is None else noise_level).reshape(-1)
            if level.shape[0] not in (1, batch):
                raise ValueError(f"noise_level must be one number or {batch}, got "
                                 f"{level.shape[0]}")
            feed[NOISE_INPUT] = arrays.put(level.repeat(batch) if level.shape[0] == 1 else level)
        if m.latent_dim:
            feed[LATENT_INPUT] = latent_input(m, batch, latent, self._rng, arrays)
        return feed

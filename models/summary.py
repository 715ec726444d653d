"""What a model costs: parameters, tokens, FLOPs per frame, measured latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.config import WorldModelConfig
from models.world_model import WorldModel


@dataclass
class Latency:
    batch: int
    ms_median: float  # one forward call of the whole batch
    ms_p90: float

    @property
    def frames_per_s(self) -> float:
        return 1000.0 * self.batch / self.ms_median


@dataclass
class Summary:
    config: WorldModelConfig
    parameters: dict[str, int]
    tokens: dict[str, int]
    gflops: dict[str, float]  # per frame, multiply-add counted as 2
    device: str
    threads: int
    dtype: str
    latency: list[Latency] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = self.config.to_dict()
        for row, lat in zip(out["latency"], self.latency, strict=True):
            row["frames_per_s"] = lat.frames_per_s
        return out


def parameter_counts(model: WorldModel) -> dict[str, int]:
    trunk = [*model.blocks, model.norm]
    if model.final_modulation is not None:
        trunk.append(model.final_modulation)
    parts = {
        "tokenizer": model.tokenizer,
        "action MLP": model.action_embed,
        "noise MLP": model.noise_embed or torch.nn.ModuleList(),
        "transformer": torch.nn.ModuleList(trunk),
        "decoder": model.decoder,
    }
    if model.refiner is not None:
        parts["code refiner"] = model.refiner
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
    counts["registers"] = 0 if model.registers is None else model.registers.numel()
    counts["total"] = model.num_parameters()
    return counts


def flop_counts(model: WorldModel) -> dict[str, float]:
    """GFLOPs of one frame per stage, counted by ``FlopCounterMode`` (matmuls,
    convolutions and attention; norms and activations are not counted). The
    decoder's share holds every round of a codebook model's drawing."""
    c = model.config
    p = next(model.parameters())
    frames = torch.rand(1, c.context_frames, 3, c.height, c.width, device=p.device)
    controls = torch.zeros(1, c.control_dim, device=p.device)
    noise = torch.zeros(1, device=p.device) if c.noise_conditioning else None

    def count(fn: Any, *args: Any) -> tuple[float, Any]:
        with FlopCounterMode(display=False) as counter:
            out = fn(*args)
        return counter.get_total_flops() / 1e9, out

    with torch.no_grad():
        tok, tokens = count(model.tokenize, frames, controls)
        act, action = count(model.embed_action, controls, noise)
        trk, tokens = count(model.trunk, tokens, action)
        dec, _ = count(model.decode, tokens, frames[:, -1])
    return {"tokenizer": tok, "action MLP": act, "transformer": trk, "decoder": dec,
            "total": tok + act + trk + dec}


def measure_latency(model: WorldModel, batch: int, repeats: int = 50, warmup: int = 10,
                    autocast_dtype: torch.dtype | None = None) -> Latency:
    """Median and p90 wall time of ``model(frames, controls)`` at ``batch``."""
    c = model.config
    p = next(model.parameters())
    frames = torch.rand(batch, c.context_frames, 3, c.height, c.width, device=p.device)
    controls = torch.rand(batch, c.control_dim, device=p.device) * 2 - 1
    cuda = p.device.type == "cuda"
    times: list[float] = []
    with torch.inference_mode(), torch.autocast(p.device.type, dtype=autocast_dtype,
                                                enabled=autocast_dtype is not None):
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(frames, controls)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    deciles = statistics.quantiles(times, n=10)
    return Latency(batch, statistics.median(times), deciles[-1])


def summarize(config: WorldModelConfig, batch_sizes: tuple[int, ...] = (1, 8),
              device: str = "cpu", repeats: int = 50,
              autocast_dtype: torch.dtype | None = None, seed: int = 0) -> Summary:
    torch.manual_seed(seed)
    model = WorldModel(config).to(device).eval()
    summary = Summary(
        config=config,
        parameters=parameter_counts(model),
        tokens={"image": config.num_image_tokens, "registers": config.num_registers,
                "action": 1, "sequence": config.sequence_length},
        gflops=flop_counts(model),
        device=str(device),
        threads=torch.get_num_threads(),
        dtype="float32" if autocast_dtype is None else f"autocast {autocast_dtype}".replace(
            "torch.", ""),
    )
    for batch in batch_sizes:
        summary.latency.append(measure_latency(model, batch, repeats, 10, autocast_dtype))
    return summary


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n:,}"


def format_summary(name: str, s: Summary) -> str:
    c = s.config
    rows = [
        ("model", f"{name}: {c.height}x{c.width}, K={c.context_frames}, D={c.embed_dim}, "
                  f"depth {c.depth}, {c.num_heads} heads, {c.attention_mode}, "
                  f"{c.output_mode}"),
        ("parameters", f"{_count(s.parameters['total'])}  (" + ", ".join(
            f"{k} {_count(v)}" for k, v in s.parameters.items() if k != "total" and v) + ")"),
        ("tokens", f"{s.tokens['image']} image ({c.grid_size[0]}x{c.grid_size[1]}) + "
                   f"{s.tokens['registers']} registers + 1 action"
                   + {"interleaved": " (cross-attended)", "adaln": " (modulates every norm)"}.get(
                       c.attention_mode, "")
                   + f"; self-attention over {s.tokens['sequence']}"),
        ("GFLOPs / frame", f"{s.gflops['total']:.3f}  (" + ", ".join(
            f"{k} {v / s.gflops['total']:.0%}" for k, v in s.gflops.items()
            if k != "total") + ")"),
    ]
    for lat in s.latency:
        rows.append((f"latency, batch {lat.batch}",
                     f"{lat.ms_median:.1f} ms median, {lat.ms_p90:.1f} ms p90  ->  "
                     f"{lat.frames_per_s:.0f} frames/s  ({s.device}, {s.threads} threads, "
                     f"{s.dtype}, eager)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

"""Server metrics in the Prometheus text format, no dependency."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total:.6f}",
                f"{name}_count {self.n}"]
        return out


@dataclass
class Metrics:
    sessions: int = 0
    connections_total: int = 0
    steps_total: int = 0
    frames_sent_total: int = 0
    frames_dropped_total: int = 0
    messages_total: int = 0
    inputs_total: int = 0
    inputs_rejected_total: int = 0
    errors_total: int = 0
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    step_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    encode_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))

    def render(self) -> str:
        lines = []
        gauges = {"sessions": ("gauge", "open dream sessions")}
        counters = {
            "connections_total": "websocket connections accepted",
            "steps_total": "session steps computed by the model",
            "frames_sent_total": "frames sent to clients",
            "frames_dropped_total": "frames replaced before a slow client took them",
            "messages_total": "messages received from clients after their hello",
            "inputs_total": "INPUT messages accepted",
            "inputs_rejected_total": "messages rejected as invalid",
            "errors_total": "error messages sent to clients",
        }
        for name, (kind, text) in gauges.items():
            lines += [f"# HELP tinydreams_{name} {text}", f"# TYPE tinydreams_{name} {kind}",
                      f"tinydreams_{name} {getattr(self, name)}"]
        for name, text in counters.items():
            lines += [f"# HELP tinydreams_{name} {text}", f"# TYPE tinydreams_{name} counter",
                      f"tinydreams_{name} {getattr(self, name)}"]
        lines += self.batch_size.lines("tinydreams_batch_size", "sessions per model call")
        lines += self.step_seconds.lines("tinydreams_step_seconds", "model call time")
        lines += self.queue_seconds.lines("tinydreams_queue_seconds",
                                          "wait from step request to model call")
        lines += self.encode_seconds.lines("tinydreams_encode_seconds", "frame encoding time")
        return "\n".join(lines) + "\n"

"""The bundle's ``manifest.json``, typed: written by the exporter, read by the runtime.

A field the manifest does not know, or a required one it lacks, is refused by
name: a manifest that does not describe its model fails at load, not mid-game.
The standard library and the recording format only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recording.format import control_names

FORMAT = "tinydreams-bundle"
VERSION = 1
MANIFEST = "manifest.json"
# The model's inputs and outputs, named in one place.
FRAMES_INPUT = "frames"  # (B, K, 3, H, W) float32 in [0, 1]
CONTROLS_INPUT = "controls"  # (B, control_dim) float32 in [-1, 1]
NOISE_INPUT = "noise_level"  # (B,) float32: a noise-conditioned model's third input
LATENT_INPUT = "latent"  # (B, latent_dim) float32 N(0, 1) draws: a latent model's last input
OUTPUTS = ("next_frame",)  # (B, 3, H, W) float32 in [0, 1]
BATCH_AXIS = "batch"


class BundleError(ValueError):
    """A bundle that cannot be used: missing, damaged, or inconsistent."""


@dataclass(frozen=True)
class Manifest:
    """What a runtime needs to know of a bundle's model.

    Attributes:
        model: The model's config as a plain dict (``WorldModelConfig.to_dict``).
        height, width: The frame size.
        context_frames: K, the frames the model sees.
        control_dim: The length of its controls.
        files: Each bundle file's ``bytes`` and ``sha256``.
        control_names: The controls' names, in order.
        output_mode: ``absolute``, ``residual``, ``warp`` or ``codebook``.
        latent_dim: The length of its latent input (0: none).
        latent_refresh: The share of a held latent a dream redraws a step at full stick.
        latent_motion: How a held latent moves with the view (``grid``, ``codes``,
            ``patches``; see ``export.dream.DreamLatent``), or None.
        noise_level: The context noise level a noise-conditioned model is told.
        fps: Game steps per second of the recording it learned.
        world: The world it was recorded in.
        io: Input and output names, and the batch axis.
        weights: ``ema`` or ``raw``.
        checkpoint: The checkpoint it came from (``path``, ``step``, ``sha256``).
        versions: The tools that made it.
        parity: Each backend's differences from eager PyTorch at export.
    """

    model: dict[str, Any]
    height: int
    width: int
    context_frames: int
    control_dim: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    control_names: list[str] = field(default_factory=list)
    output_mode: str = "absolute"
    latent_dim: int = 0
    latent_refresh: float = 0.0
    latent_motion: dict[str, Any] | None = None
    noise_level: float = 0.0
    fps: float | None = None
    world: str | None = None
    io: dict[str, Any] = field(default_factory=dict)
    weights: str = "raw"
    checkpoint: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "control_names",
                           list(control_names(self.control_dim, self.control_names)))

    @property
    def noise_conditioned(self) -> bool:
        """Whether the model takes the ``noise_level`` input."""
        return bool(self.model.get("noise_conditioning", False))

    @property
    def inputs(self) -> tuple[str, ...]:
        """The model's input names, in order."""
        return (FRAMES_INPUT, CONTROLS_INPUT,
                *([NOISE_INPUT] if self.noise_conditioned else []),
                *([LATENT_INPUT] if self.latent_dim else []))

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """``(K, 3, H, W)``: one dream's window."""
        return self.context_frames, 3, self.height, self.width

    @property
    def codebook_patch(self) -> int:
        """The side of a codebook model's patches (0 for any other output)."""
        return int(self.model["codebook_patch"]) if self.output_mode == "codebook" else 0

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> Manifest:
        """A manifest from its JSON object; unknown and missing fields are refused
        by name, and so is a bundle newer than this tool reads."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError(f"{source}: not a TinyDreams bundle manifest")
        if int(data.get("version", 0)) > VERSION:
            raise BundleError(f"{source}: bundle version {data['version']} is newer than this "
                              f"tool reads ({VERSION}); update TinyDreams")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BundleError(f"{source}: unknown field {unknown[0]!r} (this tool reads "
                              f"{', '.join(sorted(known))})")
        required = [name for name, f in known.items() if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise BundleError(f"{source}: missing field {missing[0]!r}")
        for name in ("height", "width", "context_frames", "control_dim", "latent_dim"):
            if name in data and not (isinstance(data[name], int) and data[name] >= 0):
                raise BundleError(f"{source}: field {name!r} must be a whole number >= 0, "
                                  f"got {data[name]!r}")
        values = {**data, "latent_dim": int(data.get("latent_dim") or 0),
                  "latent_refresh": float(data.get("latent_refresh") or 0.0),
                  "noise_level": float(data.get("noise_level") or 0.0)}
        try:
            return cls(**values)
        except ValueError as err:
            raise BundleError(f"{source}: {err}") from None

    @classmethod
    def read(cls, bundle: str | Path) -> Manifest:
        """The manifest of a bundle directory."""
        path = Path(bundle) / MANIFEST
        if not path.is_file():
            raise BundleError(f"{path}: missing; {bundle} is not a bundle (python -m export)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise BundleError(f"{path}: unreadable manifest ({err})") from None
        return cls.from_dict(data, str(path))

    def write(self, bundle: str | Path) -> None:
        (Path(bundle) / MANIFEST).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

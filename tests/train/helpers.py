"""Small synthetic recordings and baby training configs for fast tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recording.writer import RecordingWriter
from train.config import TrainConfig, load_config

BABY_MODEL = {
    "model.height": 16, "model.width": 16, "model.embed_dim": 32, "model.depth": 2,
    "model.num_heads": 2, "model.tokenizer_filters": "8,16", "model.decoder_filters": "16,8",
    "model.action_hidden": 16,
}


PAD_NAMES = ("left_x", "left_y", "right_x", "right_y", "right_trigger", "a")


def moving_square_recording(directory: Path, episodes: int = 3, steps: int = 12,
                            size: int = 16, seed: int = 0, buttons: bool = False) -> Path:
    """A world whose left stick x moves a bright square: a learnable dynamic.
    With ``buttons`` it also takes the right trigger (the square turns red while
    it is pulled) and A, as ``PAD_NAMES``."""
    rng = np.random.default_rng(seed)
    names = PAD_NAMES if buttons else PAD_NAMES[:4]
    with RecordingWriter(directory, size, size, names,
                         meta={"world": "square", "fps": 10}) as w:
        for _ in range(episodes):
            w.new_episode()
            x, controls = size // 2, np.zeros(len(names))
            for _ in range(steps):
                x = int(np.clip(x + round(3 * controls[0]), 0, size - 4))
                frame = np.full((size, size, 3), 30, np.uint8)
                frame[6:10, x:x + 4] = (250, 0, 0) if buttons and controls[4] else (250, 200, 40)
                w.write(frame, controls)
                controls = np.zeros(len(names))
                controls[0] = rng.choice([-1.0, 0.0, 1.0])
                if buttons:
                    controls[4:] = rng.random(2) < 0.3
    return directory


# The single-frame, single-step model, whatever configs/tiny.toml turns on: tests
# that want context frames, noise or unrolls ask for them.
PLAIN = {"model.context_frames": 1, "model.noise_conditioning": False,
         "model.attention_mode": "concat", "noise.max_level": 0.0,
         "noise.play_level": 0.0, "unroll.schedule": "1", "unroll.boundaries": "",
         "unroll.rollin": 0}


def baby_config(recording: Path, **overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {**BABY_MODEL, **PLAIN, "data.recordings": [str(recording)],
                                "batch_size": 4, "steps": 6, "log_every": 1, "eval_every": 3,
                                "checkpoint_every": 3, "val_batches": 1,
                                "optim.warmup_steps": 2}
    settings.update(overrides)
    return load_config("tiny", settings)

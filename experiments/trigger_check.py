"""Does the dream fire when the trigger is pulled? The game and a bundle's
dream, each run twice from the same start under the same sticks, once with the
right trigger held and once without: how much the picture around the gun
differs, beside how much it differs in the game, and a strip of both.

    python -m experiments.trigger_check --bundle BUNDLE --world doom:defend_the_center \\
        --out docs/trigger.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from export.dream import Dream
from export.runtime import load_backend
from play.worlds import make_world
from recording.frames import resize, to_image, to_model_frame

GUN = (slice(40, 64), slice(16, 48))  # rows, columns of the weapon at 64x64


def game_frames(world_id: str, names: tuple[str, ...], fire: bool, steps: int,
                seed: int, after: int) -> list[np.ndarray]:
    """The game's frames: ``after`` steps at rest (the gun raised), then ``steps``
    with the trigger held or not; the list starts at the last rest frame, after
    the K - 1 before it are kept for a dream's context (``after`` >= K)."""
    world = make_world(world_id)
    try:
        frames = [resize(world.reset(seed=seed), (64, 64))]
        for pull in [0.0] * after + [float(fire)] * steps:
            controls = np.zeros(len(names), np.float32)
            controls[names.index("right_trigger")] = pull
            frame, done = world.step(controls)
            frames.append(resize(frame, (64, 64)))
            if done:
                break
        return frames
    finally:
        world.close()


def dream_frames(bundle: Path, context: list[np.ndarray], fire: bool, steps: int,
                 seed: int) -> list[np.ndarray]:
    backend = load_backend(bundle, "onnxruntime", "cpu")
    names = backend.manifest.control_names
    dream = Dream.of(backend, seed=seed)
    K = backend.manifest.context_frames
    dream.reset(np.stack([to_model_frame(f) for f in context[-K:]]))
    start = context[-1]
    controls = np.zeros(len(names), np.float32)
    controls[names.index("right_trigger")] = float(fire)
    return [start] + [to_image(dream.step(backend, controls)) for _ in range(steps)]


def gun_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean absolute difference (0-255) around the gun, over the steps both have."""
    n = min(len(a), len(b))
    return float(np.mean([np.abs(a[i][GUN].astype(int) - b[i][GUN].astype(int)).mean()
                          for i in range(1, n)]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.trigger_check", description=__doc__)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--world", default="doom:defend_the_center")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--after", type=int, default=12,
                   help="steps at rest before the branch (the gun is raised by then)")
    p.add_argument("--out", type=Path, default=Path("trigger.png"))
    args = p.parse_args(argv)
    names = tuple(load_backend(args.bundle, "onnxruntime", "cpu").manifest.control_names)
    game = {fire: game_frames(args.world, names, fire, args.steps, args.seed, args.after)
            for fire in (False, True)}
    context = game[False][:args.after + 1]
    dream = {fire: dream_frames(args.bundle, context, fire, args.steps, args.seed)
             for fire in (False, True)}
    game = {fire: frames[args.after:] for fire, frames in game.items()}
    figures = {"game": gun_difference(game[False], game[True]),
               "dream": gun_difference(dream[False], dream[True])}
    rows = [np.concatenate(frames[:args.steps + 1], axis=1)
            for frames in (game[False], game[True], dream[False], dream[True])]
    strip = np.concatenate(rows, axis=0)
    Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2),
                                  Image.Resampling.NEAREST).save(args.out)
    print(json.dumps({"gun_difference_fire_vs_not": figures, "strip": str(args.out),
                      "rows": ["game, trigger released", "game, trigger held",
                               "dream, trigger released", "dream, trigger held"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

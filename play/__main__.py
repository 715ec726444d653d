"""``python -m play``: record real worlds and inspect recordings."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from play.worlds import MissingExtra


def _record(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from play.policies import make_policy
    from play.record import format_coverage, parse_size, record
    from play.worlds import make_world

    options: dict[str, object] = {}
    if args.frame_skip is not None:
        options["frame_skip"] = args.frame_skip
    if args.resolution is not None:
        options["resolution"] = args.resolution
    size = parse_size(args.size) if args.size else None
    world = make_world(args.world, **options)
    try:
        policy = make_policy(args.policy, seed=args.seed, source=args.source, fps=world.fps,
                             title=f"TinyDreams: recording {args.world}")
        with tqdm(total=args.steps, unit="step", disable=args.quiet) as bar:
            stats = record(world, policy, args.out, args.steps, size, args.seed,
                           meta={"policy": args.policy}, progress=bar.update)
    finally:
        world.close()
    print(f"recorded {stats.steps} steps ({stats.frames} frames, {stats.episodes} episode(s)) "
          f"into {args.out} in {stats.seconds:.1f} s: {stats.steps_per_s:.0f} steps/s")
    if stats.stopped:
        print(f"stopped early: {stats.stopped}")
    print(format_coverage(stats, world.control_names))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from play.inspect import inspect_recording

    _, report = inspect_recording(args.recording, args.control_dim, args.context_frames)
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m play",
                                     description="Record real worlds and inspect recordings.")
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser(
        "record", help="record a world into a recording directory",
        description="Record a real world, driven by a policy, into the recording format "
                    "(recording_log.jsonl + PNG frames + meta.json). Recording into an "
                    "existing directory appends new episodes.",
        epilog="Worlds: doom:<scenario> (basic, health_gathering, deathmatch, ...; left stick "
               "moves and strafes, right stick turns and looks), carracing (left stick steers, "
               "gas and brake), atari:<Game> (e.g. atari:Breakout; ale-py snaps the stick to 9 "
               "directions at a 0.5 threshold, right stick past half way fires).")
    rec.add_argument("--world", default="doom:health_gathering",
                     help="world id (default: doom:health_gathering)")
    rec.add_argument("--policy", default="wander", choices=["wander", "human", "replay"],
                     help="wander: smooth seeded random sticks; human: gamepad or keyboard "
                          "(WASD, arrows) in a window; replay: controls of --source")
    rec.add_argument("--source", default=None, help="recording whose controls --policy replay uses")
    rec.add_argument("--steps", type=int, default=2000, help="world steps to record")
    rec.add_argument("--out", type=Path, required=True, help="recording directory")
    rec.add_argument("--size", default="64",
                     help="frame size written: N (square) or WxH (default: 64); 0 keeps native")
    rec.add_argument("--seed", type=int, default=0, help="seed of the world and the policy")
    rec.add_argument("--frame-skip", type=int, default=None,
                     help="world frames (Doom tics) per step")
    rec.add_argument("--resolution", default=None, help="Doom screen resolution, e.g. 320x240")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_record)

    ins = sub.add_parser("inspect", help="validate a recording and print its statistics",
                         description="Read every line and decode every image of a recording; "
                                     "print usable transitions, skipped lines with reasons and "
                                     "line numbers, episodes and control statistics.")
    ins.add_argument("recording", type=Path, help="recording directory")
    ins.add_argument("--control-dim", type=int, default=None,
                     help="controls per line (default: from meta.json, else 4)")
    ins.add_argument("--context-frames", type=int, default=1,
                     help="count transitions with this many context frames")
    ins.set_defaults(func=_inspect)

    args = parser.parse_args(argv)
    if getattr(args, "size", None) == "0":
        args.size = None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, MissingExtra) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every line written so far is usable", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

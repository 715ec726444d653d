"""``python -m play``: play inside the dream (or the real world), record real
worlds, inspect recordings."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from export.cli import add_fps_arg, add_model_args
from play.pads import PAD_CONTROLS, PadInput, parse_axis_map
from play.worlds import MissingExtra, require


def _record(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from play.record import format_coverage, make_policy, parse_size, record
    from play.worlds import make_world

    options: dict[str, object] = {}
    if args.frame_skip is not None:
        options["frame_skip"] = args.frame_skip
    if args.resolution is not None:
        options["resolution"] = args.resolution
    size = parse_size(args.size) if args.size else None
    world = make_world(args.world, **options)
    try:
        policy = make_policy(args.policy, tuple(world.control_names), seed=args.seed,
                             source=args.source, fps=world.fps,
                             title=f"TinyDreams: recording {args.world}", rest=args.rest)
        meta: dict[str, object] = {"policy": args.policy}
        if args.policy == "wander":
            meta["rest"] = args.rest
        with tqdm(total=args.steps, unit="step", disable=args.quiet) as bar:
            stats = record(world, policy, args.out, args.steps, size, args.seed,
                           meta=meta, progress=bar.update)
    finally:
        world.close()
    print(f"recorded {stats.steps} steps ({stats.frames} frames, {stats.episodes} episode(s)) "
          f"into {args.out} in {stats.seconds:.1f} s: {stats.steps_per_s:.0f} steps/s")
    if stats.stopped:
        print(f"stopped early: {stats.stopped}")
    print(format_coverage(stats, world.control_names))
    return 0


def _capture(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from play.capture import (
        CaptureError,
        CaptureInputs,
        CaptureOptions,
        Preview,
        capture,
        init_pygame,
        open_screen,
        parse_region,
        start_hotkeys,
    )
    from play.record import parse_size

    names = tuple(n.strip() for n in args.controls.split(",") if n.strip())
    if unknown := sorted(set(names) - set(PAD_CONTROLS)):
        raise ValueError(f"--controls: unknown {', '.join(unknown)}; choose from "
                         f"{', '.join(PAD_CONTROLS)}")
    options = CaptureOptions(args.fps, parse_size(args.size), names, args.paused, args.frames,
                             args.seconds)
    try:
        source = open_screen(args.window, parse_region(args.region) if args.region else None,
                             args.monitor)
    except CaptureError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    init_pygame(args.preview)
    hotkeys = None if args.no_keys else start_hotkeys(args.toggle_key, args.end_key)
    inputs = CaptureInputs(PadInput(dead_zone=args.dead_zone, axis_map=args.axis_map),
                           args.toggle_button, hotkeys, args.toggle_key)
    print(f"capturing {source.description} at {args.fps:g} frames/s into {args.out}; "
          f"{args.toggle_button} on the pad or {args.toggle_key.upper()} starts and stops, "
          f"{args.end_key.upper()} or Ctrl-C ends")
    try:
        with tqdm(unit="frame", disable=args.quiet) as bar:
            stats = capture(source, inputs, args.out, options,
                            Preview() if args.preview else None, progress=bar.update)
    finally:
        inputs.close()
        source.close()
    print(stats.summary())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from play.inspect import inspect_recording

    _, report = inspect_recording(args.recording, args.control_dim, args.context_frames)
    print(report)
    return 0


def _play(args: argparse.Namespace) -> int:
    from play.app import HELP, Player, PlayOptions
    from play.sources import (
        CompareSource,
        DreamSource,
        FrameSource,
        RealSource,
        RemoteSource,
        ReplaySource,
    )

    source: FrameSource
    if args.command == "dream":
        from export.runtime import backend_from_args

        source = DreamSource(backend_from_args(args), args.seed, args.latent, args.start_image)
    elif args.command == "remote":
        source = RemoteSource(args.url, args.token, args.encoding)
    elif args.command == "real":
        from play.worlds import make_world

        source = RealSource(make_world(args.world), args.seed, args.record)
    elif args.command == "replay":
        source = ReplaySource(args.recording)
    else:
        from export.runtime import backend_from_args
        from play.worlds import make_world

        backend = backend_from_args(args)
        world = make_world(args.world) if args.world else None
        source = CompareSource(backend, args.recording, world, args.latent)
    options = PlayOptions(scale=args.scale, smooth=args.smooth, fullscreen=args.fullscreen,
                          hud=not args.no_hud, dead_zone=args.dead_zone,
                          invert_y=args.invert_y, axis_map=args.axis_map, mouse=args.mouse,
                          fps=args.fps,
                          max_frames=args.frames, max_seconds=args.seconds,
                          captures=args.captures)
    print(HELP)
    player = Player(source, options)
    try:
        result = player.run()
    finally:
        player.close()
    print(f"{result['frames']} frames in {result['seconds']:.1f} s: {result['fps']:.1f} "
          f"displayed frames/s")
    for path in player.saved:
        print(f"saved {path}")
    return 0


def _axis_map_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--axis-map", type=parse_axis_map, default=(0, 1, 2, 3),
                   metavar="LX,LY,RX,RY",
                   help="raw axes of a joystick SDL has no GameController mapping for, e.g. "
                        "0,1,3,4 (default 0,1,2,3); known pads need none")


def _pads(args: argparse.Namespace) -> int:
    """List the connected pads, how each is read, and their live values."""
    import time

    pygame = require("pygame", "play", "pygame-ce")
    from pygame._sdl2 import controller

    pygame.init()
    pygame.joystick.init()
    controller.init()
    pads = PadInput(axis_map=args.axis_map)
    end = time.monotonic() + args.seconds
    shown: list[str] = []
    while True:
        for event in pygame.event.get():
            pads.handle(event)
        lines = pads.describe()
        if lines != shown:
            print("\n".join(lines), flush=True)
            shown = lines
        if time.monotonic() >= end:
            return 0
        time.sleep(0.05)


def _player_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=int, default=8, help="initial window pixels per frame pixel")
    p.add_argument("--smooth", action="store_true", help="smooth scaling (M toggles)")
    p.add_argument("--fullscreen", action="store_true", help="start fullscreen (F11 toggles)")
    p.add_argument("--no-hud", action="store_true", help="hide the HUD (H toggles)")
    p.add_argument("--dead-zone", type=float, default=0.1, help="gamepad stick dead zone")
    p.add_argument("--invert-y", action="store_true", help="invert both sticks' y axes")
    _axis_map_arg(p)
    p.add_argument("--mouse", action="store_true", help="the mouse drives the right stick")
    add_fps_arg(p, "frames shown")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--captures", type=Path, default=Path("captures"),
                   help="folder for screenshots (F12), GIFs (G) and MP4s (V)")
    p.add_argument("--seed", type=int, default=0, help="which start frame / episode seed")
    p.set_defaults(func=_play)


def _add_record(sub: Any) -> None:
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
    rec.add_argument("--rest", type=float, default=0.1,
                     help="wander: the share of steps every stick rests at the centre, so the "
                          "model sees the game stand still (default 0.1)")
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


def _add_capture(sub: Any) -> None:
    cap = sub.add_parser(
        "capture", help="record any game window (or screen region) with the gamepad",
        description="Record a game you play on this desktop, whatever it is: a window (by "
                    "title), a region or a monitor of the screen, grabbed at --fps, with the "
                    "connected gamepad's sticks, triggers and buttons, into the recording "
                    "format. Each line holds the controls held just before its frame was "
                    "grabbed and the grab's time; frames are resized to --size as written. "
                    "Frames the capture cannot keep up with are counted as dropped.",
        epilog="Keys: the pad's --toggle-button or the global --toggle-key starts and stops "
               "recording (each start is a new episode); --end-key or Ctrl-C ends. Then: "
               "python -m play inspect OUT, and python -m train --config auto --data OUT.")
    where = cap.add_mutually_exclusive_group()
    where.add_argument("--window", default=None, metavar="TITLE",
                       help="the window whose title contains TITLE (followed if it moves)")
    where.add_argument("--region", default=None, metavar="X,Y,W,H",
                       help="a fixed region of the screen, in pixels")
    where.add_argument("--monitor", type=int, default=None,
                       help="a whole monitor, 1 being the first (the default)")
    cap.add_argument("--out", type=Path, required=True,
                     help="recording directory (appended to when it exists)")
    cap.add_argument("--fps", type=float, default=15.0, help="frames a second (default 15)")
    cap.add_argument("--size", default="64",
                     help="frame size written: N (square) or WxH (default: 64)")
    cap.add_argument("--controls", default=",".join(PAD_CONTROLS),
                     help="the pad controls recorded, in order (default: the sticks, "
                          "triggers and buttons)")
    cap.add_argument("--toggle-button", default="back",
                     help="pad button that starts and stops recording (default: back)")
    cap.add_argument("--toggle-key", default="f9", help="key that does too (default: f9)")
    cap.add_argument("--end-key", default="esc", help="key that ends (default: esc)")
    cap.add_argument("--no-keys", action="store_true",
                     help="no global keys: the pad and Ctrl-C only")
    cap.add_argument("--paused", action="store_true",
                     help="wait for the toggle before recording (default: record at once)")
    cap.add_argument("--preview", action="store_true",
                     help="show the frames as written in a window")
    cap.add_argument("--frames", type=int, default=0, help="end after this many frames")
    cap.add_argument("--seconds", type=float, default=0.0, help="end after this many seconds")
    cap.add_argument("--dead-zone", type=float, default=0.1, help="stick dead zone")
    _axis_map_arg(cap)
    cap.add_argument("--quiet", action="store_true", help="no progress bar")
    cap.set_defaults(func=_capture)


def _add_inspect(sub: Any) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m play",
        description="Play inside a learned world with a gamepad (keyboard: WASD left stick, "
                    "arrows right stick), locally or from a dream server; record real worlds; "
                    "inspect recordings.")
    sub = parser.add_subparsers(dest="command", required=True)

    dream = sub.add_parser("dream", help="play the model in-process (bundle or checkpoint)")
    add_model_args(dream)
    dream.add_argument("--start-image", type=Path, default=None, metavar="PNG",
                       help="dream from this picture (any format Pillow reads) instead of the "
                            "bundle's start frames; dropping a file on the window does too")
    _player_options(dream)
    remote = sub.add_parser("remote", help="play a dream streamed by python -m serve")
    remote.add_argument("url", help="e.g. ws://host:8765/dream")
    remote.add_argument("--token", default=None, help="the server's token, if it needs one")
    remote.add_argument("--encoding", default="jpeg", choices=["jpeg", "png", "raw"])
    _player_options(remote)
    real = sub.add_parser("real", help="play the real environment (optionally recording)")
    real.add_argument("--world", default="doom:health_gathering", help="world id")
    real.add_argument("--record", type=Path, default=None,
                      help="also record what you play into this recording directory")
    _player_options(real)
    replay = sub.add_parser("replay", help="play a recording back")
    replay.add_argument("recording", type=Path)
    _player_options(replay)
    compare = sub.add_parser("compare", help="ground truth beside the dream")
    add_model_args(compare)
    compare.add_argument("--recording", type=Path, default=None,
                         help="replay this recording's controls into the dream")
    compare.add_argument("--world", default=None,
                         help="or drive this real world and the dream with live sticks")
    _player_options(compare)

    _add_record(sub)
    _add_capture(sub)
    _add_inspect(sub)
    pads = sub.add_parser("pads", help="list connected gamepads, their mapping and values",
                          description="Show every connected pad: its name, whether SDL's "
                                      "GameController database maps it (else it is read raw "
                                      "through --axis-map), and its live sticks, triggers "
                                      "and buttons as they change.")
    _axis_map_arg(pads)
    pads.add_argument("--seconds", type=float, default=10.0,
                      help="how long to watch (default 10; 0 lists once)")
    pads.set_defaults(func=_pads)

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

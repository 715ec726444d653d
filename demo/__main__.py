"""``python -m demo [--quick]``: record -> train -> evaluate -> export -> serve ->
report, reusing what an earlier run already made."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m demo",
        description="Record ViZDoom's health_gathering with the wander policy, train the tiny "
                    "world model for a bounded time, evaluate it on held-out episodes against "
                    "copy-last-frame, export a bundle, serve it on loopback to a headless "
                    "client that plays a scripted stick path, and write OUT/report.html (no "
                    "external assets). With a display it then opens the player. Run it again "
                    "and it reuses the recording and the trained checkpoint.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="where report.html and work/ go (default: runs/demo)")
    p.add_argument("--quick", action="store_true",
                   help="about 5 minutes: less data, 2 minutes of training, shorter checks")
    p.add_argument("--minutes", type=float, help="training budget (default: 15, quick: 2)")
    p.add_argument("--record-steps", type=int,
                   help="training recording length (default: 12000, quick: 1500)")
    p.add_argument("--val-steps", type=int,
                   help="held-out recording length (default: 2500, quick: 600)")
    p.add_argument("--train-steps", type=int, help="optimizer steps (default: the preset's)")
    p.add_argument("--frames", type=int,
                   help="frames the client plays through the server (default: 300, quick: 100)")
    p.add_argument("--config", default="tiny-rounds",
                   help="training preset (default: tiny-rounds, whose dreams last)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-play", action="store_true", help="do not open the player at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from demo.options import DemoOptions
    from demo.pipeline import run

    options = DemoOptions(out=args.out, quick=args.quick, minutes=args.minutes or 0.0,
                          record_steps=args.record_steps or 0, val_steps=args.val_steps or 0,
                          train_steps=args.train_steps or 0, frames=args.frames or 0,
                          config=args.config,
                          device=args.device, progress=not args.quiet)
    try:
        result = run(options, on_stage=lambda name: print(f"== {name}", flush=True))
    except KeyboardInterrupt:
        print("interrupted; run the same command again to go on from what is done",
              file=sys.stderr)
        return 130
    from train.report import format_report

    print(format_report(result.stages["evaluate"]["report"]))
    print(f"report: {options.out / 'report.html'} "
          f"({result.stages['total']['seconds'] / 60:.1f} min)")
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if display and not args.no_play and os.environ.get("SDL_VIDEODRIVER") != "dummy":
        print("opening the player (Esc quits)")
        return subprocess.call([sys.executable, "-m", "play", "dream", "--bundle",
                                str(options.work / "bundle")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

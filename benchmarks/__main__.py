"""``python -m benchmarks`` (or ``make bench``): every stage beside its
alternatives, measured in one run; prints tables and writes JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Model latency per backend (eager, TorchScript, ONNX Runtime) at batch "
                    "1/8/32 with FLOPs per frame and the share of this machine's matmul peak "
                    "they reach; data pipeline vs training step; serve aggregate frames/s for "
                    "1-16 lockstep clients vs the model in-process. All in one run, as "
                    "ratios. Without --bundle it records a little Doom, trains the tiny "
                    "preset briefly and exports it (speed does not depend on training).")
    p.add_argument("--bundle", type=Path, help="measure this bundle (default: make one)")
    p.add_argument("--work", type=Path, default=Path("runs/bench"),
                   help="scratch directory, reused between runs (default: runs/bench)")
    p.add_argument("--json", type=Path, default=None,
                   help="write the figures here (default: WORK/bench.json)")
    p.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quick", action="store_true", help="fewer rounds: a smoke test")
    p.add_argument("--preset", default="tiny",
                   help="the preset to make a bundle of without --bundle (default: tiny)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from benchmarks.suite import format_markdown, np_default, run

    start = time.perf_counter()
    try:
        results = run(args.work, args.bundle, args.device, args.quick, preset=args.preset)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    results["seconds"] = time.perf_counter() - start
    text = format_markdown(results)
    print(text)
    out = args.json or args.work / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=np_default) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n")
    print(f"\nfigures in {out}; {results['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

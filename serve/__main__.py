"""``python -m serve``: the dream server; ``python -m serve bench``: its benchmark."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from export.cli import add_fps_arg, add_model_args


def server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve",
        epilog="Protocol: serve/PROTOCOL.md. Benchmark: python -m serve bench --help.",
        description="Serve a world model over websockets at ws://HOST:PORT/dream: one dream "
                    "per client, every client's steps batched into one model call. Also "
                    "GET /healthz and GET /metrics (Prometheus) on the same port.")
    add_model_args(p, bf16=True)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default loopback; 0.0.0.0 to let others in)")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--token", default=None,
                   help="require this token in the hello (default: $TINYDREAMS_TOKEN if set)")
    p.add_argument("--origin", action="append", default=None, metavar="ORIGIN",
                   help="allow browsers from this Origin (repeatable; default: any)")
    p.add_argument("--max-sessions", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=16,
                   help="largest batch per model call, 1-64 (default 16)")
    p.add_argument("--max-delay-ms", type=float, default=4.0,
                   help="longest wait for stragglers when forming a batch")
    add_fps_arg(p, "realtime steps")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="seconds")
    p.add_argument("--drain-grace", type=float, default=30.0,
                   help="on SIGTERM, seconds the running dreams may go on (no new sessions, "
                        "GET /readyz answers 503) before they are closed; a second signal "
                        "or Ctrl-C closes them at once (default 30)")
    return p


async def _serve(args: argparse.Namespace) -> int:
    from export.runtime import backend_from_args
    from serve.server import DreamServer, ServerConfig

    backend = backend_from_args(args)
    config = ServerConfig(host=args.host, port=args.port,
                          token=args.token or os.environ.get("TINYDREAMS_TOKEN") or None,
                          origins=args.origin, max_sessions=args.max_sessions,
                          max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                          fps=args.fps, idle_timeout_s=args.idle_timeout, latent=args.latent,
                          drain_grace_s=args.drain_grace)
    server = DreamServer(backend, config)
    await server.start()
    print(f"serving on ws://{args.host}:{server.port}/dream", flush=True)
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    received = await signals.get()
    log = logging.getLogger("serve")
    if received == signal.SIGTERM:
        log.info("SIGTERM: draining for up to %g s", args.drain_grace)
        drain = asyncio.create_task(server.drain())
        again = asyncio.create_task(signals.get())
        await asyncio.wait({drain, again}, return_when=asyncio.FIRST_COMPLETED)
        again.cancel()
        if not drain.done():
            drain.cancel()
            log.info("a second signal: closing every session now")
    else:
        log.info("%s: closing every session", signal.Signals(received).name)
    await asyncio.wait_for(server.close(), 10)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    from export.manifest import BundleError

    try:
        if argv and argv[0] == "bench":
            from serve.bench import main as bench_main

            return bench_main(argv[1:])
        return asyncio.run(_serve(server_parser().parse_args(argv)))
    except (BundleError, ValueError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

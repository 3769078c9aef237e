"""`python -m taskhub worker --queue tasks [KIND=]module:function ...`: run a worker from the shell,
with the flags `taskhub-worker` has."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, Callable, List, Optional, Tuple

from . import _protocol as p
from .worker import Worker


def _handler_spec(text: str) -> Tuple[Optional[str], Callable[[Any], Any]]:
    """`[KIND=]module:function` as (kind, function); no kind means every kind."""
    kind, _, target = text.rpartition("=")
    module_name, colon, attr = target.partition(":")
    if not colon or not module_name or not attr:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not [KIND=]module:function (for example square=mytasks:square)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise argparse.ArgumentTypeError(f"cannot import {module_name}: {e}") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise argparse.ArgumentTypeError(f"{module_name} has no {attr}")
    if not callable(fn):
        raise argparse.ArgumentTypeError(f"{module_name}:{attr} is not callable")
    return (kind or None), fn


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(text: str) -> float:
    """`500ms`, `30s`, `5m`, `24h`, `7d` (a number alone is seconds) as seconds, as every taskhub
    binary reads durations."""
    t = text.strip()
    number = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(number):].strip() or "s"
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write a number and a unit, like 500ms, 30s or 5m"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: it is negative")
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: unknown unit {unit!r} (use ms, s, m, h or d)")
    return value * _UNITS[unit]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m taskhub")
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser(
        "worker", help="take tasks from a hub and run them with Python functions",
        description="Take tasks from a taskhub hub and run each with the function registered "
                    "for its kind. HANDLER is KIND=module:function, or module:function for "
                    "every kind without a handler of its own.")
    env = os.environ.get
    w.add_argument("handlers", metavar="HANDLER", nargs="+", type=_handler_spec)
    w.add_argument("--hub", default=env("TASKHUB_URL", "ws://127.0.0.1:7878"),
                   help="hub URL [env TASKHUB_URL]")
    cred = w.add_mutually_exclusive_group()
    cred.add_argument("--key", help="shared key; prefer --key-file, a key on the command "
                                    "line shows in ps [env TASKHUB_KEY]")
    cred.add_argument("--key-file", metavar="FILE",
                      help="file holding the shared key [env TASKHUB_KEY_FILE]")
    cred.add_argument("--token", help="a token instead of a key [env TASKHUB_TOKEN]")
    w.add_argument("--key-id", help="key id the key is registered under [env TASKHUB_KEY_ID]")
    w.add_argument("--ca", metavar="FILE", help="for wss://: trust the CA certificate(s) in "
                                                "this PEM file [env TASKHUB_CA]")
    w.add_argument("--queue", dest="queues", action="append", required=True,
                   help="queue to consume; repeat for several")
    w.add_argument("--concurrency", type=int,
                   help="tasks run at once [default: 1 thread (the GIL runs one at a time; more "
                        "help handlers that wait on I/O), or with --processes one per CPU]")
    w.add_argument("--processes", action="store_true",
                   help="run handlers in worker processes (for CPU-bound handlers) instead of "
                        "threads")
    w.add_argument("--prefetch", type=int,
                   help="tasks the hub may have out to this worker at once [default: adaptive]")
    w.add_argument("--grace", type=_duration, default=30.0, metavar="DURATION",
                   help="how long running tasks may finish after the first SIGTERM/SIGINT "
                        "(30s, 2m; a number alone is seconds) [default: 30s]")
    w.add_argument("--exit-when-idle", type=_duration, metavar="DURATION",
                   help="stop once no task has come or run for this long (30s, 5m)")
    w.add_argument("--name", help="name shown in the hub's stats and on the dashboard")
    w.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # Handlers are named relative to where the command runs, as with `python -m`.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        worker = Worker(args.hub, args.key, token=args.token, key_file=args.key_file,
                        key_id=args.key_id, cafile=args.ca, queues=args.queues,
                        concurrency=args.concurrency, prefetch=args.prefetch,
                        executor="processes" if args.processes else "threads",
                        name=args.name, stop_grace=args.grace,
                        exit_when_idle=args.exit_when_idle)
        for kind, fn in args.handlers:
            worker.add_handler(kind, fn)
        worker.run()
    except (ValueError, p.TaskhubError) as e:
        print(f"taskhub worker: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

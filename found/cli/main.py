"""Entry point of the ``found`` command.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``; the parser it adds
sets ``func`` (``args -> int`` exit code). User errors print one line and exit non-zero;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from ..errors import FoundError, one_line

#: Sub-command modules under found.cli, in help order.
COMMANDS = ["segment", "evaluate", "train", "download", "bench", "export", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="found", description="FOUND: unsupervised object localization (CVPR 2023).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"found.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"found.cli.{name}":
                continue  # sub-command not built in this version
            raise
        module.add_parser(sub)
    for name, subparser in sub.choices.items():  # `found segment … --debug` works too
        try:
            subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        except argparse.ArgumentError:
            pass  # the sub-command defines its own --debug
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("found: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `found download --list | head`: the reader left, stop quietly
        with contextlib.suppress(Exception):  # keep the interpreter's final flush from failing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except FoundError as e:
        if args.debug:
            raise
        print(f"found: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except (MemoryError, OSError) as e:
        if args.debug:
            raise
        what = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror and e.filename else one_line(e)
        print(f"found: error: {type(e).__name__}: {what} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

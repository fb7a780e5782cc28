"""Entry point of the ``found`` command.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``; the parser it adds
sets ``func`` (``args -> int`` exit code). User errors print one line and exit non-zero;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import FoundError
from ..hub import WeightsError

#: Sub-command modules under found.cli, in help order.
COMMANDS = ["segment", "evaluate", "train", "download", "bench"]


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
        print("found: interrupted", file=sys.stderr)
        return 130
    except (FoundError, WeightsError) as e:
        if args.debug:
            raise
        print(f"found: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except (MemoryError, OSError) as e:
        if args.debug:
            raise
        print(f"found: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

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
    """The ``found`` parser with every sub-command built into this version (``--debug`` accepted after each)."""
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
    """Run the ``found`` command line ``argv``; returns the exit code (the library-friendly entry point)."""
    return _run(argv)[0]


def console() -> None:
    """The ``found`` command (console script and ``python -m found``): run it, then exit.

    A sub-command that has finished and closed every output sets ``fast_exit``; the process then
    ends with ``os._exit`` after flushing stdout and stderr, skipping the interpreter's teardown of
    torch (≈ 0.2 s, a tenth of a short run). Not under a tracer or profiler, which write at exit.
    """
    code, args = _run(None)
    if getattr(args, "fast_exit", False) and sys.gettrace() is None and sys.getprofile() is None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _run(argv: list[str] | None) -> tuple[int, argparse.Namespace | None]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2, args
    try:
        return int(args.func(args) or 0), args
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("found: interrupted", file=sys.stderr)
        return 130, None
    except BrokenPipeError:  # e.g. `found download --list | head`: the reader left, stop quietly
        with contextlib.suppress(Exception):  # keep the interpreter's final flush from failing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1, None
    except FoundError as e:
        if args.debug:
            raise
        from .common import cli_message  # the library names fields; the CLI words them as flags

        print(f"found: error: {cli_message(e)}", file=sys.stderr)
        return e.exit_code, None
    except (MemoryError, OSError) as e:
        if args.debug:
            raise
        what = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror and e.filename else one_line(e)
        print(f"found: error: {type(e).__name__}: {what} (run with --debug for the traceback)", file=sys.stderr)
        return 1, None


if __name__ == "__main__":
    console()

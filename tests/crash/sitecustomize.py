"""Crash harness for the crash-safety tests: with ``FOUND_CRASH_AT=<point>:<n>`` in the environment,
the n-th time the process reaches ``<point>`` it kills itself with SIGKILL (as ``kill -9`` would: no
``finally``, no ``atexit``, no flush). Python imports this module at start-up when this folder is on
``PYTHONPATH``; production code holds no crash hooks. Points:

* ``image-write``   — the n-th ``ImageOutputs.write`` call, before it writes anything;
* ``image-written`` — just after the n-th ``ImageOutputs.write`` returns (outputs committed, no record yet);
* ``group-commit``  — the n-th ``AtomicGroup.commit``, right after its first rename (a mixed set on disk);
* ``journal-append``— the n-th ``Journal.append``, before its line is written;
* ``journal-torn``  — the n-th journal line is written half, then the process dies;
* ``replace=NAME``  — the n-th rename of a finished temporary onto a file named NAME (e.g. ``boxes.json``);
* ``video-frame``   — the n-th video frame handed to a video's encoders.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught


class _Counter:
    """Counts arrivals at the point and dies at the n-th."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def hit(self) -> bool:
        self.seen += 1
        return self.seen == self.n


class _OsProxy:
    """The ``os`` module with one function replaced (installed as a module's ``os`` global)."""

    def __init__(self, **overrides) -> None:
        self.__dict__.update(overrides)

    def __getattr__(self, name: str):
        return getattr(os, name)


def _wrap(owner, name: str, counter: _Counter, after: bool = False) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if not after and counter.hit():
            _die()
        out = original(*args, **kwargs)
        if after and counter.hit():
            _die()
        return out

    setattr(owner, name, wrapper)


def _group_commit(counter: _Counter) -> None:
    import found.io.files as files

    state = {"active": False}
    original = files.AtomicGroup.commit

    def commit(self):
        state["active"] = counter.hit()
        return original(self)

    def replace(src, dst, *a, **k):
        os.replace(src, dst, *a, **k)
        if state["active"]:
            _die()

    files.AtomicGroup.commit = commit
    files.os = _OsProxy(replace=replace)


def _replace_named(name: str, counter: _Counter) -> None:
    import found.io.files as files

    def replace(src, dst, *a, **k):
        if Path(dst).name == name and counter.hit():
            _die()
        return os.replace(src, dst, *a, **k)

    files.os = _OsProxy(replace=replace)


def _journal_torn(counter: _Counter) -> None:
    import found.io.journal as journal

    def write(fd, data):
        if len(data) > 1 and b"\"key\"" in bytes(data) and counter.hit():
            os.write(fd, bytes(data)[: len(data) // 2])
            _die()
        return os.write(fd, data)

    journal.os = _OsProxy(write=write)


def install(spec: str) -> None:
    """Arm the point named by ``spec`` (``<point>:<n>``)."""
    point, _, n = spec.rpartition(":")
    counter = _Counter(int(n))
    if point in ("image-write", "image-written"):
        from found.io.sinks import ImageOutputs

        _wrap(ImageOutputs, "write", counter, after=point == "image-written")
    elif point == "group-commit":
        _group_commit(counter)
    elif point == "journal-append":
        from found.io.journal import Journal

        _wrap(Journal, "append", counter)
    elif point == "journal-torn":
        _journal_torn(counter)
    elif point.startswith("replace="):
        _replace_named(point.removeprefix("replace="), counter)
    elif point == "video-frame":
        from found.video.sink import FrameWriter

        _wrap(FrameWriter, "add", counter)
    else:
        raise SystemExit(f"FOUND_CRASH_AT: unknown point {point!r}")


if os.environ.get("FOUND_CRASH_AT"):
    install(os.environ["FOUND_CRASH_AT"])

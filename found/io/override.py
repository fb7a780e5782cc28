"""A process-wide setting overridden while any of several concurrent users needs it.

``with`` blocks on one :class:`SharedOverride` may overlap across threads: the first to enter
applies the change, the last to leave undoes it, so the setting never stays changed and is never
undone under a user that still relies on it (a plain save/restore pair per user gets both wrong
when the blocks interleave).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator


class SharedOverride:
    """``apply()`` changes the setting and returns the function that restores it."""

    def __init__(self, apply: Callable[[], Callable[[], None]]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._users = 0
        self._restore: Callable[[], None] | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._restore = self._apply()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    restore, self._restore = self._restore, None
                    restore()

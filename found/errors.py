"""User-facing errors: the CLI prints them as one line (no traceback) and exits non-zero."""
from __future__ import annotations


class FoundError(Exception):
    """A user mistake or bad input; the message is shown as is."""

    exit_code = 2


class InputError(FoundError):
    """An input file cannot be used (unreadable, not an image, too small, …)."""

    exit_code = 1


class InferenceError(FoundError):
    """The model failed on an input (e.g. out of memory even alone); the batch goes on."""

    exit_code = 1

"""User-facing errors, one hierarchy: the CLI catches :class:`FoundError` alone, prints its message
as one line (no traceback) and exits with the error's ``exit_code``."""
from __future__ import annotations


class FoundError(Exception):
    """A user mistake or bad input; the message is shown as is (exit 2: a usage error)."""

    exit_code = 2


class OptionsError(FoundError, ValueError):
    """A run option out of range: ``field`` names it (the library's parameter; the CLI words it as its
    flag), ``detail`` says what is wrong (``batch_size must be at least 1, got 0``)."""

    exit_code = 2

    def __init__(self, field: str, detail: str) -> None:
        self.field, self.detail = field, detail
        super().__init__(f"{field} {detail}")

    def __reduce__(self):  # pickled with its two parts (Ray sends errors between processes)
        return type(self), (self.field, self.detail)


class InputError(FoundError):
    """An input file cannot be used (unreadable, not an image, too small, …)."""

    exit_code = 1


class WeightsError(FoundError):
    """A weight file is missing, unreachable, corrupt, unsafe or of the wrong architecture (exit 1,
    like any unusable input file; see docs/robustness.md)."""

    exit_code = 1


class InferenceError(FoundError):
    """The model failed on an input (e.g. out of memory even alone); the batch goes on."""

    exit_code = 1


def one_line(e: BaseException) -> str:
    """An exception's message on one line (whitespace folded), or its type's name when it has none."""
    return " ".join(str(e).split()) or type(e).__name__


def first_line(e: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, cut at ``limit`` characters (for file errors)."""
    text = one_line(e)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(e: BaseException, limit: int = 200) -> str:
    """An unexpected exception as ``Type: message`` on one line (message cut at ``limit``), for reports."""
    text = " ".join(str(e).split())[:limit]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__

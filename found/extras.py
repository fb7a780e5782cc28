"""Optional extras, loaded on demand: one helper and one wording for a missing extra.

``require("av", "video", "reading videos")`` returns the module, or raises a one-line
:class:`~found.errors.FoundError` (or the subclass the caller names) worded
``"reading videos needs the video extra (av is missing): pip install 'found[video]'"``.
Callers import their extras inside the functions that use them, so ``import found`` stays light.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import FoundError


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra`` (the one place it is spelled)."""
    return f"pip install 'found[{extra}]'"


def missing_extra_message(extra: str, module: str, what: str | None = None) -> str:
    """The one-line text for a missing extra: what needs it, which module is missing, how to install it."""
    return f"{what or 'this feature'} needs the {extra} extra ({module} is missing): {install_hint(extra)}"


def require(module: str, extra: str, what: str | None = None, error: type[Exception] = FoundError) -> ModuleType:
    """Import ``module`` (dotted names allowed) or raise ``error`` with the install hint of ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise error(missing_extra_message(extra, e.name or module, what)) from None

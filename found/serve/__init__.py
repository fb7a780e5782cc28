"""``found serve``: FOUND over HTTP (an ASGI app, a dynamic batcher, and a web page).

Only :class:`Settings` is imported eagerly; the app and the batcher need the ``serve`` extra
(FastAPI, uvicorn, python-multipart) and are imported when used, so ``import found`` stays light.
"""
from __future__ import annotations

from .settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)

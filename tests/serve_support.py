"""Helpers for the ``found serve`` tests: in-process clients, a gated model, bad uploads, a real server."""
from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@contextlib.asynccontextmanager
async def asgi_client(app):
    """An httpx client talking to ``app`` in-process, with the app's startup and shutdown run."""
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client


class GatedModel:
    """A model whose forward passes wait for ``gate`` (open at first): lets a test hold the model busy."""

    def __init__(self, model) -> None:
        self.model, self.gate, self.entered = model, threading.Event(), threading.Event()
        self.gate.set()
        self.calls: list[int] = []  # images per predict call

    @property
    def patch_size(self) -> int:
        return self.model.patch_size

    def predict(self, images, **kw):
        self.entered.set()
        self.calls.append(len(images))
        if not self.gate.wait(30):
            raise RuntimeError("gate never opened")
        return self.model.predict(images, **kw)


def huge_header_png(w: int = 100_000, h: int = 100_000) -> bytes:
    """A PNG whose header declares ``w``×``h`` pixels (valid CRC) with no pixel data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def bad_uploads(good: bytes) -> dict[str, bytes]:
    """The classes of bad input a server must refuse with a 4xx (and keep serving)."""
    return {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "text": b"just some text, not an image\n" * 4,
        "html": b"<!doctype html><html><head><title>x</title></head><body><img src=x onerror=alert(1)></body></html>",
        "huge_header": huge_header_png(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def running_server(args: list[str], log: Path, ready_timeout: float = 120) -> Iterator[tuple[str, subprocess.Popen]]:
    """``found serve ARGS`` as a real uvicorn process on 127.0.0.1 and a free port; yields (url, process)."""
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "found", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout} s:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)

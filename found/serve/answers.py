"""What the server does around the model, as plain functions run on its decode/encode threads:
check and decode an upload, and turn a prediction into the JSON or PNG answer.

No web framework here: the app (:mod:`found.serve.app`) calls these and words the errors.
"""
from __future__ import annotations

import base64
import io
import json
import time
from typing import Iterable

import numpy as np
from PIL import Image

from ..engine import Engine, Result
from ..errors import InputError, one_line
from ..io.images import LoadedImage, quiet_warnings
from ..io.records import SCHEMA_VERSION, result_record
from ..io.render import png_bytes as encode_png, render_result

#: Answers a request can ask for: the JSON record, or one PNG.
PNG_KINDS = ("mask", "soft", "cutout", "overlay")
OUTPUTS = ("json",) + PNG_KINDS
#: How messages name an upload (the engine's name for in-memory bytes), cut from error messages.
UPLOAD_LABEL = "<bytes>"
#: PNG compression: level 1 is several times faster than Pillow's default 6 for a few % more bytes.
PNG_LEVEL = 1


class TooManyPixels(InputError):
    """The image's header declares more pixels than the server accepts (answered with 413)."""


def choose_output(output: str | None, accept: str | None) -> str:
    """The answer's kind: ``output`` when given, else a PNG mask if ``Accept`` prefers PNG, else JSON."""
    if output:
        return output
    accept = (accept or "").lower()
    if "image/png" in accept and "application/json" not in accept:
        return "mask"
    return "json"


def parse_include(include: str | None) -> list[str]:
    """``"mask,cutout"`` → ``["mask", "cutout"]`` (PNGs to embed in a JSON answer); ValueError if unknown."""
    kinds = [k.strip() for k in (include or "").split(",") if k.strip()]
    unknown = [k for k in kinds if k not in PNG_KINDS]
    if unknown:
        raise ValueError(f"include: unknown output {unknown[0]!r} (choose from {', '.join(PNG_KINDS)})")
    return list(dict.fromkeys(kinds))


def check_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels``, before anything is decoded.

    Headers Pillow cannot read pass: :meth:`Engine.load` then gives the same reason as ``found segment``.
    """
    try:
        with quiet_warnings(), Image.open(io.BytesIO(data)) as im:  # Pillow's bomb warning: refused below
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise TooManyPixels(f"refused, image too large for Pillow's decompression-bomb guard ({e})") from None
    except Exception:
        return
    if w * h > max_pixels:
        raise TooManyPixels(f"image is {w}×{h} px ({w * h / 1e6:.1f} Mpx), over this server's limit of "
                            f"{max_pixels / 1e6:g} Mpx")


def decode(engine: Engine, data: bytes, max_pixels: int) -> LoadedImage:
    """The upload decoded by the engine at its processing size (``bytes`` only: never a path)."""
    check_pixels(data, max_pixels)
    return engine.load(bytes(data))


def reason(e: BaseException) -> str:
    """An error's one-line reason, without the engine's name for the upload (as in the CLI's report)."""
    return one_line(e).removeprefix(f"{UPLOAD_LABEL}: ")


def result_png(kind: str, result: Result) -> bytes:
    """One PNG of a result at the upload's full resolution (drawn by :mod:`found.io.render`)."""
    return encode_png(render_result([kind], result)[kind], PNG_LEVEL)


def json_answer(result: Result, timings: dict[str, float], batch_size: int, include: Iterable[str] = (),
                started: float | None = None) -> bytes:
    """The JSON answer: the schema version and the result's record (docs/records.md: size, score,
    boxes, instances, notes), then ``mask_fraction``, ``batch_size``, ``timings`` (ms; ``encode``
    measured here, ``total`` since ``started``, a ``perf_counter`` value) and any PNGs asked for as
    data URLs."""
    t0 = time.perf_counter()
    images = {}
    for kind in include:
        images[kind] = "data:image/png;base64," + base64.b64encode(result_png(kind, result)).decode("ascii")
    doc = {"schema_version": SCHEMA_VERSION, **result_record(result),
           "mask_fraction": round(float(np.mean(result.prediction.mask)), 6), "batch_size": batch_size}
    timings = {**timings, "encode": (time.perf_counter() - t0) * 1000}
    if started is not None:
        timings["total"] = (time.perf_counter() - started) * 1000
    doc["timings"] = {k: round(v, 3) for k, v in timings.items()}
    if images:
        doc["images"] = images
    return json.dumps(doc).encode("utf-8")

"""One renderer per output kind: a prediction → the image a file, a video frame or an HTTP answer shows.

* ``mask`` — the binary mask, 8-bit grey (0 / 255);
* ``soft`` — the object probability × 255, rounded, 8-bit grey;
* ``cutout`` — RGBA: the input's colours, the mask as alpha, never more opaque than the file's own
  alpha (a video frame has none);
* ``overlay`` — RGB: the mask tinted half-way to red, the box outlined in yellow.

Every surface draws through :func:`render` (or :func:`render_result`), and encodes PNGs with
:func:`png_bytes`; nothing else in the package draws an output. numpy and Pillow only.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

#: The output kinds, in the order surfaces list them.
KINDS = ("mask", "soft", "cutout", "overlay")
#: Kinds drawn over the input's own pixels (they need the image at full resolution).
PIXEL_KINDS = ("cutout", "overlay")
#: The overlay's tint (mask pixels half-way to it) and box colour.
TINT, BOX_COLOUR = (255, 40, 40), (255, 255, 0)


def mask_image(mask: np.ndarray) -> Image.Image:
    """A binary mask as an 8-bit image (0 / 255)."""
    return Image.fromarray(mask.astype(np.uint8) * 255)


def soft_image(pred: Any) -> Image.Image:
    """A prediction's probability map as an 8-bit image (probability × 255, rounded)."""
    if hasattr(pred, "soft_uint8"):  # scaled up from a reduced size: no full-size float copy
        return Image.fromarray(pred.soft_uint8())
    return Image.fromarray(np.clip(pred.soft * 255 + 0.5, 0, 255).astype(np.uint8))


def cutout_image(rgb: np.ndarray, mask: np.ndarray, file_alpha: np.ndarray | None = None) -> Image.Image:
    """RGBA cut-out: the mask as alpha, never more opaque than the file's own alpha."""
    alpha = mask.astype(np.uint8) * 255
    if file_alpha is not None:
        alpha = np.minimum(alpha, file_alpha)
    return Image.fromarray(np.dstack([rgb, alpha]))


def overlay_image(rgb: np.ndarray, mask: np.ndarray, box: Any) -> Image.Image:
    """The image with the mask tinted and the box outlined (for a quick visual check)."""
    tint = np.array(TINT, np.float32)
    out = np.array(rgb, dtype=np.uint8, copy=True)
    out[mask] = (0.5 * rgb[mask].astype(np.float32) + 0.5 * tint).round().astype(np.uint8)  # only the masked pixels in float
    im = Image.fromarray(out)
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        ImageDraw.Draw(im).rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=BOX_COLOUR,
                                     width=max(1, min(rgb.shape[:2]) // 150))
    return im


def needs_pixels(kinds: Any) -> bool:
    """Whether any of ``kinds`` is drawn over the input's pixels (cut-out, overlay)."""
    return any(k in PIXEL_KINDS for k in kinds)


def render(kind: str, pred: Any, rgb: np.ndarray | None = None, file_alpha: np.ndarray | None = None) -> Image.Image:
    """The image of output ``kind`` for prediction ``pred`` (at the input's full resolution);
    ``rgb`` (uint8 [H, W, 3]) is needed for the cut-out and the overlay, ``file_alpha`` is the
    input's own alpha, if any (images only: a video frame has none)."""
    if kind == "mask":
        return mask_image(pred.mask)
    if kind == "soft":
        return soft_image(pred)
    if kind not in PIXEL_KINDS:
        raise ValueError(f"unknown output {kind!r} (choose from {', '.join(KINDS)})")
    if rgb is None:
        raise ValueError(f"the {kind} output needs the image's pixels")
    if kind == "cutout":
        return cutout_image(rgb, pred.cutout_mask(rgb), file_alpha)
    return overlay_image(rgb, pred.mask, pred.box)


def render_result(kinds: Any, result: Any) -> dict[str, Image.Image]:
    """The images of ``kinds`` for an engine result, the input decoded at full resolution (with its
    alpha) once, and only when a kind needs its pixels."""
    kinds = list(kinds)
    rgb = alpha = None
    if needs_pixels(kinds):
        full = result.full_image()
        rgb, alpha = full.rgb(), full.alpha()
    return {k: render(k, result.prediction, rgb, alpha) for k in kinds}


def png_bytes(image: Image.Image, compress_level: int | None = None) -> bytes:
    """An image as PNG bytes (``compress_level`` 0–9; None: Pillow's default, as files are written)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", **({} if compress_level is None else {"compress_level": compress_level}))
    return buf.getvalue()

"""Reading images from disk into uint8 RGB arrays (EXIF orientation applied, alpha dropped)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and decode the first frame, EXIF orientation applied; one-line InputError on failure."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            im.load()
            return im
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: refused, image too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot decode image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any Pillow mode → uint8 [H, W, 3] RGB (16-bit scaled, palette/alpha flattened by dropping alpha)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if a.max(initial=0) > 255 else 255.0
        a = np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        return np.repeat(np.clip(a + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB").convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an image file."""
    return to_rgb_array(open_image(path))

"""Reading and normalising images into uint8 RGB: every failure is a one-line :class:`InputError`.

Two entry points:

* :func:`to_rgb_array` — **the** image normaliser: whatever a user passes (a path, encoded bytes, a
  Pillow image of any mode, uint8 pixels as an array or tensor) → uint8 [H, W, 3] RGB at full size.
  The predictor, the engine (through :func:`read_image`), the server and the solver's inputs
  (:mod:`found.refine.inputs`) all take images through it; only :mod:`found.evaluate.datasets`
  keeps the authors' own loader, on purpose (the paper's numbers).
* :func:`read_image` — what the engine uses: the first frame, EXIF orientation applied, any mode
  turned into RGB (+ alpha kept aside for cut-outs), and a cap on the longer side applied while
  decoding (JPEG ``draft()``, then ``resize(reducing_gap=…)`` which uses ``reduce()``), so a huge
  photo is never expanded at full size in memory. Anything worth telling the user (first frame of
  an animation, downscaling) is returned in ``notes``.

Pillow's decompression-bomb guard stays as Pillow sets it: images above
``2 * Image.MAX_IMAGE_PIXELS`` (≈179 Mpx by default) are refused; between 1× and 2× they are read
without a warning since the cap bounds what happens next. See docs/robustness.md.
"""
from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .override import SharedOverride

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
#: Video suffixes taken when scanning folders (files given by name are detected by content: found.video).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv",
                  ".flv", ".ogv", ".3gp", ".y4m"}

#: EXIF orientation → the transpose that undoes it (as ``ImageOps.exif_transpose``).
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TRANSPOSING = {5, 6, 7, 8}
#: Modes ``resize`` handles with a real filter (``1`` and ``P`` would fall back to nearest).
_RESIZABLE = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "I;16", "I;16L", "I;16B", "F"}


@dataclass
class LoadedImage:
    """An image ready for inference: ``image`` (mode RGB or RGBA) at the processing size."""

    path: Path | None  # the file, or None for an in-memory input
    image: Image.Image
    original_size: tuple[int, int]  # (width, height) of the file, orientation applied
    notes: list[str] = field(default_factory=list)
    name: str = ""  # how messages name this input (the path, or e.g. "<bytes #3>")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image as processed (reduced when over ``max_side``)."""
        return self.image.size

    @property
    def downscaled(self) -> bool:
        """True when the image is processed at a smaller size than the file's."""
        return self.image.size != self.original_size

    def rgb(self) -> np.ndarray:
        """uint8 [H, W, 3] pixels (alpha ignored: the backbone sees colours only)."""
        return to_rgb_array(self.image)

    def alpha(self) -> np.ndarray | None:
        """uint8 [H, W] alpha of the file (None when it has none); kept for cut-outs."""
        if self.image.mode != "RGBA":
            return None
        return np.asarray(self.image.getchannel("A"), dtype=np.uint8)


def _ignore_warnings() -> Callable[[], None]:
    saved = warnings.catch_warnings()
    saved.__enter__()
    warnings.simplefilter("ignore")
    return lambda: saved.__exit__(None, None, None)


#: ``catch_warnings()`` + ``simplefilter("ignore")``, safe for concurrent readers: ``catch_warnings``
#: alone puts back, on each exit, the global filter list it saw on entry, so overlapping reads in
#: decoding threads (``found segment --workers``) could print a warning meant to be silenced or leave
#: the "ignore" filter installed for good.
quiet_warnings = SharedOverride(_ignore_warnings)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _open(path: Path) -> Image.Image:
    """``Image.open`` with every failure turned into a one-line InputError."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file (device, pipe or socket)")
        if st.st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
    except FileNotFoundError:
        raise InputError(f"{path}: {'broken symbolic link' if path.is_symlink() else 'no such file'}") from None
    except OSError as e:
        if e.errno == 40:  # ELOOP
            raise InputError(f"{path}: symbolic link loop") from None
        raise InputError(f"{path}: cannot read ({e.strerror or _why(e)})") from None
    try:
        with quiet_warnings():  # bomb warnings (the cap applies) and corrupt-metadata chatter
            return Image.open(path)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read (unknown format or corrupt header)") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: refused, image too large for Pillow's decompression-bomb guard ({e})") from None
    except MemoryError:
        raise InputError(f"{path}: not enough memory to open this image") from None
    except Exception as e:  # Pillow's plugins raise many types on hostile headers
        raise InputError(f"{path}: cannot open image ({_why(e)})") from None


def _decode_error(path: object, e: BaseException) -> InputError:
    if isinstance(e, InputError):
        return e
    if isinstance(e, Image.DecompressionBombError):
        return InputError(f"{path}: refused, image too large for Pillow's decompression-bomb guard ({e})")
    if isinstance(e, MemoryError):
        return InputError(f"{path}: not enough memory to decode this image")
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if "truncated" in msg.lower() or isinstance(e, EOFError):
        return InputError(f"{path}: truncated image file (decoding stopped early)")
    return InputError(f"{path}: cannot decode image ({_why(e)})")


def _frame_note(im: Image.Image) -> str | None:
    n = getattr(im, "n_frames", 1)
    if not isinstance(n, int) or n <= 1:
        return None
    kind = {"TIFF": "multi-page TIFF", "MPO": "multi-picture JPEG"}.get(im.format or "", f"animated {im.format or 'image'}")
    unit = "pages" if im.format == "TIFF" else "frames"
    return f"{kind}: only the first of {n} {unit} was used"


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # unreadable EXIF is ignored, as exif_transpose does
        return 1


def _high_bit_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey → 8-bit ``L`` (16-bit containers scaled by 255/65535)."""
    if im.mode.startswith("I;16"):
        a = np.asarray(im).astype(np.uint32)
        a = (a * 255 + 32767) // 65535
    elif im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        peak = 65535 if a.max(initial=0) > 255 else 255
        a = (np.clip(a, 0, peak) * 255 + peak // 2) // peak
    else:  # "F": stretch the finite range to 0..255
        a = np.asarray(im, dtype=np.float32)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        a = np.zeros(a.shape, np.float32) if hi <= lo else (np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo) - lo) * (255.0 / (hi - lo))
        a = np.clip(a + 0.5, 0, 255)
    return Image.fromarray(a.astype(np.uint8), mode="L")


def to_working_mode(im: Image.Image) -> Image.Image:
    """Any Pillow mode → ``RGB``, or ``RGBA`` when the image has alpha or palette transparency."""
    if im.mode in ("RGB", "RGBA"):
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return _high_bit_to_l(im).convert("RGB")
    has_alpha = "A" in im.getbands() or (im.mode in ("P", "L", "RGB", "1") and "transparency" in im.info)
    return im.convert("RGBA" if has_alpha else "RGB")


class PixelTypeError(InputError, TypeError):
    """Pixels of a type or dtype the normaliser does not take (uint8 arrays and tensors only)."""


class PixelShapeError(InputError, ValueError):
    """Pixels of a shape that is not an image ([H, W] grey, [H, W, 1|3] or, with alpha, [H, W, 4])."""


def checked_pixels(a: object, name: str | None = None, alpha: bool = True) -> np.ndarray:
    """uint8 [H, W] or [H, W, 1|3] (and 4 with ``alpha``) pixels, numpy or a tensor brought to the CPU."""
    label = f"{name}: " if name else ""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor (torch is not imported here)
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise PixelTypeError(f"{label}unsupported image type {type(a).__name__}: use a path, encoded bytes, "
                             "a PIL image or uint8 pixels")
    if a.dtype != np.uint8:
        raise PixelTypeError(f"{label}expected uint8 pixels, got {a.dtype}")
    channels = (1, 3, 4) if alpha else (1, 3)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in channels)):
        raise PixelShapeError(f"{label}expected an [H, W, 3] RGB image ({' or '.join(map(str, channels))} channels, "
                              f"or [H, W] grey), got shape {a.shape}")
    if a.size == 0:
        raise PixelShapeError(f"{label}empty image of shape {a.shape}")
    return a


def to_rgb_array(image: object, name: str | None = None, alpha: bool = True) -> np.ndarray:
    """The one image normaliser: path, encoded bytes, Pillow image (any mode) or uint8 pixels → uint8 [H, W, 3] RGB."""
    # Paths and bytes: first frame, EXIF orientation applied; 16-bit scaled down; alpha dropped (4
    # channels refused with alpha=False); a contiguous uint8 RGB array comes back as it is. Failures
    # are one-line InputErrors (also TypeError / ValueError), naming ``name`` when given.
    if isinstance(image, Image.Image):
        im = to_working_mode(image)
        return np.ascontiguousarray(np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8))
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        return read_image(image, name=name).rgb()
    a = checked_pixels(image, name, alpha)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a if a.shape[2] == 3 else a[..., :3])


def capped_size(size: tuple[int, int], max_side: int | None, min_side: int = 1) -> tuple[int, int]:
    """(w, h) scaled so the longer side is at most ``max_side`` (None/0: no cap); the shorter side is
    kept at least ``min(min_side, its original length)`` so a thin image still spans a patch."""
    w, h = size
    if not max_side or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(min(w, min_side), round(w * s), 1), max(min(h, min_side), round(h * s), 1)


#: What :func:`read_image` accepts: a file path, encoded bytes, a Pillow image or uint8 pixels.
ImageSource = "str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray"


def source_name(source: object, index: int | None = None) -> str:
    """How messages name an input: its path, or ``<bytes #i>`` / ``<image #i>`` for in-memory ones."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    kind = "bytes" if isinstance(source, (bytes, bytearray, memoryview)) else "image"
    return f"<{kind}>" if index is None else f"<{kind} #{index}>"


def read_image(source, max_side: int | None = None, min_side: int = 1, name: str | None = None) -> LoadedImage:
    """First frame of ``source`` in RGB/RGBA, with its longer side capped at ``max_side``.

    ``source`` is a path or encoded bytes (EXIF orientation applied), or a Pillow image or uint8
    [H, W, 3|4] array (taken as it is). Images whose shorter side is below ``min_side`` (e.g. one
    patch) are refused with an InputError. JPEGs are decoded at a reduced scale (``draft``) when the
    cap allows, others reduced right after decoding, so memory stays near the size of the file's
    pixels, never a float copy of them. Every failure is a one-line :class:`InputError` naming ``name``.
    """
    label = name or source_name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _decode(_open(path), path, label, max_side, min_side, orient=True, owned=True)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(_open_bytes(bytes(source), label), None, label, max_side, min_side, orient=True, owned=True)
    if isinstance(source, Image.Image):
        return _decode(source, None, label, max_side, min_side, orient=False, owned=False)
    return _decode(_array_image(source, label), None, label, max_side, min_side, orient=False, owned=True)


def _open_bytes(data: bytes, label: str) -> Image.Image:
    """``Image.open`` on encoded bytes, every failure a one-line InputError."""
    if not data:
        raise InputError(f"{label}: empty file (0 bytes)")
    try:
        with quiet_warnings():
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(f"{label}: not an image Pillow can read (unknown format or corrupt header)") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{label}: refused, image too large for Pillow's decompression-bomb guard ({e})") from None
    except Exception as e:  # Pillow's plugins raise many types on hostile headers
        raise InputError(f"{label}: cannot open image ({_why(e)})") from None


def _array_image(a, label: str) -> Image.Image:
    """uint8 [H, W], [H, W, 1|3|4] pixels (numpy or torch) as a Pillow image (alpha kept for cut-outs)."""
    a = checked_pixels(a if hasattr(a, "cpu") else np.asarray(a), label)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return Image.fromarray(np.ascontiguousarray(a))


def _decode(im: Image.Image, path: Path | None, label: str, max_side: int | None, min_side: int, *,
            orient: bool, owned: bool) -> LoadedImage:
    """The first frame of an opened image, oriented (files), capped and in RGB/RGBA."""
    notes: list[str] = []
    try:
        with (im if owned else contextlib.nullcontext()), quiet_warnings():
            note = _frame_note(im)
            if note:
                notes.append(note)
            if owned:
                im.seek(0)
            rotation = _orientation(im) if orient else 1
            w0, h0 = im.size
            orig = (h0, w0) if rotation in _TRANSPOSING else (w0, h0)
            if min(orig) < min_side:
                raise InputError(f"{label}: image is {orig[0]}×{orig[1]} px, smaller than one {min_side}×{min_side} patch")
            target = capped_size((w0, h0), max_side, min_side)
            if target != (w0, h0) and im.format == "JPEG" and owned:
                im.draft(None, target)  # DCT-domain 1/2, 1/4 or 1/8 scale, still at least `target`
            im.load()
            out: Image.Image = im
            if out.size != target and out.mode not in _RESIZABLE:
                out = to_working_mode(out)
            if out.size != target:
                out = out.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
            if rotation in _ORIENT:
                out = out.transpose(_ORIENT[rotation])
            out = to_working_mode(out)
            if out is im:
                out = im.copy()  # detach from the file (or the caller's image) before it is closed
    except Exception as e:
        raise _decode_error(label, e) from None
    if out.size != orig:
        notes.append(f"downscaled {orig[0]}×{orig[1]} → {out.size[0]}×{out.size[1]} for inference (max_side={max_side})")
    return LoadedImage(path, out, orig, notes, name=label)


def open_image(path: str | os.PathLike) -> Image.Image:
    """The first frame at full size, EXIF orientation applied (mode as in the file, or RGB/RGBA)."""
    return read_image(path).image


def load_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an image file at full size (:func:`to_rgb_array` of a path)."""
    return to_rgb_array(path)

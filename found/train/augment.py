"""The authors' training augmentations, without torchvision (Pillow, NumPy, SciPy).

FOUND's ``cropping_strategy: random_scale`` (the DUTS-TR config) does, per image:

1. resize the shorter side to ``crop_size`` (bilinear; the longer side ``int(long/short·crop)``);
2. rescale both sides by ``s ~ U(0.1, 3.0)`` (``int(side·s)``, bilinear);
3. resize to ``crop_size × crop_size`` (bilinear) — the authors' code takes **no crop** in this
   strategy, so step 2 only changes the resolution the final image is resampled from, and
   step 3 squashes the aspect ratio;
4. Gaussian blur with probability 0.5: kernel ``int(0.1·min(H, W)) // 2 · 2 + 1`` (23 at 224),
   σ ~ U(0.1, 2.0), reflect-101 borders (OpenCV's ``GaussianBlur``).

Bilinear resizing is Pillow's (what torchvision's ``resize`` calls on PIL images), so steps 1–3 are
pixel-identical to the reference; the blur is computed in float64 and rounded (OpenCV rounds a
fixed-point sum, so a pixel may differ by one level). All randomness comes from the
``numpy.random.Generator`` passed in, so an image's augmentation depends only on its seed.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .config import TrainConfig


def shorter_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(H, W) with the shorter side = ``size`` and the other ``int(other / shorter · size)``."""
    if w > h:
        return size, int(float(w) / h * size)
    return int(float(h) / w * size), size


def resize(im: Image.Image, h: int, w: int) -> Image.Image:
    """Bilinear resize to (h, w) (Pillow's antialiased bilinear, as torchvision on PIL images)."""
    if im.size == (w, h):
        return im
    return im.resize((w, h), Image.BILINEAR)


def resize_shorter(im: Image.Image, size: int) -> Image.Image:
    """Bilinear resize so the shorter side is ``size`` (step 1 of the authors' augmentation)."""
    w, h = im.size
    return resize(im, *shorter_side_size(h, w, size))


def random_scale(im: Image.Image, rng: np.random.Generator, scale_range: tuple[float, float]) -> Image.Image:
    """Rescale both sides by one factor drawn uniformly from ``scale_range`` (floored, ≥ 1 px)."""
    s = rng.uniform(*scale_range)
    w, h = im.size
    return resize(im, max(1, int(h * s)), max(1, int(w * s)))


def random_crop(im: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Random ``size × size`` crop; smaller images are first padded right/bottom with their mean colour."""
    w, h = im.size
    if w < size or h < size:
        fill = tuple(np.asarray(im).mean(axis=(0, 1)).astype(np.uint8).tolist())
        canvas = Image.new("RGB", (max(w, size), max(h, size)), fill)
        canvas.paste(im, (0, 0))
        im, (w, h) = canvas, canvas.size
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return im.crop((left, top, left + size, top + size))


def center_crop(im: Image.Image, size: int) -> Image.Image:
    """Central ``size × size`` crop, zero-padded symmetrically when the image is smaller."""
    w, h = im.size
    if w < size or h < size:
        canvas = Image.new("RGB", (max(w, size), max(h, size)), (0, 0, 0))
        canvas.paste(im, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        im, (w, h) = canvas, canvas.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def blur_kernel_size(h: int, w: int) -> int:
    """Odd kernel size ≈ 10 % of the shorter side (the authors' formula)."""
    return int((0.1 * min(w, h)) // 2 * 2 + 1)


def gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps (OpenCV's ``getGaussianKernel`` for σ > 0)."""
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2.0
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def gaussian_blur(pixels: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of uint8 [H, W, C] with reflect-101 borders, rounded back to uint8."""
    k = gaussian_kernel(ksize, sigma)
    out = ndimage.correlate1d(pixels.astype(np.float64), k, axis=0, mode="mirror")
    out = ndimage.correlate1d(out, k, axis=1, mode="mirror")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def augment(im: Image.Image, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """One training sample: RGB PIL image → uint8 [crop, crop, 3] following ``cfg``."""
    size = cfg.crop_size
    if cfg.cropping_strategy == "center_crop":  # the authors' "no augmentation" path
        return np.asarray(center_crop(im, size), dtype=np.uint8).copy()
    im = resize_shorter(im, size)
    if cfg.cropping_strategy == "random_scale":
        im = random_scale(im, rng, cfg.scale_range)
        im = resize(im, size, size)
    else:  # random_crop, random_crop_and_hflip
        im = random_crop(im, size, rng)
        if cfg.cropping_strategy == "random_crop_and_hflip" and rng.random() > 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.array(im, dtype=np.uint8)  # a writable copy
    if cfg.photometric_aug == "gaussian_blur":
        h, w = pixels.shape[:2]
        if rng.random() < cfg.proba_photometric_aug:
            sigma = rng.uniform(0.1, 2.0)
            pixels = gaussian_blur(pixels, blur_kernel_size(h, w), sigma)
    return np.ascontiguousarray(pixels)

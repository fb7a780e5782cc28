"""Photo-like test images (smooth background, one bright ellipse, noise) and JPEG files made of them."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_images(n: int, hw: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Smooth backgrounds with one bright ellipse each, plus noise (decodes/encodes like photos)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        base = rng.uniform(40, 120, 3)[None, None] + (yy[..., None] / h) * rng.uniform(-40, 40, 3)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img = base + inside[..., None] * rng.uniform(80, 130, 3)[None, None] + rng.normal(0, 6, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def synthetic_photo(folder: Path, size: tuple[int, int]) -> Path:
    """One photo-like JPEG of ``size`` = (W, H) in ``folder`` (quality 90), for the profile's split."""
    from PIL import Image

    photo = folder / f"photo_{size[0]}x{size[1]}.jpg"
    Image.fromarray(synthetic_images(1, (size[1], size[0]), seed=11)[0]).save(photo, quality=90)
    return photo


def jpeg_folder(folder: Path, n: int, hw: tuple[int, int]) -> list[Path]:
    """``n`` JPEG files of size ``hw`` (at most 64 distinct pictures; the others are copies)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, a in enumerate(synthetic_images(min(n, 64), hw, seed=7)):
        Image.fromarray(a).save(folder / f"img{i:04d}.jpg", quality=90)
    for i in range(n):  # more files than distinct pictures: copies (decoding cost is the same)
        f = folder / f"img{i:04d}.jpg"
        if not f.exists():
            f.write_bytes((folder / f"img{i % 64:04d}.jpg").read_bytes())
        files.append(f)
    return files

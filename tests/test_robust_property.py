"""Property-based robustness: random bytes, random valid images (modes, formats, sizes) and damaged
copies of them, fed to the loader and to the CLI. The loader returns RGB or raises InputError; the CLI
exits 0 or 1, never with a traceback, never leaving temporary files."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from found.errors import InputError
from found.io.images import read_image
from helpers import leftovers, run_cli, tiny  # noqa: F401  (fixture)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

#: mode → formats Pillow can write it in
FORMATS = {
    "1": ["PNG", "BMP", "TIFF", "GIF"],
    "L": ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"],
    "LA": ["PNG", "TIFF"],
    "P": ["PNG", "BMP", "GIF", "TIFF"],
    "RGB": ["PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM"],
    "RGBA": ["PNG", "TIFF", "WEBP"],
    "CMYK": ["JPEG", "TIFF"],
    "I;16": ["PNG", "TIFF"],
    "I": ["TIFF"],
    "F": ["TIFF"],
}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif", "WEBP": ".webp", "PPM": ".ppm"}


@st.composite
def images(draw) -> tuple[bytes, str, tuple[int, int], bool]:
    """(file bytes, suffix, (w, h), damaged?) for a random image, sometimes truncated or bit-flipped."""
    mode = draw(st.sampled_from(sorted(FORMATS)))
    fmt = draw(st.sampled_from(FORMATS[mode]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    if mode in ("I;16", "I", "F"):
        im = Image.fromarray((rgb[..., 0].astype(np.float32) * 257).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    elif mode != "RGB":
        im = im.convert(mode)
    kw = {"transparency": 0} if mode == "P" and fmt == "PNG" and draw(st.booleans()) else {}
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip":
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
    return data, SUFFIX[fmt], (w, h), damage != "none"


random_files = st.tuples(st.binary(min_size=0, max_size=2048), st.sampled_from(sorted(set(SUFFIX.values()))))


def _check_loader(path: Path, size: tuple[int, int] | None) -> bool:
    """Load; True if it loaded (and then the array is right), False on InputError. Anything else fails."""
    try:
        li = read_image(path)
    except InputError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
        return False
    a = li.rgb()
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    if size is not None:
        assert (a.shape[1], a.shape[0]) == size
    return True


@SETTINGS
@given(random_files)
def test_loader_on_random_bytes(case) -> None:
    data, suffix = case
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{suffix}"
        p.write_bytes(data)
        _check_loader(p, None)


@SETTINGS
@given(images())
def test_loader_on_random_images(case) -> None:
    data, suffix, size, damaged = case
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{suffix}"
        p.write_bytes(data)
        loaded = _check_loader(p, None if damaged else size)
        assert loaded or damaged  # an intact image always loads


@pytest.mark.slow
@SETTINGS
@given(st.lists(st.one_of(images(), random_files.map(lambda c: (c[0], c[1], None, True))), min_size=1, max_size=3))
def test_cli_on_random_inputs(tiny, cases) -> None:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        paths, expect_ok = [], []
        for i, (data, suffix, size, damaged) in enumerate(cases):
            p = d / "in" / f"f{i}{suffix}"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(data)
            paths.append(p)
            expect_ok.append(not damaged and size is not None and min(size) >= 8)
        out = d / "out"
        r = run_cli(["segment", *map(str, paths), "-o", str(out), "--mask", "--cutout", *tiny.args()])
        assert "Traceback" not in r.err
        assert r.code in (0, 1), r.err
        n_ok = int(r.err.split(" ok,")[0].split()[-1])
        assert n_ok >= sum(expect_ok)
        assert r.code == (0 if n_ok == len(paths) else 1), r.err
        for p, ok, (_, _, size, _) in zip(paths, expect_ok, cases):
            if ok:
                assert Image.open(out / f"{p.stem}_mask.png").size == size
            if size is not None and min(size) < 8 and not (out / f"{p.stem}_mask.png").exists():
                pass  # refused (smaller than a patch) or damaged
        assert leftovers(d) == []

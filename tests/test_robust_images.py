"""Robustness of image reading: every bad input is a one-line InputError, every odd-but-valid one loads."""
from __future__ import annotations

import builtins
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from found.errors import InputError
from found.io.images import capped_size, load_image, read_image, to_rgb_array
from helpers import noise_image, run_cli, tiny  # noqa: F401  (fixture)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG signature + IHDR declaring w×h RGB, no pixel data (a cheap decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def good_png(tmp_path: Path) -> Path:
    p = tmp_path / "good.png"
    noise_image(48, 40).save(p)
    return p


# ---------------------------------------------------------------- unreadable inputs → InputError

def _bad_files(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name → (path, expected words in the error)."""
    d = tmp_path / "bad"
    d.mkdir()
    cases = {}
    (d / "empty.png").write_bytes(b"")
    cases["empty"] = (d / "empty.png", "empty file")
    full = good.read_bytes()
    (d / "trunc.png").write_bytes(full[: len(full) // 2])
    cases["truncated png"] = (d / "trunc.png", "truncated")
    buf = d / "full.jpg"
    noise_image(64, 64).save(buf, quality=90)
    jb = buf.read_bytes()
    (d / "trunc.jpg").write_bytes(jb[: len(jb) // 2])
    cases["truncated jpeg"] = (d / "trunc.jpg", "truncated")
    (d / "random.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases["random bytes"] = (d / "random.jpg", "not an image")
    (d / "notes.png").write_text("this is a text file, not a picture\n")
    cases["text file"] = (d / "notes.png", "not an image")
    (d / "folder.jpg").mkdir()
    cases["directory"] = (d / "folder.jpg", "is a directory")
    cases["missing"] = (d / "missing.png", "no such file")
    (d / "bomb.png").write_bytes(_png_header_only(40000, 40000))
    cases["decompression bomb"] = (d / "bomb.png", "decompression-bomb")
    os.symlink(d / "loop_b.png", d / "loop_a.png")
    os.symlink(d / "loop_a.png", d / "loop_b.png")
    cases["symlink loop"] = (d / "loop_a.png", "symbolic link loop")
    os.mkfifo(d / "pipe.png")  # reading it would block forever
    cases["fifo"] = (d / "pipe.png", "not a regular file")
    os.symlink(d / "nowhere.png", d / "dangling.png")
    cases["dangling symlink"] = (d / "dangling.png", "broken symbolic link")
    return cases


def test_bad_inputs_raise_one_line_input_errors(tmp_path: Path, good_png: Path) -> None:
    for name, (path, words) in _bad_files(tmp_path, good_png).items():
        with pytest.raises(InputError) as ei:
            read_image(path)
        msg = str(ei.value)
        assert words in msg, (name, msg)
        assert str(path) in msg and "\n" not in msg, (name, msg)


def test_permission_denied_is_reported(tmp_path: Path, good_png: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, where chmod 000 does not block reads: simulate the EACCES of open()."""
    real_open = builtins.open

    def fake_open(file, *a, **k):
        if str(file) == str(good_png):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(InputError, match="permission denied"):
        read_image(good_png)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; simulated in the test above")
def test_permission_denied_real_chmod(tmp_path: Path, good_png: Path) -> None:
    good_png.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            read_image(good_png)
    finally:
        good_png.chmod(0o644)


# ---------------------------------------------------------------- odd but valid images

def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    Image.new("RGB", (32, 24), (220, 30, 30)).convert("CMYK").save(p, quality=95)
    assert Image.open(p).mode == "CMYK"
    a = load_image(p)
    assert a.shape == (24, 32, 3) and a.dtype == np.uint8
    r, g, b = a.reshape(-1, 3).mean(0)
    assert r > 180 and g < 80 and b < 80  # still red, not inverted


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    p = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(p)
    assert Image.open(p).mode.startswith("I;16")
    a = load_image(p)
    assert a.shape == (8, 64, 3)
    assert a[0, 0, 0] == 0 and a[0, -1, 0] == 255
    assert np.all(np.diff(a[0, :, 0].astype(int)) >= 0)  # monotone: a ramp, not saturated at 255
    assert 100 < a[0, 32, 0] < 160


def test_palette_png_with_transparency_keeps_alpha(tmp_path: Path) -> None:
    p = tmp_path / "pal.png"
    rgb = noise_image(40, 32)
    pal = rgb.quantize(16)
    pal.info["transparency"] = 0
    pal.save(p, transparency=0)
    li = read_image(p)
    assert li.image.mode == "RGBA"
    alpha = li.alpha()
    idx = np.asarray(Image.open(p))
    assert alpha is not None and np.array_equal(alpha == 0, idx == 0)
    assert li.rgb().shape == (32, 40, 3)


@pytest.mark.parametrize("mode", ["LA", "RGBA", "1", "L", "P", "I", "F"])
def test_modes_load_as_rgb(tmp_path: Path, mode: str) -> None:
    im = noise_image(30, 20, mode)
    p = tmp_path / f"m.{'tif' if mode in ('I', 'F') else 'png'}"
    im.save(p)
    a = load_image(p)
    assert a.shape == (20, 30, 3) and a.dtype == np.uint8
    if mode == "1":
        assert set(np.unique(a)) <= {0, 255}
    li = read_image(p)
    assert (li.alpha() is not None) == (mode in ("LA", "RGBA"))


def test_rgba_alpha_ignored_for_inference(tmp_path: Path) -> None:
    rgb = noise_image(24, 16)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.zeros((16, 24), np.uint8)))  # fully transparent
    p = tmp_path / "a.png"
    rgba.save(p)
    assert np.array_equal(load_image(p), np.asarray(rgb))  # colours kept even where alpha is 0
    assert np.array_equal(read_image(p).alpha(), np.zeros((16, 24), np.uint8))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    im = noise_image(40, 24)
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    li = read_image(p)
    swapped = orientation in (6, 8)
    assert li.original_size == ((24, 40) if swapped else (40, 24))
    assert np.array_equal(li.rgb(), expected)
    # also when the cap applies: the reduced image is oriented the same way
    small = read_image(p, max_side=20)
    assert small.size == ((12, 20) if swapped else (20, 12))


def test_animated_gif_uses_first_frame_and_says_so(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 16), c) for c in [(250, 0, 0), (0, 250, 0), (0, 0, 250)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    li = read_image(p)
    assert li.rgb()[0, 0].tolist()[0] > 200 and li.rgb()[0, 0].tolist()[1] < 50
    assert any("animated GIF" in n and "first of 3 frames" in n for n in li.notes)


def test_multipage_tiff_uses_first_page_and_says_so(tmp_path: Path) -> None:
    pages = [Image.new("RGB", (20, 16), c) for c in [(0, 0, 250), (250, 0, 0)]]
    p = tmp_path / "pages.tif"
    pages[0].save(p, save_all=True, append_images=pages[1:])
    li = read_image(p)
    assert li.rgb()[0, 0].tolist() == [0, 0, 250]
    assert any("multi-page TIFF" in n and "first of 2 pages" in n for n in li.notes)


def test_smaller_than_a_patch_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "tiny.png"
    noise_image(5, 30).save(p)
    with pytest.raises(InputError, match=r"5×30 px, smaller than one 8×8 patch"):
        read_image(p, min_side=8)
    assert read_image(p).size == (5, 30)  # the library reader itself does not refuse


def test_cap_keeps_thin_images_one_patch_wide(tmp_path: Path) -> None:
    assert capped_size((4000, 10), 1024, 8) == (1024, 8)
    assert capped_size((4000, 3000), 1024, 8) == (1024, 768)
    assert capped_size((500, 300), 1024, 8) == (500, 300)
    assert capped_size((4000, 3000), None, 8) == (4000, 3000)


def test_large_jpeg_is_decoded_reduced_with_draft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import JpegImagePlugin

    p = tmp_path / "large.jpg"
    Image.new("RGB", (4000, 3000), (20, 120, 200)).save(p, quality=80)
    scales = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        r = real_draft(self, mode, size)
        scales.append(self.size)
        return r

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    li = read_image(p, max_side=1024)
    assert li.size == (1024, 768) and li.original_size == (4000, 3000)
    assert scales and max(scales[0]) <= 2048  # decoded at a reduced scale, never 4000×3000
    assert any("downscaled 4000×3000 → 1024×768" in n for n in li.notes)


def test_decompression_bomb_warning_range_is_read_quietly(tmp_path: Path) -> None:
    """Between MAX_IMAGE_PIXELS and twice it, Pillow only warns: we read it (capped) without warnings."""
    import warnings

    p = tmp_path / "wide.png"
    old = Image.MAX_IMAGE_PIXELS
    Image.new("L", (300, 200)).save(p)
    try:
        Image.MAX_IMAGE_PIXELS = 40000  # 60000 px is in the warning range
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            li = read_image(p, max_side=100)
        assert li.size == (100, 67)
        Image.MAX_IMAGE_PIXELS = 20000  # now above 2×: refused
        with pytest.raises(InputError, match="decompression-bomb"):
            read_image(p, max_side=100)
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_to_rgb_array_accepts_any_mode() -> None:
    for mode in ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"]:
        im = noise_image(9, 7).convert("L").convert(mode) if mode.startswith("I") or mode == "F" else noise_image(9, 7, mode)
        a = to_rgb_array(im)
        assert a.shape == (7, 9, 3) and a.dtype == np.uint8, mode


# ---------------------------------------------------------------- the same inputs through the CLI

def test_cli_reports_every_bad_input_and_keeps_going(tmp_path: Path, good_png: Path, tiny) -> None:
    bad = _bad_files(tmp_path, good_png)
    inputs = [str(good_png)] + [str(p) for p, _ in bad.values()]
    out = tmp_path / "out"
    r = run_cli(["segment", *inputs, "-o", str(out), *tiny.args()])
    assert r.code == 1
    assert "Traceback" not in r.err
    assert r.counts == (1, 0, len(bad), 0)
    for name, (path, words) in bad.items():
        if name == "directory":  # a folder argument is scanned; named like an image it holds none
            assert f"failed: {path}: no images found in this folder" in r.err
            continue
        assert any(line.startswith(f"  failed: {path}: ") and words in line for line in r.err.splitlines()), (name, r.err)
    assert (out / "good_mask.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == [".found-journal.jsonl", "good_mask.png"]


def test_cli_notes_first_frame_small_image_and_modes(tmp_path: Path, tiny) -> None:
    d = tmp_path / "in"
    d.mkdir()
    frames = [noise_image(32, 24, seed=s).convert("P") for s in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    noise_image(32, 24).save(d / "pages.tif", save_all=True, append_images=[noise_image(32, 24, seed=3)])
    noise_image(4, 4).save(d / "speck.png")
    Image.new("RGB", (32, 24), (200, 20, 20)).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (24, 1))).save(d / "deep.png")
    for mode in ["LA", "1", "RGBA"]:
        noise_image(32, 24, mode).save(d / f"mode_{mode}.png")
    out = tmp_path / "out"
    r = run_cli(["segment", str(d), "-o", str(out), "--mask", "--cutout", *tiny.args()])
    assert r.code == 1, r.err
    assert r.counts == (7, 0, 1, 0)
    assert f"failed: {d / 'speck.png'}: image is 4×4 px, smaller than one 8×8 patch" in r.err
    assert f"note: {d / 'anim.gif'}: animated GIF: only the first of 3 frames was used" in r.err
    assert f"note: {d / 'pages.tif'}: multi-page TIFF: only the first of 2 pages was used" in r.err
    for stem in ["anim", "pages", "cmyk", "deep", "mode_LA", "mode_1", "mode_RGBA"]:
        assert Image.open(out / f"{stem}_mask.png").size == (32, 24), stem
        assert Image.open(out / f"{stem}_cutout.png").mode == "RGBA", stem


def test_cli_cutout_keeps_file_alpha(tmp_path: Path, tiny) -> None:
    im = noise_image(32, 32)
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:, :16] = 0
    im.putalpha(Image.fromarray(alpha))
    im.save(tmp_path / "a.png")
    r = run_cli(["segment", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--mask", "--cutout", *tiny.args()])
    assert r.code == 0, r.err
    cut = np.asarray(Image.open(tmp_path / "o" / "a_cutout.png"))
    mask = np.asarray(Image.open(tmp_path / "o" / "a_mask.png")) > 0
    assert np.all(cut[:, :16, 3] == 0)  # transparent in the file → transparent in the cut-out
    assert np.array_equal(cut[:, 16:, 3] > 0, mask[:, 16:])


def test_cli_exif_rotated_outputs_follow_orientation(tmp_path: Path, tiny) -> None:
    im = noise_image(40, 24)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    r = run_cli(["segment", str(tmp_path / "rot.jpg"), "-o", str(tmp_path / "o"), *tiny.args()])
    assert r.code == 0, r.err
    assert Image.open(tmp_path / "o" / "rot_mask.png").size == (24, 40)


def test_cli_unicode_spaces_and_symlink_loops(tmp_path: Path, tiny) -> None:
    d = tmp_path / "dossier été" / "写真 album"
    d.mkdir(parents=True)
    noise_image(24, 24).save(d / "photo 1 ünï.png")
    (d / "sub").mkdir()
    noise_image(24, 24, seed=2).save(d / "sub" / "deeper é.png")
    os.symlink(d, d / "sub" / "loop")  # folder loop: never followed
    os.symlink(d / "x.png", d / "y.png")
    os.symlink(d / "y.png", d / "x.png")  # file loop
    out = tmp_path / "sortie ñ"
    r = run_cli(["segment", str(d), "-r", "-o", str(out), *tiny.args()])
    assert r.code == 1, r.err
    assert r.counts == (2, 0, 2, 0)
    assert "symbolic link loop" in r.err and "Traceback" not in r.err
    assert (out / "photo 1 ünï_mask.png").is_file()
    assert (out / "sub" / "deeper é_mask.png").is_file()
    assert not (out / "sub" / "loop").exists()

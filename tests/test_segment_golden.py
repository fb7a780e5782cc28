"""``found segment`` writes what the library computes, and what it wrote before the engine existed.

Neither check depends on the CPU it runs on (see tests/agreement.py):

* on this machine, pixel for pixel: the engine, whatever its workers and batch size, writes exactly
  what the plain predictor gives image by image (the inputs have distinct padded sizes, so no batch
  mixes two images and both sides run the same float operations);
* against the recorded reference (tests/fixtures/segment_reference, see its README; run with the
  paper's numerics, ``--precision fp32 --max-side 0``, whatever the defaults): binary masks
  exact at every decided pixel, soft masks within one grey level, boxes and scores as recorded, and
  cut-outs and overlays exactly what their definitions make of the input and the reference mask.

``python tests/test_segment_golden.py record DIR`` records a new reference into DIR.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agreement import assert_grey_levels_close, assert_masks_agree, assert_same_box, decided, tie_fraction
from helpers import run_cli, write_tiny_checkpoint

REFERENCE = Path(__file__).parent / "fixtures" / "segment_reference"
STEMS = ["alpha", "astronaut", "coffee", "coffee_crop", "grey_odd", "retina"]
pytestmark = pytest.mark.numerics


def golden_inputs(images: Path, dst: Path) -> Path:
    """The bundled photos plus a JPEG crop, an RGBA image and an odd-sized grey image."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(images.glob("*.png")):
        shutil.copy(p, dst / p.name)
    a = np.array(Image.open(images / "coffee.png").convert("RGB"))
    Image.fromarray(a[40:240, 60:333]).save(dst / "coffee_crop.jpg", quality=90)
    rgba = np.dstack([a[:120, :160], np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (120, 1))])
    Image.fromarray(rgba, "RGBA").save(dst / "alpha.png")
    Image.fromarray(a[:97, :131]).convert("L").save(dst / "grey_odd.png")
    return dst


def decode(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB pixels and alpha (None without) of an input, decoded by Pillow alone."""
    with Image.open(path) as im:
        im.load()
        alpha = np.array(im.getchannel("A")) if "A" in im.getbands() else None
        return np.array(im.convert("RGB")), alpha


def expected_overlay(rgb: np.ndarray, mask: np.ndarray, box) -> np.ndarray:
    """The overlay as documented: mask pixels half-way to red (255, 40, 40), rounded half to even,
    the box outlined in yellow inside (x1, y1)–(x2 − 1, y2 − 1), max(1, min(H, W) // 150) px wide."""
    out = rgb.astype(np.float64)
    out[mask] = 0.5 * out[mask] + 0.5 * np.array([255.0, 40.0, 40.0])
    out = np.round(out).astype(np.uint8)
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        w = max(1, min(rgb.shape[:2]) // 150)
        ys, xs = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
        outer = (xs >= x1) & (xs <= x2 - 1) & (ys >= y1) & (ys <= y2 - 1)
        inner = (xs >= x1 + w) & (xs <= x2 - 1 - w) & (ys >= y1 + w) & (ys <= y2 - 1 - w)
        out[outer & ~inner] = (255, 255, 0)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, images_dir):
    root = tmp_path_factory.mktemp("golden")
    return write_tiny_checkpoint(root / "ckpt"), golden_inputs(images_dir, root / "in")


@pytest.fixture(scope="module")
def model(setup):
    from found import build_found

    tiny, _ = setup
    return build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False)


#: The recorded reference is the paper's numerics: fp32, each image at its own size.
PAPER = ["--precision", "fp32", "--max-side", "0"]


def segment_all(setup, out: Path, workers: str = "0", batch_size: str = "1", extra: tuple[str, ...] = ()) -> dict:
    """``found segment IN -o OUT --all [extra]``; boxes.json by input stem, the input folder written IN."""
    tiny, inputs = setup
    r = run_cli(["segment", str(inputs), "-o", str(out), "--all", "--workers", workers, "--batch-size", batch_size,
                 *extra, *tiny.args()])
    assert r.code == 0, r.err
    boxes = json.loads((out / "boxes.json").read_text().replace(str(inputs), "IN"))
    return boxes


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


@pytest.mark.parametrize("workers,batch_size", [("0", "1"), ("0", "4"), ("3", "1"), ("3", "4")])
def test_engine_writes_pixel_for_pixel_what_the_predictor_gives(setup, model, tmp_path, workers, batch_size):
    from found.model.preprocess import padded_size
    from found.io.render import cutout_image, overlay_image, soft_image

    _, inputs = setup
    boxes = segment_all(setup, tmp_path, workers, batch_size, ("--max-side", "0"))  # each image at its own size
    sources = sorted(p for p in inputs.iterdir())
    assert [p.stem for p in sources] == STEMS
    decoded = {p.stem: decode(p) for p in sources}
    sizes = [padded_size(*rgb.shape[:2], model.patch_size) for rgb, _ in decoded.values()]
    assert len(set(sizes)) == len(sizes), "precondition: no two inputs share a padded size (no batch mixes images)"
    records = {Path(r["file"]).stem: r for r in boxes["images"]}
    for stem, (rgb, alpha) in decoded.items():
        pred = model.predict(rgb, batch_size=1)[0]
        assert np.array_equal(read(tmp_path / f"{stem}_mask.png"), pred.mask.astype(np.uint8) * 255), stem
        assert np.array_equal(read(tmp_path / f"{stem}_soft.png"), np.array(soft_image(pred))), stem
        assert np.array_equal(read(tmp_path / f"{stem}_cutout.png"), np.array(cutout_image(rgb, pred.mask, alpha))), stem
        assert np.array_equal(read(tmp_path / f"{stem}_overlay.png"), np.array(overlay_image(rgb, pred.mask, pred.box))), stem
        rec = records[stem]
        assert rec["box_xyxy"] == (None if pred.box is None else [int(v) for v in pred.box]), stem
        assert rec["score"] == round(pred.score, 6) and (rec["width"], rec["height"]) == (rgb.shape[1], rgb.shape[0])


def load_reference() -> tuple[dict, dict]:
    """The recorded boxes.json and, by stem, the soft mask (float64), binary mask and patch probabilities."""
    if not REFERENCE.is_dir():
        pytest.fail(f"recorded reference {REFERENCE} is missing")
    with np.load(REFERENCE / "patch_probs.npz") as z:
        patch = {k: z[k] for k in z.files}
    ref = {}
    for stem in STEMS:
        soft = read(REFERENCE / f"{stem}_soft16.png").astype(np.float64) / 65535.0
        ref[stem] = {"soft": soft, "mask": read(REFERENCE / f"{stem}_mask.png").astype(bool), "patch_probs": patch[stem]}
    return json.loads((REFERENCE / "boxes.json").read_text()), ref


@pytest.mark.parametrize("workers,batch_size", [("0", "1"), ("3", "4")])
def test_outputs_match_the_recorded_reference(setup, tmp_path, workers, batch_size):
    _, inputs = setup
    ref_boxes, ref = load_reference()
    boxes = segment_all(setup, tmp_path, workers, batch_size, PAPER)
    assert {k: v for k, v in boxes.items() if k != "images"} == {k: v for k, v in ref_boxes.items() if k != "images"}
    assert [r["file"] for r in boxes["images"]] == [r["file"] for r in ref_boxes["images"]]
    for got, want in zip(boxes["images"], ref_boxes["images"]):
        stem = Path(want["file"]).stem
        assert_same_box(got["box_xyxy"], want["box_xyxy"], ref[stem]["patch_probs"], (want["height"], want["width"]), 8,
                        f"{stem} box")
        assert abs(got["score"] - want["score"]) <= 2e-6, stem
        assert {k: v for k, v in got.items() if k not in ("score", "box_xyxy", "box_xywh")} == \
            {k: v for k, v in want.items() if k not in ("score", "box_xyxy", "box_xywh")}
    for stem in STEMS:
        r = ref[stem]
        rgb, alpha = decode(next(inputs.glob(stem + ".*")))
        mask = read(tmp_path / f"{stem}_mask.png")
        assert set(np.unique(mask)) <= {0, 255}
        assert_masks_agree(mask > 127, r["mask"], r["soft"], f"{stem} mask")
        assert_grey_levels_close(read(tmp_path / f"{stem}_soft.png"), np.round(r["soft"] * 255), f"{stem} soft")
        firm = decided(r["soft"])
        cut = read(tmp_path / f"{stem}_cutout.png")
        assert cut.shape == (*rgb.shape[:2], 4) and np.array_equal(cut[..., :3], rgb), f"{stem} cut-out colours"
        want_alpha = np.where(r["mask"], 255 if alpha is None else alpha, 0)
        assert np.array_equal(cut[..., 3][firm], want_alpha[firm]), f"{stem} cut-out alpha"
        overlay = read(tmp_path / f"{stem}_overlay.png")
        want_overlay = expected_overlay(rgb, r["mask"], ref_box(ref_boxes, stem))
        assert np.array_equal(overlay[firm], want_overlay[firm]), f"{stem} overlay"


def ref_box(boxes: dict, stem: str):
    return next(r["box_xyxy"] for r in boxes["images"] if Path(r["file"]).stem == stem)


def test_reference_is_decided_almost_everywhere():
    """The recorded masks are worth comparing: both classes present, ties (|p − 0.5| ≤ 1e-4) rare."""
    _, ref = load_reference()
    for stem, r in ref.items():
        assert np.array_equal(r["mask"], r["soft"] > 0.5), stem  # 'multi': the mask is the thresholded soft mask
        assert 0.02 < r["mask"].mean() < 0.98, stem
        assert tie_fraction(r["soft"]) < 0.01, stem


def record(dst: Path) -> None:
    """Write a new reference into ``dst``: 16-bit soft masks, masks, patch probabilities, boxes.json."""
    import tempfile

    from found import build_found
    from found.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = (write_tiny_checkpoint(root / "ckpt"), golden_inputs(Path(__file__).parent / "data" / "images", root / "in"))
        boxes = segment_all(setup, root / "out", extra=PAPER)
        tiny, inputs = setup
        model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False, precision="fp32")
        dst.mkdir(parents=True, exist_ok=True)
        probs = {}
        for res in Engine(model, workers=0, batch_size=1, max_side=None).run(sorted(inputs.iterdir())):
            stem, pred = Path(res.name).stem, res.prediction
            cli_soft = read(root / "out" / f"{stem}_soft.png")
            assert np.array_equal(cli_soft, np.clip(pred.soft * 255 + 0.5, 0, 255).astype(np.uint8)), stem
            Image.fromarray(np.round(pred.soft.astype(np.float64) * 65535).astype(np.uint16)).save(dst / f"{stem}_soft16.png")
            Image.fromarray(pred.mask).save(dst / f"{stem}_mask.png")
            probs[stem] = pred.patch_probs
        np.savez_compressed(dst / "patch_probs.npz", **probs)
        (dst / "boxes.json").write_text(json.dumps(boxes, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] != ["record"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_segment_golden.py record DIR")
    record(Path(sys.argv[2]))

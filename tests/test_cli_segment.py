"""``found segment``: outputs, names, boxes.json, folders/globs, and agreement with the Python API."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agreement import assert_grey_levels_close, assert_masks_agree
from helpers import noise_image, run_cli, tiny  # noqa: F401  (fixture)


def test_all_outputs_on_the_test_images(tmp_path: Path, tiny, images_dir: Path) -> None:
    out = tmp_path / "out"
    r = run_cli(["segment", str(images_dir), "-o", str(out), "--all", "--max-side", "128", *tiny.args()])
    assert r.code == 0, r.err
    assert r.counts == (3, 0, 0, 0)
    doc = json.loads((out / "boxes.json").read_text())
    assert doc["mode"] == "multi" and len(doc["images"]) == 3
    for name in ["astronaut", "coffee", "retina"]:
        src = Image.open(images_dir / f"{name}.png")
        for kind in ["mask", "soft"]:
            im = Image.open(out / f"{name}_{kind}.png")
            assert im.size == src.size and im.mode == "L", (name, kind)
        mask = np.asarray(Image.open(out / f"{name}_mask.png"))
        assert set(np.unique(mask)) <= {0, 255}
        assert Image.open(out / f"{name}_cutout.png").mode == "RGBA"
        assert Image.open(out / f"{name}_overlay.png").mode == "RGB"
        rec = next(e for e in doc["images"] if e["file"].endswith(f"{name}.png"))
        assert (rec["width"], rec["height"]) == src.size
        if rec["box_xyxy"] is not None:
            x1, y1, x2, y2 = rec["box_xyxy"]
            assert rec["box_xywh"] == [x1, y1, x2 - x1, y2 - y1]
            assert 0 <= x1 < x2 <= src.size[0] and 0 <= y1 < y2 <= src.size[1]


def test_cli_matches_the_python_api(tmp_path: Path, tiny) -> None:
    from found import build_found

    p = tmp_path / "x.png"
    noise_image(40, 32).save(p)
    r = run_cli(["segment", str(p), "-o", str(tmp_path / "out"), "--mask", "--soft", "--mode", "single", *tiny.args()])
    assert r.code == 0, r.err
    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu")
    pred = model.predict(str(p), mode="single")[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "x_mask.png")) > 0, pred.mask)
    soft = np.asarray(Image.open(tmp_path / "out" / "x_soft.png")).astype(int)
    assert np.abs(soft - np.clip(pred.soft * 255 + 0.5, 0, 255).astype(int)).max() <= 1


def test_recursive_folders_keep_relative_names(tmp_path: Path, tiny) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    noise_image(16, 16).save(src / "top.png")
    noise_image(16, 16, seed=1).save(src / "a" / "b" / "deep.jpg")
    (src / ".hidden.png").write_bytes(b"not even an image")  # hidden files are not scanned
    (src / "readme.txt").write_text("ignored: not an image suffix")
    r = run_cli(["segment", str(src), "-r", "-o", str(tmp_path / "out"), *tiny.args()])
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "top_mask.png").is_file()
    assert (tmp_path / "out" / "a" / "b" / "deep_mask.png").is_file()
    r = run_cli(["segment", str(src), "-o", str(tmp_path / "flat"), *tiny.args()])
    assert r.code == 0 and sorted(p.name for p in (tmp_path / "flat").iterdir()) == [".found-journal.jsonl", "top_mask.png"]


def test_same_stem_twice_gets_distinct_outputs(tmp_path: Path, tiny) -> None:
    for d in ["a", "b"]:
        (tmp_path / d).mkdir()
        noise_image(16, 16).save(tmp_path / d / "x.png")
    r = run_cli(["segment", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "-o", str(tmp_path / "out"), *tiny.args()])
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".found-journal.jsonl", "x_1_mask.png", "x_mask.png"]


def test_a_renamed_stem_never_takes_another_inputs_name(tmp_path: Path, tiny) -> None:
    """a/x, b/x and c/x_1: the second x must not become x_1, which c/x_1 already is (outputs would collide)."""
    for d, stem in [("a", "x"), ("b", "x"), ("c", "x_1")]:
        (tmp_path / d).mkdir()
        noise_image(16, 16, seed=len(d + stem)).save(tmp_path / d / f"{stem}.png")
    inputs = [str(tmp_path / d / f"{stem}.png") for d, stem in [("a", "x"), ("b", "x"), ("c", "x_1")]]
    r = run_cli(["segment", *inputs, "-o", str(tmp_path / "out"), "--mask", "--boxes", *tiny.args()])
    assert r.code == 0 and r.counts == (3, 0, 0, 0), r.err
    masks = sorted(p.name for p in (tmp_path / "out").glob("*_mask.png"))
    assert masks == ["x_1_mask.png", "x_2_mask.png", "x_mask.png"]
    boxes = json.loads((tmp_path / "out" / "boxes.json").read_text())
    assert sorted(e["file"] for e in boxes["images"]) == sorted(inputs)


def test_glob_patterns_and_duplicates(tmp_path: Path, tiny) -> None:
    for i in range(2):
        noise_image(16, 16, seed=i).save(tmp_path / f"g{i}.png")
    (tmp_path / "d.png").mkdir()  # a folder the glob also matches
    r = run_cli(["segment", str(tmp_path / "*.png"), str(tmp_path / "g0.png"), "-o", str(tmp_path / "out"), *tiny.args()])
    assert r.code == 1
    assert r.counts == (2, 0, 1, 0)  # g0 given twice is done once
    assert f"failed: {tmp_path / 'd.png'}: is a directory, not an image" in r.err


@pytest.mark.numerics
@pytest.mark.parametrize("batch_size", [1, 3])
def test_batch_size_changes_float_rounding_only(tmp_path: Path, tiny, batch_size: int) -> None:
    """Three images of one size: one batch of 3, or one by one; each as when segmented alone."""
    from found import build_found

    for i in range(3):
        noise_image(24, 24, seed=i).save(tmp_path / f"b{i}.png")
    out = tmp_path / f"out{batch_size}"
    r = run_cli(["segment", *[str(tmp_path / f"b{i}.png") for i in range(3)], "-o", str(out), "--soft", "--mask",
                 "--batch-size", str(batch_size), *tiny.args()])
    assert r.code == 0, r.err
    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False)
    for i in range(3):
        alone = model.predict(str(tmp_path / f"b{i}.png"))[0]
        assert_grey_levels_close(np.asarray(Image.open(out / f"b{i}_soft.png")), np.round(alone.soft * 255), f"b{i} soft")
        assert_masks_agree(np.asarray(Image.open(out / f"b{i}_mask.png")) > 127, alone.mask, alone.soft, f"b{i} mask")


def test_output_folder_inside_the_input_folder_is_not_reprocessed(tmp_path: Path, tiny) -> None:
    src = tmp_path / "src"
    src.mkdir()
    noise_image(24, 24).save(src / "a.png")
    for _ in range(2):  # the second run must not take a_mask.png for an input
        r = run_cli(["segment", str(src), "-o", str(src), "--mask", "--soft", "--overwrite", *tiny.args()])
        assert r.code == 0, r.err
        assert "1 ok" in r.err
    assert sorted(p.name for p in src.iterdir()) == [".found-journal.jsonl", "a.png", "a_mask.png", "a_soft.png"]


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_refine_end_to_end_matches_the_python_api(tmp_path: Path, tiny, images_dir: Path, mode: str) -> None:
    """``found segment --refine`` writes what ``Found.predict(refine=True)`` returns, and that is the
    authors' rule applied to the unrefined prediction: the solver's mask where its IoU > 0.5."""
    from found import build_found
    from found.refine import refine_masks

    out = tmp_path / "out"
    r = run_cli(["segment", str(images_dir), "-o", str(out), "--mask", "--refine", "--mode", mode,
                 "--max-side", "96", "--workers", "2", *tiny.args()])
    assert r.code == 0, r.err
    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu")
    changed = 0
    for name in ["astronaut", "coffee", "retina"]:
        written = np.asarray(Image.open(out / f"{name}_mask.png")) > 0
        src = Image.open(images_dir / f"{name}.png").convert("RGB")
        src.thumbnail((96, 96))  # what --max-side 96 processes (the mask is scaled back to the file size)
        rgb = np.asarray(src)
        refined = model.predict(rgb, mode=mode, refine=True)[0].mask
        plain = model.predict(rgb, mode="multi")[0].mask
        rule = refine_masks([rgb], [plain.astype(np.float32)], keep="all" if mode == "multi" else "single")[0]
        if mode == "multi":
            assert np.array_equal(refined, rule.mask)
        changed += int(not np.array_equal(refined, plain))
        small = np.asarray(Image.fromarray(written).resize(rgb.shape[1::-1], Image.NEAREST))
        assert small.shape == refined.shape
        assert (small == refined).mean() > 0.98  # same mask, up to the resampling back to full size
    assert changed >= 1  # the solver did something on at least one photo

"""``found segment --coco FILE`` and ``Prediction.instances``: the run's objects as one COCO
dataset (pycocotools loads it; each RLE is exactly the instance's pixels of the written mask),
instances in boxes.json, filters as options, bad inputs reported and left out, reruns consistent."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import require
from found import build_found
from found.io.coco import decode_rle, load_coco
from found.engine import Engine
from helpers import leftovers, noise_image, run_cli, tiny  # noqa: F401  (fixture)


@pytest.fixture()
def folder(tmp_path: Path, images_dir: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for p in sorted(images_dir.glob("*.png")):
        shutil.copy(p, d / p.name)
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    return d


def _components(mask: np.ndarray) -> list[np.ndarray]:
    labeled, n = ndimage.label(mask)
    return [labeled == k for k in range(1, n + 1)]


def test_coco_file_loads_in_pycocotools_and_each_rle_is_that_instances_pixels(tmp_path, folder, tiny):
    require("pycocotools", "coco")
    out, coco_path = tmp_path / "out", tmp_path / "labels" / "coco.json"
    r = run_cli(["segment", str(folder), "-o", str(out), "--mask", "--boxes", "--coco", str(coco_path), *tiny.args()])
    assert r.code == 1 and r.counts == (3, 0, 2, 0)  # the two bad files are reported
    assert set(r.failed()) == {str(folder / "empty.png"), str(folder / "text.jpg")}
    coco = load_coco(coco_path)
    files = sorted(str(p) for p in folder.glob("*.png") if p.name != "empty.png")
    assert [im["path"] for im in coco.dataset["images"]] == files  # bad inputs are not in the file
    assert [im["file_name"] for im in coco.dataset["images"]] == [Path(f).name for f in files]  # relative to the folder
    assert [c["name"] for c in coco.dataset["categories"]] == ["object"]
    boxes = {e["file"]: e for e in json.loads((out / "boxes.json").read_text())["images"]}
    n_objects = 0
    for im in coco.dataset["images"]:
        path = Path(im["path"])
        written = np.asarray(Image.open(out / f"{path.stem}_mask.png")) > 127
        assert (im["height"], im["width"]) == written.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        comps = _components(written)
        assert len(anns) == len(comps) == len(boxes[im["path"]]["instances"])
        got = sorted((decode_rle(a["segmentation"]) for a in anns), key=lambda m: (-m.sum(), np.argmax(m)))
        want = sorted(comps, key=lambda m: (-m.sum(), np.argmax(m)))
        for g, w, a in zip(got, want, sorted(anns, key=lambda a: -a["area"])):
            np.testing.assert_array_equal(g, w)
            assert a["area"] == int(w.sum()) and 0.0 <= a["score"] <= 1.0
            ys, xs = np.nonzero(w)
            assert a["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        n_objects += len(anns)
    assert n_objects > 0
    res = coco.loadRes(coco.dataset["annotations"])  # detections format accepted as is
    assert len(res.dataset["annotations"]) == n_objects
    assert leftovers(tmp_path) == []


def test_rerun_keeps_the_coco_file_consistent_with_the_outputs_on_disk(tmp_path, folder, tiny):
    require("pycocotools", "coco")
    out, coco_path = tmp_path / "out", tmp_path / "coco.json"
    first = [str(folder / "coffee.png")]
    assert run_cli(["segment", *first, "-o", str(out), "--coco", str(coco_path), *tiny.args()]).code == 0
    before = json.loads(coco_path.read_text())
    r = run_cli(["segment", str(folder / "astronaut.png"), *first, "-o", str(out), "--coco", str(coco_path), *tiny.args()])
    assert r.code == 0 and r.counts == (1, 1, 0, 0)  # coffee skipped, astronaut added
    after = json.loads(coco_path.read_text())
    assert [im["path"] for im in after["images"]] == sorted([str(folder / "astronaut.png"), first[0]])
    assert [im["file_name"] for im in after["images"]] == ["astronaut.png", "coffee.png"]
    assert [im["id"] for im in after["images"]] == [1, 2]
    assert [a["id"] for a in after["annotations"]] == list(range(1, len(after["annotations"]) + 1))
    coffee_id = next(im["id"] for im in after["images"] if im["path"] == first[0])
    kept = [a["segmentation"] for a in after["annotations"] if a["image_id"] == coffee_id]
    assert kept == [a["segmentation"] for a in before["annotations"]]  # the earlier run's objects, unchanged
    r = run_cli(["segment", str(folder / "astronaut.png"), *first, "-o", str(out), "--coco", str(coco_path), *tiny.args()])
    assert r.counts == (0, 2, 0, 0) and load_coco(coco_path).dataset["images"] == after["images"]


@pytest.mark.parametrize("option,value,word", [("--max-instances", "0", "--max-instances"), ("--min-area", "-1", "--min-area"),
                                               ("--min-score", "1.5", "--min-score"), ("--min-score", "-0.1", "--min-score")])
def test_bad_instance_options_are_one_line_usage_errors(tmp_path, tiny, option, value, word):
    p = tmp_path / "a.png"
    noise_image(24, 24).save(p)
    r = run_cli(["segment", str(p), "-o", str(tmp_path / "out"), "--coco", str(tmp_path / "c.json"), option, value, *tiny.args()])
    assert r.code == 2 and word in r.err and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not (tmp_path / "c.json").exists()


def test_filters_and_single_mode_shape_the_instances(tmp_path, tiny, photos):
    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu")
    images = [photos["coffee"], photos["retina"], photos["astronaut"]]
    everything = [r.prediction.instances for r in Engine(model, workers=0).run(images)]
    assert any(len(i) > 1 for i in everything)
    from found.model.instances import InstanceFilter

    top = [r.prediction.instances for r in Engine(model, workers=0, instance_filter=InstanceFilter(max_instances=1)).run(images)]
    assert [len(t) for t in top] == [min(1, len(e)) for e in everything]
    assert all(t[0].box_xyxy == e[0].box_xyxy for t, e in zip(top, everything) if t)
    big = [r.prediction.instances for r in Engine(model, workers=0, instance_filter=InstanceFilter(min_area=0.05)).run(images)]
    for b, e, im in zip(big, everything, images):
        assert [i.area for i in b] == [i.area for i in e if i.area >= 0.05 * im.shape[0] * im.shape[1]]
    single = [r.prediction.instances for r in Engine(model, workers=0, mode="single").run(images)]
    assert all(len(s) <= 1 for s in single)


def test_instances_of_a_downscaled_image_are_at_full_resolution(tmp_path, tiny, photos):
    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu")
    [r] = list(Engine(model, workers=0, max_side=160).run([photos["coffee"]]))
    assert r.downscaled
    inst = r.prediction.instances
    assert inst and all(i.image_hw == photos["coffee"].shape[:2] for i in inst)
    union = np.zeros(photos["coffee"].shape[:2], bool)
    for i in inst:
        union |= i.full_mask()
    np.testing.assert_array_equal(union, r.prediction.mask)

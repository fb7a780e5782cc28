"""``found evaluate discovery`` end to end on tiny VOC07 / VOC12 / COCO20k trees."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from found.cli.main import main
from found.evaluate import datasets as ds
from test_evaluate_common import build_tiny, ellipse_mask, synthetic_image, write_tiny_model

#: The published COCO20k list, if a copy sits beside the repository (never committed).
SHARED_LIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_20k_filenames.txt"

# id, (H, W), objects (name, xmin, ymin, xmax, ymax, difficult) in VOC 1-based inclusive pixels
VOC_IMAGES = [
    ("000001", (61, 83), [("dog", 1, 1, 83, 61, 0)]),  # whole image: an all-object box hits
    ("000002", (64, 72), [("cat", 10, 10, 20, 20, 0)]),  # small: misses
    ("000003", (50, 90), [("car", 40, 20, 45, 25, 0), ("person", 1, 1, 90, 50, 1)]),  # difficult counts
]


def _voc_xml(name: str, hw, objects) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><truncated>0</truncated>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, x1, y1, x2, y2, d in objects
    )
    return f"<annotation><filename>{name}.jpg</filename><size><width>{hw[1]}</width><height>{hw[0]}</height><depth>3</depth></size>{objs}</annotation>"


def write_voc(root: Path, year: str, images=None) -> Path:
    """A VOC-layout folder of synthetic images (``images``: (name, (h, w), objects); default VOC_IMAGES)."""
    images = VOC_IMAGES if images is None else images
    base = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for i, (name, hw, objs) in enumerate(images):
        m = ellipse_mask(*hw, hw[0] / 2, hw[1] / 2, hw[0] / 3, hw[1] / 3)
        Image.fromarray(synthetic_image(m, i)).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
        (base / "Annotations" / f"{name}.xml").write_text(_voc_xml(name, hw, objs))
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{n}\n" for n, *_ in images))
    return root / "VOCdevkit"


def test_voc_annotations_as_lost():
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "a.xml"
        p.write_text(_voc_xml("a", (10, 10), [("dog", 1, 2, 9, 10, 1), ("cat", 3, 3, 4, 4, 0)]))
        boxes, labels = ds.parse_voc_xml(p)
    np.testing.assert_array_equal(boxes, [[0, 1, 9, 10], [2, 2, 4, 4]])  # x1-1, y1-1; difficult kept
    assert labels == ["dog", "cat"] and boxes.dtype == np.int64


@pytest.mark.parametrize("dataset,year", [("VOC07", "2007"), ("VOC12", "2012")])
def test_voc_corloc_all_object_head(tmp_path, dataset, year):
    devkit = write_voc(tmp_path, year)
    out = tmp_path / "out"
    rc = main(["evaluate", "discovery", "--dataset", dataset, "--data-dir", str(devkit), "--output-dir", str(out),
               *write_tiny_model(tmp_path / "m", bias=10.0)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_images"] == 3 and res["n_hits"] == 2 and res["corloc"] == pytest.approx(2 / 3)
    boxes = json.loads((out / "boxes.json").read_text())
    # all-object prediction: the whole (padded) grid, x2/y2 clipped to the image
    assert boxes["000001"]["box_xyxy"] == [0, 0, 83, 61] and boxes["000001"]["hit"]
    assert boxes["000003"]["gt_boxes_xyxy"] == [[39, 19, 45, 25], [0, 0, 90, 50]] and boxes["000003"]["hit"]
    assert (out / "misses.txt").read_text() == "000002\n"


def test_voc_empty_predictions_are_misses(tmp_path, capsys):
    devkit = write_voc(tmp_path, "2007")
    out = tmp_path / "out"
    assert main(["evaluate", "discovery", "--dataset", "VOC07", "--data-dir", str(devkit), "--output-dir", str(out),
                 *write_tiny_model(tmp_path / "m", bias=-10.0)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["corloc"] == 0.0 and res["n_empty_predictions"] == 3
    assert "CorLoc 0.00 (0/3)" in capsys.readouterr().out
    assert all(v["box_xyxy"] is None for v in json.loads((out / "boxes.json").read_text()).values())


def test_boxes_match_the_predictor(tmp_path):
    devkit = write_voc(tmp_path, "2007")
    out = tmp_path / "out"
    assert main(["evaluate", "discovery", "--dataset", "VOC07", "--data-dir", str(devkit), "--output-dir", str(out),
                 "--limit", "2", *write_tiny_model(tmp_path / "m")]) == 0
    boxes = json.loads((out / "boxes.json").read_text())
    assert list(boxes) == ["000001", "000002"]
    model = build_tiny(tmp_path / "m")
    for name in boxes:
        p = model.predict(ds.read_rgb(devkit / "VOC2007" / "JPEGImages" / f"{name}.jpg"))[0]
        assert boxes[name]["box_xyxy"] == (None if p.box is None else [int(v) for v in p.box])


# ---------------------------------------------------------------------------- COCO20k
def _coco_name(i: int) -> str:
    return f"train2014/COCO_train2014_{i:012d}.jpg"


def write_coco(root: Path) -> Path:
    (root / "train2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    sizes = {9: (40, 56), 25: (48, 48), 30: (32, 64)}
    images, anns = [], []
    for k, (i, (h, w)) in enumerate(sizes.items()):
        m = ellipse_mask(h, w, h / 2, w / 2, h / 3, w / 3)
        Image.fromarray(synthetic_image(m, k)).save(root / _coco_name(i), quality=95)
        images.append({"id": i, "file_name": Path(_coco_name(i)).name, "height": h, "width": w})
    anns += [
        {"id": 1, "image_id": 9, "bbox": [0.0, 0.0, 56.0, 40.0], "iscrowd": 0, "category_id": 1},  # whole image → hit
        {"id": 2, "image_id": 25, "bbox": [0.0, 0.0, 48.0, 48.0], "iscrowd": 1, "category_id": 1},  # crowd: ignored
        {"id": 3, "image_id": 25, "bbox": [2.5, 3.5, 4.0, 4.0], "iscrowd": 0, "category_id": 2},  # small → miss
        {"id": 4, "image_id": 30, "bbox": [0.0, 0.0, 64.0, 32.0], "iscrowd": 1, "category_id": 3},  # only crowd → no GT
        {"id": 5, "image_id": 77, "bbox": [0.0, 0.0, 5.0, 5.0], "iscrowd": 0, "category_id": 3},  # not in the list
    ]
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    lst = root / "coco20k.txt"
    lst.write_text("".join(f"{_coco_name(i)}\n" for i in (30, 9, 25)))
    return lst


def test_coco_box_conversion_rounds_like_lost():
    assert ds.coco_box_xyxy([2.5, 3.5, 4.0, 4.0]) == [2, 4, 6, 8]  # round-half-even, as int(round(x))
    assert ds.coco_box_xyxy([0.4, 10.6, 5.2, 0.9]) == [0, 11, 6, 12]
    assert ds.coco_image_id("train2014/COCO_train2014_000000560992.jpg") == 560992


def test_coco20k_corloc_all_object_head(tmp_path):
    lst = write_coco(tmp_path / "coco")
    out = tmp_path / "out"
    rc = main(["evaluate", "discovery", "--dataset", "COCO20k", "--data-dir", str(tmp_path / "coco"),
               "--coco20k-list", str(lst), "--output-dir", str(out), *write_tiny_model(tmp_path / "m", bias=10.0)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_images"] == 3 and res["n_hits"] == 1 and res["n_images_without_gt_box"] == 1
    boxes = json.loads((out / "boxes.json").read_text())
    assert list(boxes) == ["9", "25", "30"]  # sorted by image id, as CocoDetection
    assert boxes["25"]["gt_boxes_xyxy"] == [[2, 4, 6, 8]]  # crowd box dropped
    assert boxes["30"]["gt_boxes_xyxy"] == [] and not boxes["30"]["hit"]
    assert (out / "misses.txt").read_text().split() == ["25", "30"]


def _hub_cache(tmp_path, monkeypatch) -> Path:
    """Where ``coco20k_list_path`` looks for a cached list, under a fresh TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    import torch

    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    cached = Path(torch.hub.get_dir()) / "found" / ds.COCO20K_FILENAME
    cached.parent.mkdir(parents=True)
    return cached


def test_coco20k_list_verified_cache_is_used_without_download(tmp_path, monkeypatch):
    listing = b"train2014/COCO_train2014_000000000009.jpg\ntrain2014/COCO_train2014_000000000025.jpg\n"
    monkeypatch.setattr(ds, "COCO20K_SHA256", hashlib.sha256(listing).hexdigest())
    cached = _hub_cache(tmp_path, monkeypatch)
    cached.write_bytes(listing)
    calls = []
    monkeypatch.setattr("found.hub.weights.download", lambda w, dest, **k: calls.append(dest) or dest)
    assert ds.coco20k_list_path(None) == cached and calls == []
    assert [ds.coco_image_id(n) for n in ds.read_coco20k_list(cached)] == [9, 25]
    explicit = tmp_path / "mine.txt"
    explicit.write_bytes(b"train2014/COCO_train2014_000000000030.jpg\n")  # an explicit path is taken as is
    assert ds.coco20k_list_path(explicit) == explicit and calls == []
    cached.write_bytes(listing + b"tampered\n")  # a cached copy that fails its sha256 is fetched again
    assert ds.coco20k_list_path(None) == cached and calls == [cached]


def test_published_coco20k_list_matches_its_sha256():
    """The real list (not committed: the project downloads it) where a copy sits in ../shared/data."""
    if not SHARED_LIST.is_file():
        pytest.skip(f"{SHARED_LIST} not present (optional: the published list is not part of the repository)")
    assert hashlib.sha256(SHARED_LIST.read_bytes()).hexdigest() == ds.COCO20K_SHA256
    names = ds.read_coco20k_list(SHARED_LIST)
    assert len(names) == 19817 and len({ds.coco_image_id(n) for n in names}) == 19817


def test_discovery_layout_errors(tmp_path, capsys):
    model_args = write_tiny_model(tmp_path / "m")
    rc = main(["evaluate", "discovery", "--dataset", "VOC07", "--data-dir", str(tmp_path), *model_args])
    err = capsys.readouterr().err
    assert rc != 0 and "VOC2007" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "train2014").mkdir()
    rc = main(["evaluate", "discovery", "--dataset", "COCO20k", "--data-dir", str(tmp_path), "--coco20k-list", str(tmp_path / "nope.txt"), *model_args])
    assert rc != 0 and "nope.txt" in capsys.readouterr().err

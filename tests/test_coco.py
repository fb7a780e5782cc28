"""found.io.coco: COCO-format pseudo-labels (compressed RLE through pycocotools) that load in pycocotools."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require

require("pycocotools", "coco")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from found.io import coco as fcoco  # noqa: E402
from found.model.instances import InstanceFilter, find_instances  # noqa: E402
from test_instances import PATCH, PROBS, known_mask  # noqa: E402

#: pycocotools' decode warns under numpy 2 (its __array__ has no copy keyword); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
IMAGES = Path(__file__).parent / "data" / "images"


def photo_record(path: Path) -> tuple[fcoco.CocoImage, np.ndarray]:
    """Instances of a bundled photo's bright regions (grey > 170; probabilities from 8×8 mean grey)."""
    with Image.open(path) as im:
        gray = np.asarray(im.convert("L"), dtype=np.float64) / 255
    h, w = gray.shape
    ph, pw = -(-h // 8), -(-w // 8)
    padded = np.zeros((ph * 8, pw * 8))
    padded[:h, :w] = gray
    probs = padded.reshape(ph, 8, pw, 8).mean(axis=(1, 3))
    mask = gray > 170 / 255
    inst = find_instances(mask, probs, 8, flt=InstanceFilter(max_instances=25, min_area=4))
    return fcoco.CocoImage(path.name, h, w, inst), mask


def test_rle_round_trip_is_exact_and_json_ready():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 13), (64, 48)]:
        m = rng.random(shape) < 0.3
        rle = fcoco.encode_rle(m)
        assert isinstance(rle["counts"], str) and rle["size"] == list(shape)
        back = fcoco.decode_rle(json.loads(json.dumps(rle)))
        assert back.dtype == bool and np.array_equal(back, m)
        # pycocotools itself reads it (counts as bytes), with the same area and box
        r = {"size": rle["size"], "counts": rle["counts"].encode()}
        assert int(mask_utils.area(r)) == int(m.sum())
        assert np.array_equal(mask_utils.decode(r).astype(bool), m)


def test_annotation_of_an_instance():
    inst = find_instances(known_mask(), PROBS, PATCH)[0]
    ann = fcoco.instance_annotation(inst, image_id=7, ann_id=3)
    assert {k: v for k, v in ann.items() if k != "segmentation"} == {
        "id": 3, "image_id": 7, "category_id": 1, "bbox": [9, 5, 7, 6], "area": 42, "score": 34 / 64, "iscrowd": 0}
    assert np.array_equal(fcoco.decode_rle(ann["segmentation"]), inst.full_mask())
    anns = fcoco.image_annotations(find_instances(known_mask(), PROBS, PATCH), image_id=2, first_ann_id=10)
    assert [a["id"] for a in anns] == list(range(10, 16)) and {a["image_id"] for a in anns} == {2}


def test_coco_file_of_the_bundled_photos_loads_and_decodes_exactly(tmp_path):
    photos = sorted(IMAGES.glob("*.png"))
    assert len(photos) == 3
    records, masks = zip(*(photo_record(p) for p in photos))
    synthetic = fcoco.CocoImage("synthetic/known.png", 12, 16, find_instances(known_mask(), PROBS, PATCH))
    empty = fcoco.CocoImage("nothing.png", 30, 40, [])  # an image with no object
    images = [*records, synthetic, empty]
    out = tmp_path / "pseudo.json"
    fcoco.write_coco(out, fcoco.coco_dataset(images))

    coco = COCO(str(out))  # loads as a dataset
    assert coco.loadCats(coco.getCatIds()) == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == [*(p.name for p in photos), "synthetic/known.png", "nothing.png"]
    for p, img_id in zip(photos, sorted(coco.imgs)):
        with Image.open(p) as im:
            assert (coco.imgs[img_id]["width"], coco.imgs[img_id]["height"]) == im.size
    assert coco.getAnnIds(imgIds=[5]) == []
    n_total = 0
    for img_id, rec in enumerate(images, start=1):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        assert len(anns) == len(rec.instances)
        for ann, inst in zip(sorted(anns, key=lambda a: a["id"]), rec.instances):
            assert np.array_equal(coco.annToMask(ann).astype(bool), inst.full_mask())  # exactly its pixels
            assert ann["bbox"] == list(inst.box_xywh) and ann["area"] == inst.area and ann["score"] == inst.score
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            n_total += 1
    assert n_total > 20 and len(coco.anns) == n_total
    assert len({a["id"] for a in coco.anns.values()}) == n_total
    # the photos' instances cover the thresholded pixels they were built from (largest 25 kept)
    for rec, m in zip(records, masks):
        union = np.zeros_like(m)
        for inst in rec.instances:
            union |= inst.full_mask()
        assert not np.any(union & ~m)

    res = coco.loadRes(json.loads(out.read_text())["annotations"])  # accepted as detection results
    assert len(res.anns) == n_total
    assert fcoco.check_coco(out) == {"images": 5, "annotations": n_total, "categories": 1}
    assert out.read_text().count("\n") == 1


def test_dataset_rejects_inconsistent_records():
    inst = find_instances(known_mask(), PROBS, PATCH)
    with pytest.raises(ValueError, match="instance of a"):
        fcoco.coco_dataset([fcoco.CocoImage("a.png", 13, 16, inst)])
    with pytest.raises(ValueError, match="duplicate COCO image id 4"):
        fcoco.coco_dataset([fcoco.CocoImage("a.png", 12, 16, inst, id=4), fcoco.CocoImage("b.png", 12, 16, [], id=4)])


def test_check_coco_finds_a_box_that_does_not_match_its_mask():
    d = fcoco.coco_dataset([fcoco.CocoImage("a.png", 12, 16, find_instances(known_mask(), PROBS, PATCH))])
    d["annotations"][1]["bbox"] = [0, 0, 5, 3]
    with pytest.raises(ValueError, match="annotation 2: bbox/area"):
        fcoco.check_coco(d)


def test_missing_pycocotools_is_one_clear_line(monkeypatch):
    for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(fcoco.CocoUnavailable) as e:
        fcoco.encode_rle(np.ones((2, 2), bool))
    assert "pip install 'found[coco]'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(fcoco.CocoUnavailable, match="found\\[coco\\]"):
        fcoco.require_pycocotools()
    with pytest.raises(fcoco.CocoUnavailable):
        fcoco.load_coco({"images": [], "annotations": [], "categories": []})


def test_importing_found_does_not_import_pycocotools():
    code = "import sys, found, found.model.instances, found.io.coco; assert 'pycocotools' not in sys.modules, 'pycocotools imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_builder_streams_images_into_the_same_dataset(tmp_path):
    inst = find_instances(known_mask(), PROBS, PATCH)
    b = fcoco.CocoBuilder()
    assert [a["id"] for a in b.add("a.png", (12, 16), inst)] == [1, 2, 3, 4, 5, 6]
    assert b.add("b.png", (12, 16), []) == []
    assert [a["id"] for a in b.add("c.png", (12, 16), inst[:2])] == [7, 8]
    d = b.dataset()
    ref = fcoco.coco_dataset([fcoco.CocoImage("a.png", 12, 16, inst), fcoco.CocoImage("b.png", 12, 16, []),
                              fcoco.CocoImage("c.png", 12, 16, inst[:2])])
    assert d["images"] == ref["images"] and d["annotations"] == ref["annotations"]
    assert [i["id"] for i in d["images"]] == [1, 2, 3] and {a["image_id"] for a in d["annotations"]} == {1, 3}
    b.write(tmp_path / "run.json")
    assert fcoco.check_coco(tmp_path / "run.json") == {"images": 3, "annotations": 8, "categories": 1}
    with pytest.raises(ValueError, match="duplicate"):
        b.add("d.png", (12, 16), [], image_id=2)
    assert len(b.images) == 3  # a refused image leaves the builder as it was

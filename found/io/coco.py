"""COCO-format pseudo-labels: instances → annotations with compressed-RLE masks (pycocotools).

One builder, :class:`CocoBuilder`, makes every COCO document (:func:`coco_dataset` from
instances, :func:`coco_from_records` from a run's records): one dict for a whole run that loads as
a dataset with ``pycocotools.coco.COCO`` and whose ``"annotations"`` list ``COCO.loadRes`` accepts.
RLE encoding is pycocotools' own (``mask.encode`` on a Fortran-ordered uint8 array); the
optional dependency is imported only here, inside the functions: ``pip install 'found[coco]'``.

Conventions: one category ``{"id": 1, "name": "object"}``; image ids 1, 2, … in record order
unless a record gives its own; annotation ids 1, 2, … over the run; ``bbox`` is the instance's
pixel box (x, y, w, h; equal to ``mask.toBbox`` of its RLE), ``area`` its pixel count (equal to
``mask.area``), ``score`` its score, ``iscrowd`` 0.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..errors import FoundError
from ..extras import install_hint, require
from .records import instance_record

if TYPE_CHECKING:
    from ..model.instances import Instance

#: The one class of class-agnostic pseudo-labels.
OBJECT_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
COCO_EXTRA_HINT = install_hint("coco")


class CocoUnavailable(FoundError):
    """pycocotools is not installed."""


def _mask_utils():
    """``pycocotools.mask``, or a one-line :class:`CocoUnavailable`."""
    return require("pycocotools.mask", "coco", "COCO output", CocoUnavailable)


def coco_class():
    """``pycocotools.coco.COCO``, or a one-line :class:`CocoUnavailable`."""
    return require("pycocotools.coco", "coco", "reading COCO files or computing COCO metrics", CocoUnavailable).COCO


def require_pycocotools() -> None:
    """Raise :class:`CocoUnavailable` (one line, with the install hint) unless pycocotools imports;
    for surfaces that check before any work (``found segment --coco``, ``found evaluate detection``)."""
    _mask_utils()
    coco_class()


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed RLE of a bool [H, W] mask: ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    rle = _mask_utils().encode(m)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """bool [H, W] mask of a compressed RLE (``counts`` as str or bytes)."""
    counts = rle["counts"]
    r = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    mu = _mask_utils()
    with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning (copy keyword)
        warnings.simplefilter("ignore", DeprecationWarning)
        return mu.decode(r).astype(bool)


def annotation(instance: dict, image_id: int, ann_id: int, category_id: int = 1) -> dict:
    """One COCO annotation (JSON-ready) of an instance record (:func:`found.io.records.instance_record`
    with ``segmentation``) of image ``image_id``."""
    return {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [int(v) for v in instance["box_xywh"]],
        "area": int(instance["area"]),
        "score": float(instance["score"]),
        "iscrowd": 0,
        "segmentation": instance["segmentation"],
    }


def instance_annotation(inst: Instance, image_id: int, ann_id: int, category_id: int = 1) -> dict:
    """One COCO annotation (JSON-ready) of an instance of image ``image_id``."""
    return annotation(instance_record(inst, masks=True), image_id, ann_id, category_id)


def image_annotations(instances: Sequence[Instance], image_id: int, first_ann_id: int = 1) -> list[dict]:
    """Annotations of one image's instances, ids ``first_ann_id``, ``first_ann_id + 1``, …"""
    return [instance_annotation(inst, image_id, first_ann_id + k) for k, inst in enumerate(instances)]


@dataclass
class CocoImage:
    """One image of a run: its file name (relative to the image root a trainer is given), size, instances."""

    file_name: str
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)
    id: int | None = None  # default: position in the run, from 1


def image_entry(image_id: int, file_name: str, height: int, width: int) -> dict:
    """A COCO ``images`` entry: id, file name, width and height."""
    return {"id": int(image_id), "file_name": str(file_name), "width": int(width), "height": int(height)}


def coco_info(description: str, created: str | None = None) -> dict:
    """The dataset's ``info`` block: made now, or on the day of ``created`` (an ISO 8601 time, e.g. a
    run journal's start: the file is then the same whenever it is rebuilt that day or after)."""
    if created:
        day = _dt.datetime.fromisoformat(created).astimezone(_dt.timezone.utc).date()
        return {"description": description, "version": "1.0", "year": day.year, "date_created": day.isoformat()}
    return {"description": description, "version": "1.0", "year": _dt.date.today().year,
            "date_created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


class CocoBuilder:
    """Builds a run's COCO dict image by image (a streaming run keeps only RLE strings, not masks):
    the one place COCO documents are made (``found segment --coco``, its Ray path, the library).

    ``add(file_name, image_hw, instances)`` encodes the image's instances at once and returns its
    annotations; :meth:`add_record` adds a record instead (its instances carry their RLE);
    ``dataset()`` gives the dict (see :func:`coco_dataset`); ``write(path)`` writes it atomically.
    Image ids are 1, 2, … in the order added unless ``image_id`` is given; ``path`` (the input as
    given) is kept in the image's entry when known.
    """

    def __init__(self, description: str = "FOUND class-agnostic pseudo-labels", created: str | None = None) -> None:
        self.description, self.created = description, created
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self._ids: set[int] = set()

    def add(self, file_name: str, image_hw: tuple[int, int], instances: Sequence[Instance], image_id: int | None = None,
            path: str | None = None) -> list[dict]:
        """Add one image (with no annotation when ``instances`` is empty); returns its annotations."""
        h, w = int(image_hw[0]), int(image_hw[1])
        for inst in instances:
            if tuple(inst.image_hw) != (h, w):
                raise ValueError(f"{file_name}: instance of a {tuple(inst.image_hw)} mask on a {(h, w)} image")
        return self._add(file_name, h, w, [instance_record(i, masks=True) for i in instances], image_id, path)

    def add_record(self, record: dict, image_id: int | None = None) -> list[dict]:
        """Add the image of a record (``name``, ``file``, ``width``, ``height``, ``instances`` with
        their ``segmentation``); returns its annotations."""
        name = record.get("name") or record["file"]
        return self._add(name, int(record["height"]), int(record["width"]), record.get("instances") or [], image_id,
                         record.get("file"))

    def _add(self, file_name: str, h: int, w: int, instances: Sequence[dict], image_id: int | None,
             path: str | None) -> list[dict]:
        image_id = len(self.images) + 1 if image_id is None else int(image_id)
        if image_id in self._ids:
            raise ValueError(f"duplicate COCO image id {image_id} ({file_name})")
        first = len(self.annotations) + 1
        anns = [annotation(inst, image_id, first + k) for k, inst in enumerate(instances)]
        self._ids.add(image_id)
        entry = image_entry(image_id, file_name, h, w)
        self.images.append(entry if path is None else {**entry, "path": str(path)})
        self.annotations.extend(anns)
        return anns

    def dataset(self) -> dict:
        """The COCO dict: info, licenses, images, the "object" category, annotations."""
        return {"info": coco_info(self.description, self.created), "licenses": [], "images": list(self.images),
                "categories": [dict(OBJECT_CATEGORY)], "annotations": list(self.annotations)}

    def write(self, path: str | os.PathLike) -> None:
        """Write the dataset to ``path`` as COCO JSON, atomically (a complete file or none)."""
        write_coco(path, self.dataset())


def coco_dataset(images: Iterable[CocoImage], description: str = "FOUND class-agnostic pseudo-labels") -> dict:
    """The COCO dataset dict of a run: info, images, the "object" category, annotations.

    Images without instances are listed with no annotation (an image with no object).
    Raises ValueError on a duplicate image id or an instance that does not fit its image.
    """
    b = CocoBuilder(description)
    for pos, im in enumerate(images, start=1):
        b.add(im.file_name, (im.height, im.width), im.instances, image_id=pos if im.id is None else im.id)
    return b.dataset()


def coco_from_records(records: Iterable[dict], description: str = "FOUND class-agnostic pseudo-labels",
                      created: str | None = None) -> dict:
    """The COCO dict of a run from its records alone: one image per record (failed ones left out),
    ids in the order of their ``file``, each image's ``path`` kept (``found segment --coco``);
    ``created`` dates it (see :func:`coco_info`)."""
    b = CocoBuilder(description, created)
    for rec in sorted((r for r in records if r.get("error") is None), key=lambda r: r["file"]):
        b.add_record(rec)
    return b.dataset()


def records_of_coco(dataset: dict) -> list[dict]:
    """The records (``file``, ``name``, size, instances with masks) a COCO dict of
    :func:`coco_from_records` holds, to add a rerun's images to it."""
    anns: dict[int, list[dict]] = {}
    for a in dataset["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    out = []
    for im in dataset["images"]:
        instances = [{"box_xyxy": [x, y, x + w, y + h], "box_xywh": [x, y, w, h], "area": a["area"], "score": a["score"],
                      "segmentation": a["segmentation"]} for a in anns.get(im["id"], []) for x, y, w, h in [a["bbox"]]]
        out.append({"file": im.get("path", im["file_name"]), "name": im["file_name"], "width": im["width"],
                    "height": im["height"], "instances": instances})
    return out


def dumps(dataset: dict) -> str:
    """Compact JSON text of a COCO dict (one line: pseudo-label files can be large)."""
    return json.dumps(dataset, separators=(",", ":")) + "\n"


def write_coco(path: str | os.PathLike, dataset: dict) -> None:
    """Write a COCO dict atomically (complete file or none)."""
    from .files import atomic_write_text

    atomic_write_text(path, dumps(dataset))


def load_coco(path_or_dataset: str | os.PathLike | dict):
    """A ``pycocotools.coco.COCO`` of a file or dict (quiet: pycocotools prints while indexing)."""
    import contextlib
    import io

    COCO = coco_class()
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(path_or_dataset, dict):
            coco = COCO()
            coco.dataset = path_or_dataset
            coco.createIndex()
        else:
            coco = COCO(os.fspath(path_or_dataset))
    return coco


def check_coco(path_or_dataset: str | os.PathLike | dict) -> dict:
    """Check a pseudo-label file the way consumers read it; return counts.

    It must load with ``COCO(...)``; every annotation's RLE must decode to a mask of its image's
    size whose ``toBbox``/``area`` equal its ``bbox``/``area``; and its annotation list must be
    accepted by ``loadRes``. Raises ValueError naming the first problem.
    """
    mu = _mask_utils()
    coco = load_coco(path_or_dataset)
    for ann in coco.dataset.get("annotations", []):
        img = coco.imgs[ann["image_id"]]
        rle = ann["segmentation"]
        if list(rle["size"]) != [img["height"], img["width"]]:
            raise ValueError(f"annotation {ann['id']}: RLE size {rle['size']} != image size {[img['height'], img['width']]}")
        r = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        if [int(v) for v in mu.toBbox(r)] != list(ann["bbox"]) or int(mu.area(r)) != ann["area"]:
            raise ValueError(f"annotation {ann['id']}: bbox/area do not match its mask")
    anns = coco.dataset.get("annotations", [])
    if anns:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            coco.loadRes([dict(a) for a in anns])
    return {"images": len(coco.imgs), "annotations": len(anns), "categories": len(coco.cats)}

"""Benchmark datasets in their official on-disk layouts: listing samples and reading ground truth.

Images are decoded as the authors' loaders do (``PIL.Image.open(...).convert("RGB")``, no EXIF
rotation); every problem with the layout is a one-line :class:`~found.errors.FoundError`.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FoundError, InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# ---------------------------------------------------------------------------- images
def _read(path: str | os.PathLike, mode: str, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: cannot read {what} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] as the authors read it (``convert("RGB")``, EXIF orientation ignored)."""
    # Not found.io.images.to_rgb_array (the library's one normaliser) on purpose: the benchmarks
    # reproduce the authors' loader, which ignores EXIF orientation and clips 16-bit images.
    return _read(path, "RGB", "image")


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W] grey levels of a mask (``convert("L")``, as the authors)."""
    return _read(path, "L", "mask")


def _list_images(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


# ---------------------------------------------------------------------------- saliency
#: dataset → (image folder, mask folder, sub-folders of --data-dir where they may sit)
SALIENCY_LAYOUTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ECSSD": ("images", "ground_truth_mask", ("", "ECSSD")),
    "DUTS-TE": ("DUTS-TE-Image", "DUTS-TE-Mask", ("", "DUTS-TE", "DUTS")),
    "DUT-OMRON": ("DUT-OMRON-image", "pixelwiseGT-new-PNG", ("", "DUT-OMRON")),
}
SALIENCY_ALIASES = {"DUTS-TEST": "DUTS-TE", "DUTS": "DUTS-TE", "DUT_OMRON": "DUT-OMRON", "DUTOMRON": "DUT-OMRON"}


@dataclass(frozen=True)
class SaliencySample:
    """One image of a saliency set and its ground-truth mask file."""

    name: str
    image: Path
    mask: Path


def saliency_dirs(dataset: str, data_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(image folder, mask folder) of an official layout found in or right under ``data_dir``."""
    dataset = SALIENCY_ALIASES.get(dataset, dataset)
    if dataset not in SALIENCY_LAYOUTS:
        raise FoundError(f"unknown saliency dataset {dataset!r}; known: {', '.join(SALIENCY_LAYOUTS)}")
    img_name, gt_name, subs = SALIENCY_LAYOUTS[dataset]
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FoundError(f"--data-dir {root} is not a directory")
    for sub in subs:
        base = root / sub if sub else root
        if (base / img_name).is_dir() and (base / gt_name).is_dir():
            return base / img_name, base / gt_name
    where = " or ".join(str((root / s) if s else root) for s in subs)
    raise FoundError(f"{dataset} layout not found: expected {img_name}/ and {gt_name}/ in {where}")


def saliency_samples(image_dir: str | os.PathLike, mask_dir: str | os.PathLike, limit: int | None = None) -> list[SaliencySample]:
    """Images (sorted by file name, as the authors) paired with the mask of the same stem
    (``.png`` preferred, the authors' ``.jpg → .png`` rule)."""
    image_dir, mask_dir = Path(image_dir).expanduser(), Path(mask_dir).expanduser()
    for d, what in ((image_dir, "image"), (mask_dir, "mask")):
        if not d.is_dir():
            raise FoundError(f"{what} folder {d} does not exist")
    images = _list_images(image_dir)
    if not images:
        raise FoundError(f"no images in {image_dir}")
    masks: dict[str, Path] = {}
    for p in _list_images(mask_dir):
        if p.stem not in masks or p.suffix.lower() == ".png":
            masks[p.stem] = p
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise FoundError(f"{len(missing)} of {len(images)} images have no mask in {mask_dir} (first: {missing[0]})")
    samples = [SaliencySample(p.stem, p, masks[p.stem]) for p in images]
    return samples[:limit] if limit else samples


def authors_gt(mask_gray: np.ndarray) -> np.ndarray:
    """The authors' binary ground truth: grey level **== 255** (anti-aliased edges count as background)."""
    return np.asarray(mask_gray) == 255


# ---------------------------------------------------------------------------- VOC detection
@dataclass
class DetectionSample:
    """One image of a box dataset (VOC, COCO20k) with its ground-truth boxes and their class labels."""

    name: str
    image: Path
    boxes: np.ndarray  # [K, 4] int64 x1, y1, x2, y2 (max exclusive, VOC x1/y1 shifted by −1)
    labels: list = field(default_factory=list)


def voc_root(data_dir: str | os.PathLike, year: str) -> Path:
    """``VOCdevkit/VOC{year}``: accepts the VOCdevkit folder, its parent, or VOC{year} itself."""
    root = Path(data_dir).expanduser()
    for cand in (root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}", root):
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets").is_dir():
            return cand
    raise FoundError(f"VOC{year} not found under {root}: expected VOCdevkit/VOC{year}/{{JPEGImages,Annotations,ImageSets}}")


def _split_ids(root: Path, sub: str, split: str, limit: int | None = None) -> list[str]:
    """Image ids of a VOC split file (the first ``limit`` of them when given)."""
    f = root / "ImageSets" / sub / f"{split}.txt"
    if not f.is_file():
        raise FoundError(f"split file {f} does not exist")
    ids = [line.split()[0] for line in f.read_text().splitlines() if line.strip()]
    if not ids:
        raise FoundError(f"split file {f} is empty")
    return ids[:limit] if limit else ids


def _coord(text: str | None, what: str, path: Path) -> int:
    try:
        return int(text)  # the reference's int(...)
    except (TypeError, ValueError):
        try:
            return int(float(text))  # a few annotations are written "273.0"; the reference would crash
        except (TypeError, ValueError):
            raise FoundError(f"{path}: bad {what} coordinate {text!r}") from None


def parse_voc_xml(path: Path) -> tuple[np.ndarray, list[str]]:
    """All objects of a VOC annotation (difficult and truncated included), boxes as LOST/FOUND:
    (xmin − 1, ymin − 1, xmax, ymax)."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as e:
        raise FoundError(f"{path}: cannot parse annotation ({e})") from None
    boxes, labels = [], []
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x1, y1, x2, y2 = (_coord(bb.findtext(k), k, path) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x1 - 1, y1 - 1, x2, y2])
        labels.append((obj.findtext("name") or "").strip())
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4), labels


def voc_detection_samples(data_dir: str | os.PathLike, year: str, split: str = "trainval", limit: int | None = None) -> list[DetectionSample]:
    """The images of a VOC ``year``'s Main ``split`` with their annotated boxes (the first ``limit`` only)."""
    root = voc_root(data_dir, year)
    ids = _split_ids(root, "Main", split, limit)
    out = []
    for i in ids:
        ann = root / "Annotations" / f"{i}.xml"
        if not ann.is_file():
            raise FoundError(f"annotation {ann} does not exist")
        boxes, labels = parse_voc_xml(ann)
        out.append(DetectionSample(i, root / "JPEGImages" / f"{i}.jpg", boxes, labels))
    return out


# ---------------------------------------------------------------------------- COCO20k
COCO20K_URL = "https://raw.githubusercontent.com/valeoai/LOST/master/datasets/coco_20k_filenames.txt"
COCO20K_SHA256 = "74637e9b4f93f2ebef9b1f664aff53edd1f41ef08dad97bd22ce8e455052b335"
COCO20K_FILENAME = "coco_20k_filenames.txt"


def coco20k_list_path(explicit: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The COCO20k image list: ``explicit`` path, else the torch-hub cache (downloaded once, sha256-checked)."""
    from ..hub import weights as hub
    from ..hub.registry import Weights

    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise FoundError(f"--coco20k-list {p} does not exist")
        return p
    dest = hub.cache_dir().parent / "found" / COCO20K_FILENAME
    if dest.is_file() and hub.sha256_of(dest) == COCO20K_SHA256:
        return dest
    w = Weights(COCO20K_URL, COCO20K_FILENAME, COCO20K_SHA256, "see valeoai/LOST")
    return hub.download(w, dest, progress=progress, hint="pass --coco20k-list PATH")


def read_coco20k_list(path: Path) -> list[str]:
    """The image names of a COCO20k list file, one a line; an empty list is an error."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise FoundError(f"{path} lists no image")
    return names


def coco_image_id(file_name: str) -> int:
    """``train2014/COCO_train2014_000000000009.jpg`` → 9."""
    try:
        return int(Path(file_name).stem.split("_")[-1])
    except ValueError:
        raise FoundError(f"not a COCO file name: {file_name!r}") from None


def coco_box_xyxy(bbox) -> list[int]:
    """COCO (x, y, w, h) → (x1, y1, x2, y2) as LOST/FOUND: ``int(round(·))`` of each corner
    (Python's round: halves go to the even integer)."""
    x, y, w, h = (float(v) for v in bbox)
    return [int(round(v)) for v in (x, y, x + w, y + h)]


def coco_paths(data_dir: str | os.PathLike, annotations: str | os.PathLike | None) -> tuple[Path, Path]:
    """(folder holding ``train2014/``, annotation file) for the official or LOST's layout."""
    root = Path(data_dir).expanduser()
    img_root = next((c for c in (root, root / "images") if (c / "train2014").is_dir()), None)
    if img_root is None:
        raise FoundError(f"COCO train2014/ images not found in {root} or {root / 'images'}")
    if annotations is not None:
        ann = Path(annotations).expanduser()
    else:
        ann = next((c for c in (root / "annotations" / "instances_train2014.json", root / "instances_train2014.json") if c.is_file()), root / "annotations" / "instances_train2014.json")
    if not ann.is_file():
        raise FoundError(f"COCO annotations {ann} not found (pass --coco-annotations PATH)")
    return img_root, ann


def coco20k_samples(data_dir: str | os.PathLike, list_path: Path, annotations: str | os.PathLike | None = None, limit: int | None = None) -> list[DetectionSample]:
    """The COCO20k images (sorted by image id, as ``CocoDetection``), non-crowd boxes only."""
    img_root, ann_path = coco_paths(data_dir, annotations)
    names = read_coco20k_list(list_path)
    by_id = {coco_image_id(n): n for n in names}
    ids = sorted(by_id)
    if limit:
        ids = ids[:limit]
    wanted = set(ids)
    try:
        with open(ann_path, "rb") as f:
            coco = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise FoundError(f"{ann_path}: cannot read COCO annotations ({e})") from None
    boxes: dict[int, list[list[int]]] = {i: [] for i in ids}
    labels: dict[int, list[int]] = {i: [] for i in ids}
    for a in coco.get("annotations", []):
        i = a.get("image_id")
        if i in wanted and not a.get("iscrowd", 0):
            boxes[i].append(coco_box_xyxy(a["bbox"]))
            labels[i].append(a.get("category_id"))
    return [
        DetectionSample(str(i), img_root / by_id[i], np.asarray(boxes[i], dtype=np.int64).reshape(-1, 4), labels[i])
        for i in ids
    ]


# ---------------------------------------------------------------------------- VOC segmentation
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class SegmentationSample:
    """One VOC12 segmentation image and its class-label PNG."""

    name: str
    image: Path
    label: Path


def voc_segmentation_samples(data_dir: str | os.PathLike, split: str, limit: int | None = None) -> list[SegmentationSample]:
    """VOC2012 ``ImageSets/Segmentation/{split}.txt`` with ``SegmentationClass`` labels."""
    root = voc_root(data_dir, "2012")
    ids = _split_ids(root, "Segmentation", split, limit)
    out = []
    for i in ids:
        lab = root / "SegmentationClass" / f"{i}.png"
        if not lab.is_file():
            raise FoundError(f"segmentation label {lab} does not exist")
        out.append(SegmentationSample(i, root / "JPEGImages" / f"{i}.jpg", lab))
    return out


def read_label(path: Path) -> np.ndarray:
    """Class indices of a VOC palette PNG (0 background, 1–20 classes, 255 ignore)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise FoundError(f"{path}: expected a palette/grey class-index PNG, got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read label ({e})") from None

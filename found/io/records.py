"""One record per prediction: the keys every surface writes, documented once in docs/records.md.

A *record* is a JSON-ready dict. Its shared keys (:data:`RECORD_KEYS`) are the same, with the same
values, in ``boxes.json``, the video's ``<name>_boxes.jsonl``, the Ray Parquet table, the HTTP
answer and the live socket; a surface adds its own keys around them (a frame's index and time,
timings, a batch size). :func:`result_record` makes one, :func:`record_to_json` /
:func:`record_from_json` carry one as a single JSON line, and :func:`boxes_document` (here) and
:func:`found.io.coco.coco_from_records` assemble run files from a list of records alone.

Values: boxes in pixels of the input at full resolution, ``box_xyxy`` max exclusive, ``box_xywh``
the COCO box; ``score`` rounded to 6 decimals; an instance's ``score`` unrounded (as COCO files
hold it). numpy only: nothing here runs a model.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

#: Version of the record keys (1: the keys before they were shared; see docs/records.md).
SCHEMA_VERSION = 2
#: What the two box formats mean (``boxes.json`` repeats it at its top).
BOX_FORMAT = {"xyxy": "x1, y1, x2, y2 (max exclusive)", "xywh": "COCO x, y, width, height"}
#: The keys of every prediction's record, in order (``file``/``name`` before them when the input has
#: a path, ``instances`` after them when objects are listed).
RECORD_KEYS = ("width", "height", "score", "refined", "downscaled", "box_xyxy", "box_xywh", "processed_size", "notes")
#: The keys of every object in ``instances`` (``segmentation`` after them when masks are kept).
INSTANCE_KEYS = ("box_xyxy", "box_xywh", "area", "score")
#: The keys of a ``boxes.json`` entry: a record without ``name`` or instance masks.
BOXES_KEYS = ("file",) + RECORD_KEYS + ("instances",)


class RecordError(ValueError):
    """A line or dict that is not a record of this schema (torn, foreign, or of another version)."""


def box_fields(box: Any) -> dict:
    """``{"box_xyxy": [x1, y1, x2, y2], "box_xywh": [x, y, w, h]}`` of a box (max exclusive), or both None."""
    if box is None:
        return {"box_xyxy": None, "box_xywh": None}
    x1, y1, x2, y2 = (int(v) for v in box)
    return {"box_xyxy": [x1, y1, x2, y2], "box_xywh": [x1, y1, x2 - x1, y2 - y1]}


def instance_record(inst: Any, masks: bool = False) -> dict:
    """One object: its boxes, area (pixels) and score; with ``masks`` its compressed-RLE ``segmentation``."""
    rec = {**box_fields(inst.box_xyxy), "area": int(inst.area), "score": float(inst.score)}
    if masks:
        from .coco import encode_rle  # pycocotools, only when masks are asked for

        rec["segmentation"] = encode_rle(inst.full_mask())
    return rec


def instance_records(instances: Sequence[Any], masks: bool = False) -> list[dict]:
    """The records of a prediction's objects (largest first, as the prediction lists them)."""
    return [instance_record(i, masks) for i in instances]


def prediction_record(pred: Any, image: Any, *, instances: bool = True, masks: bool = False) -> dict:
    """The shared keys of prediction ``pred`` (at full resolution) of ``image`` (the
    :class:`~found.io.images.LoadedImage` the model saw), plus ``instances`` when asked."""
    W, H = image.original_size
    rec: dict = {"width": int(W), "height": int(H), "score": round(float(pred.score), 6), "refined": bool(pred.refined),
                 "downscaled": bool(image.downscaled), **box_fields(pred.box),
                 "processed_size": [int(v) for v in image.size] if image.downscaled else None, "notes": list(image.notes)}
    if instances:
        rec["instances"] = instance_records(pred.instances, masks)
    return rec


def result_record(result: Any, file: str | None = None, name: str | None = None, *, instances: bool = True,
                  masks: bool = False) -> dict:
    """The record of a successful engine result; ``file`` is the input as given, ``name`` how a
    dataset calls it (default: ``file``), both left out for an input without a path (an upload)."""
    head = {} if file is None else {"file": str(file), "name": str(file if name is None else name)}
    return {**head, **prediction_record(result.prediction, result.image, instances=instances, masks=masks)}


def error_record(file: str, error: str, name: str | None = None) -> dict:
    """The record of an input that failed: its file and a one-line reason."""
    return {"file": str(file), "name": str(file if name is None else name), "error": str(error)}


def record_to_json(record: dict) -> str:
    """One record as one JSON line (no newline), ``schema_version`` first."""
    return json.dumps({"schema_version": SCHEMA_VERSION, **{k: v for k, v in record.items() if k != "schema_version"}},
                      separators=(",", ":"))


def record_from_json(line: str) -> dict:
    """The record of a line written by :func:`record_to_json` (without ``schema_version``);
    :class:`RecordError` for a torn line, something else, or another schema version."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise RecordError(f"not a JSON record ({e})") from None
    if not isinstance(obj, dict) or obj.get("schema_version") != SCHEMA_VERSION:
        got = obj.get("schema_version") if isinstance(obj, dict) else type(obj).__name__
        raise RecordError(f"not a record of schema version {SCHEMA_VERSION} (got {got!r})")
    del obj["schema_version"]
    return obj


def boxes_entry(record: dict, instances: bool = False) -> dict:
    """A record as ``boxes.json`` lists it: ``file`` and the shared keys (and with ``instances`` the
    objects, without masks); a version-1 entry gets the keys it lacked (``processed_size``, ``notes``)."""
    entry = {k: record.get(k) for k in ("file",) + RECORD_KEYS}
    if entry["notes"] is None:
        entry["notes"] = []
    if instances:
        entry["instances"] = [{k: i[k] for k in INSTANCE_KEYS} for i in record.get("instances") or []]
    return entry


def boxes_document(records: Iterable[dict], mode: str, instances: bool = False) -> dict:
    """``boxes.json`` of a run: the schema version, box format, mode and one entry per record,
    sorted by file (records of failed inputs are left out)."""
    entries = sorted((boxes_entry(r, instances) for r in records if r.get("error") is None), key=lambda e: e["file"])
    return {"schema_version": SCHEMA_VERSION, "box_format": dict(BOX_FORMAT), "mode": mode, "images": entries}

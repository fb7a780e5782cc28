"""``found evaluate saliency | discovery | detection | retrieval``: the paper's three benchmarks, one command each,
and class-agnostic detection metrics of the instances.

See docs/evaluation.md for the protocols, the paper's numbers and every known deviation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import FoundError
from .common import add_instance_args, add_model_args, instance_filter_from_args, model_from_args

SALIENCY_DATASETS = ("ECSSD", "DUTS-TE", "DUT-OMRON")
DISCOVERY_DATASETS = ("VOC07", "VOC12", "COCO20k")


def _box_dataset_args(p: argparse.ArgumentParser) -> None:
    """The datasets with ground-truth boxes (CorLoc, detection): VOC07, VOC12, COCO20k."""
    p.add_argument("--dataset", choices=DISCOVERY_DATASETS, required=True)
    p.add_argument("--data-dir", metavar="DIR", required=True, help="VOCdevkit (VOC07/VOC12) or the COCO root holding train2014/ (COCO20k)")
    p.add_argument("--split", default="trainval", help="VOC split file under ImageSets/Main (default trainval, as the paper)")
    p.add_argument("--coco20k-list", metavar="PATH", help="coco_20k_filenames.txt (default: downloaded once into the torch hub cache, sha256-checked)")
    p.add_argument("--coco-annotations", metavar="PATH", help="instances_train2014.json (default: <data-dir>/annotations/instances_train2014.json)")


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}")
    return n


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", metavar="DIR", help="where results are written (default: found-eval/<task>-<dataset>…)")
    p.add_argument("--limit", type=_positive, metavar="N", help="only the first N images (quick check; not comparable with the paper)")
    add_model_args(p, runtime=False, precision="fp32")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``found evaluate`` and its four benchmark tasks (saliency, discovery, detection, retrieval)."""
    p = sub.add_parser("evaluate", help="run the paper's benchmarks: saliency, discovery (CorLoc), detection (AP/AR), retrieval")
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True

    s = tasks.add_parser("saliency", help="unsupervised saliency detection (ECSSD, DUTS-TE, DUT-OMRON)",
                         description="Per-image Acc, IoU, max F (authors' code: effective β²=0.09) averaged over images, "
                         "plus the standard SOD metrics (pysodmetrics, β²=0.3). Full-resolution inference.")
    s.add_argument("--dataset", choices=SALIENCY_DATASETS, help="official layout under --data-dir")
    s.add_argument("--data-dir", metavar="DIR", help="dataset folder (or its parent)")
    s.add_argument("--images", metavar="DIR", help="generic layout: image folder (with --masks)")
    s.add_argument("--masks", metavar="DIR", help="generic layout: mask folder, masks named like the images")
    s.add_argument("--mode", choices=["single", "multi"], default="single", help="'single': main component only (default, as the authors' script); 'multi': whole soft map")
    s.add_argument("--refine", action="store_true", help="apply the bilateral solver (the paper's '+BS' rows)")
    s.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw curves.png")
    _common(s)
    s.set_defaults(func=run_saliency)

    d = tasks.add_parser("discovery", help="single-object discovery CorLoc (VOC07, VOC12, COCO20k)",
                         description="CorLoc: share of images whose predicted box (largest component of the patch-level mask) "
                         "has IoU >= 0.5 with a ground-truth box.")
    _box_dataset_args(d)
    d.add_argument("--batch-size", type=_positive, default=1, help="images per forward pass (same-size images only are batched)")
    _common(d)
    d.set_defaults(func=run_discovery)

    t = tasks.add_parser("detection", help="class-agnostic detection AP/AR of the instances, beside CorLoc (VOC07, VOC12, COCO20k)",
                         description="Each connected component of the predicted mask is a detection scored by its mean object "
                         "probability; pycocotools' COCOeval (bbox, one class, all ground-truth boxes) gives AP, AP50, AP75, "
                         "AR@1/10/100. CorLoc as in 'found evaluate discovery'. Needs pycocotools: pip install 'found[coco]'.")
    _box_dataset_args(t)
    t.add_argument("--objects", choices=["single", "multi"], default="multi",
                   help="'multi': every 4-connected component is a detection (default); 'single': the largest only")
    add_instance_args(t)
    _common(t)
    t.set_defaults(func=run_detection)

    r = tasks.add_parser("retrieval", help="unsupervised semantic-segmentation retrieval on VOC12 (MaskContrast protocol)",
                         description="Memory bank of object prototypes from VOC12 train (objects = FOUND's mask, or its "
                         "connected components with --objects multi), nearest train object for each val object, mIoU "
                         "over 21 classes and over MaskContrast's 7 classes. Paper Table 3 rows: default (single saliency "
                         "mask), --refine (+ bilateral solver), --objects multi (multiple saliency masks).")
    r.add_argument("--data-dir", metavar="DIR", required=True, help="VOCdevkit (with VOC2012/SegmentationClass)")
    r.add_argument("--classes", nargs="+", choices=["21", "7"], default=["21", "7"], help="class settings to report (default both)")
    r.add_argument("--size", type=_positive, default=512, help="images and labels resized to SIZE×SIZE (MaskContrast: 512)")
    r.add_argument("--features", choices=["keys", "tokens"], default="keys", help="patch features pooled into prototypes: last-block keys (FOUND's head input, default) or final tokens")
    r.add_argument("--objects", choices=["single", "multi"], default="single",
                   help="'single': the whole mask is one object (default); 'multi': each 4-connected component is an "
                   "object, components under 1%% of the resized image discarded")
    r.add_argument("--refine", action="store_true",
                   help="refine the mask with the bilateral solver first (keep 'single'/'all' for --objects single/multi; "
                   "used only if IoU > 0.5 with the mask, as the authors)")
    r.add_argument("--pooling", choices=["mean", "soft"], default="mean",
                   help="'mean': plain average of the features over the object's pixels (the paper's text, default); "
                   "'soft': saliency-weighted sum (MaskContrast's prototype)")
    r.add_argument("--train-limit", type=_positive, metavar="N", help="only the first N train images in the memory bank")
    _common(r)
    r.set_defaults(func=run_retrieval)


# ---------------------------------------------------------------------------- helpers
def _out_dir(args, default: str) -> Path:
    return Path(args.output_dir).expanduser() if args.output_dir else Path("found-eval") / default


def _model_info(args) -> dict:
    from ..version import __version__

    return {
        "found_version": __version__,
        "model": args.model,
        "weights": args.weights,
        "head": getattr(args, "head", None),
        "coarse": bool(getattr(args, "coarse", False)),
        "precision": args.precision,
        "limit": args.limit,
    }


def _limit_note(args) -> list[str]:
    return [f"--limit {args.limit}: partial run, not comparable with the paper"] if args.limit else []


def _write_json(path: Path, obj) -> None:
    from ..evaluate.saliency import json_safe
    from ..io.files import atomic_write_text

    atomic_write_text(path, json.dumps(json_safe(obj), indent=2) + "\n")


# ---------------------------------------------------------------------------- saliency
def run_saliency(args: argparse.Namespace) -> int:
    """``found evaluate saliency``: score the model on a saliency set, print the tables and write the reports."""
    from ..evaluate.datasets import saliency_dirs, saliency_samples
    from ..evaluate.saliency import evaluate_saliency, report_text, write_saliency_outputs

    if args.images or args.masks:
        if not (args.images and args.masks):
            raise FoundError("--images and --masks go together")
        if args.dataset or args.data_dir:
            raise FoundError("use either --dataset/--data-dir or --images/--masks, not both")
        img_dir, gt_dir, name = Path(args.images), Path(args.masks), "custom"
    else:
        if not (args.dataset and args.data_dir):
            raise FoundError("give --dataset and --data-dir (or --images and --masks)")
        img_dir, gt_dir = saliency_dirs(args.dataset, args.data_dir)
        name = args.dataset
    samples = saliency_samples(img_dir, gt_dir, limit=args.limit)
    model = model_from_args(args)
    rep = evaluate_saliency(model, samples, dataset=name, mode=args.mode, refine=args.refine, progress=args.progress)
    rep.notes.extend(_limit_note(args))
    out = _out_dir(args, f"saliency-{name}-{args.mode}{'-bs' if args.refine else ''}")
    extra = {"images": str(img_dir), "masks": str(gt_dir), **_model_info(args)}
    paths = write_saliency_outputs(rep, out, extra=extra, plot=args.plot)
    print(report_text(rep))
    print()
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


# ---------------------------------------------------------------------------- discovery
def run_discovery(args: argparse.Namespace) -> int:
    """``found evaluate discovery``: CorLoc on VOC07, VOC12 or COCO20k; writes results, boxes and misses."""
    from ..evaluate import datasets as ds
    from ..evaluate.discovery import evaluate_discovery
    from ..io.files import atomic_write_text

    if args.dataset in ("VOC07", "VOC12"):
        year = "2007" if args.dataset == "VOC07" else "2012"
        samples = ds.voc_detection_samples(args.data_dir, year, args.split, limit=args.limit)
    else:
        lst = ds.coco20k_list_path(args.coco20k_list, progress=args.progress)
        samples = ds.coco20k_samples(args.data_dir, lst, args.coco_annotations, limit=args.limit)
    model = model_from_args(args)
    res = evaluate_discovery(model, samples, chunk=args.batch_size, progress=args.progress, desc=f"{args.dataset} CorLoc")
    out = _out_dir(args, f"discovery-{args.dataset}")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"task": "discovery", "dataset": args.dataset, **res.summary(), "notes": _limit_note(args), **_model_info(args)}
    boxes = {
        r.name: {"image_hw": list(r.image_hw), "box_xyxy": r.box, "gt_boxes_xyxy": r.gt_boxes, "ious": r.ious, "hit": r.hit}
        for r in res.records
    }
    _write_json(out / "boxes.json", boxes)
    atomic_write_text(out / "misses.txt", "".join(f"{n}\n" for n in res.misses()))
    _write_json(out / "results.json", summary)
    s = res.summary()
    print(f"{args.dataset}: CorLoc {s['corloc_percent']:.2f} ({s['n_hits']}/{s['n_images']}); "
          f"empty predictions {s['n_empty_predictions']}, images without GT box {s['n_images_without_gt_box']}")
    for n in summary["notes"]:
        print(f"note: {n}")
    for k in ("results.json", "boxes.json", "misses.txt"):
        print(f"{k.split('.')[0]}: {out / k}")
    return 0


# ---------------------------------------------------------------------------- detection
def _detection_samples(args):
    from ..evaluate import datasets as ds

    if args.dataset in ("VOC07", "VOC12"):
        year = "2007" if args.dataset == "VOC07" else "2012"
        return ds.voc_detection_samples(args.data_dir, year, args.split, limit=args.limit)
    lst = ds.coco20k_list_path(args.coco20k_list, progress=args.progress)
    return ds.coco20k_samples(args.data_dir, lst, args.coco_annotations, limit=args.limit)


def run_detection(args: argparse.Namespace) -> int:
    """``found evaluate detection``: class-agnostic AP/AR of the instances (pycocotools) beside CorLoc."""
    from ..io.coco import require_pycocotools
    from ..evaluate.detection import evaluate_detection

    flt = instance_filter_from_args(args)
    require_pycocotools()  # missing: say so before loading anything
    samples = _detection_samples(args)
    model = model_from_args(args)
    res = evaluate_detection(model, samples, objects=args.objects, flt=flt, progress=args.progress, desc=f"{args.dataset} detection")
    out = _out_dir(args, f"detection-{args.dataset}-{args.objects}")
    out.mkdir(parents=True, exist_ok=True)
    s = res.summary()
    filters = {"max_instances": flt.max_instances, "min_area": flt.min_area, "min_score": flt.min_score}
    summary = {"task": "detection", "dataset": args.dataset, **s, "filters": filters, "notes": _limit_note(args), **_model_info(args)}
    _write_json(out / "boxes.json", res.per_image())
    _write_json(out / "results.json", summary)
    pct = {k: 100 * s[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")}
    print(f"{args.dataset} class-agnostic detection ({args.objects}): AP {pct['AP']:.2f}, AP50 {pct['AP50']:.2f}, "
          f"AP75 {pct['AP75']:.2f}, AR@1 {pct['AR1']:.2f}, AR@10 {pct['AR10']:.2f}, AR@100 {pct['AR100']:.2f}; "
          f"CorLoc {s['corloc_percent']:.2f}")
    print(f"{s['n_images']} images, {s['n_gt_boxes']} ground-truth boxes, {s['n_instances']} instances "
          f"({s['n_images_without_instance']} images without any)")
    for n in summary["notes"]:
        print(f"note: {n}")
    for k in ("results.json", "boxes.json"):
        print(f"{k.split('.')[0]}: {out / k}")
    return 0


# ---------------------------------------------------------------------------- retrieval
def run_retrieval(args: argparse.Namespace) -> int:
    """``found evaluate retrieval``: VOC12 object retrieval mIoU per class set, with a train memory bank."""
    from ..evaluate.datasets import voc_segmentation_samples
    from ..evaluate.retrieval import evaluate_retrieval

    train = voc_segmentation_samples(args.data_dir, "train", limit=args.train_limit or args.limit)
    val = voc_segmentation_samples(args.data_dir, "val", limit=args.limit)
    model = model_from_args(args)
    classes = tuple(dict.fromkeys(args.classes))
    res = evaluate_retrieval(model, train, val, size=args.size, features=args.features, class_sets=classes,
                             progress=args.progress, objects=args.objects, pooling=args.pooling, refine=args.refine)
    out = _out_dir(args, f"retrieval-VOC12-{args.objects}{'-bs' if args.refine else ''}-{args.pooling}")
    out.mkdir(parents=True, exist_ok=True)
    notes = _limit_note(args) + ([f"--train-limit {args.train_limit}: partial memory bank"] if args.train_limit else [])
    summary = {"task": "retrieval", "dataset": "VOC12", **res.summary(), "notes": notes, **_model_info(args)}
    _write_json(out / "results.json", summary)
    setup = f"objects {args.objects}{', bilateral solver' if args.refine else ''}, {args.pooling} pooling, {args.features}"
    for cs in classes:
        print(f"VOC12 retrieval ({setup}), {cs} classes: mIoU {100 * res.miou[cs]:.2f} "
              f"(memory bank {res.memory_bank_size[cs]} train objects, {res.n_val} val images, {res.n_val_objects} val objects)")
    if args.refine:
        print(f"bilateral solver accepted on {res.n_refined_train}/{res.n_train} train and {res.n_refined_val}/{res.n_val} val images")
    for n in notes:
        print(f"note: {n}")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from .main import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))

"""``found segment INPUT... -o OUTDIR``: masks, cut-outs, overlays and boxes for images on disk."""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FoundError, InputError
from ..fileio import atomic_path, atomic_write_text
from ..imageio import IMAGE_SUFFIXES, open_image, to_rgb_array
from .common import add_model_args, model_from_args

OUTPUTS = {
    "mask": "_mask.png",
    "soft": "_soft.png",
    "cutout": "_cutout.png",
    "overlay": "_overlay.png",
}
BOXES_FILE = "boxes.json"
DEFAULT_MAX_SIDE = 1024


def add_parser(sub) -> None:
    p = sub.add_parser("segment", help="segment the main object(s) of images", description=__doc__)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the outputs")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    o = p.add_argument_group("outputs (default: --mask)")
    o.add_argument("--mask", action="store_true", help="binary mask PNG (<name>_mask.png, 0/255)")
    o.add_argument("--soft", action="store_true", help="soft mask PNG (<name>_soft.png, probability × 255)")
    o.add_argument("--cutout", action="store_true", help="RGBA cut-out PNG (<name>_cutout.png)")
    o.add_argument("--overlay", action="store_true", help="mask and box drawn over the image (<name>_overlay.png)")
    o.add_argument("--boxes", action="store_true", help=f"one {BOXES_FILE} for the run (xyxy and COCO xywh boxes, sizes, scores)")
    o.add_argument("--all", action="store_true", help="every output above")
    p.add_argument("--mode", choices=["multi", "single"], default="multi", help="'multi' keeps the whole mask, 'single' its main component")
    p.add_argument("--refine", action="store_true", help="bilateral-solver refinement (kept only if IoU with the mask > 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip images whose outputs exist)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (same-size images are batched)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help=f"downscale images whose longer side exceeds this for inference, masks are scaled back (default {DEFAULT_MAX_SIDE}; 0 = never)")
    add_model_args(p)
    p.set_defaults(func=run)


@dataclass
class Job:
    path: Path
    rel: Path  # output stem relative to OUTDIR (without suffix)


def collect_inputs(inputs: list[str], recursive: bool) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand files, folders and globs into jobs; unusable arguments are returned as failures."""
    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            jobs.append(Job(path, rel))

    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            walker = os.walk(p, followlinks=False) if recursive else [(str(p), [], os.listdir(p))]
            for root, dirs, files in walker:
                dirs.sort()
                for name in sorted(files):
                    f = Path(root) / name
                    if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir():
                        add(f, f.relative_to(p).with_suffix(""))
        elif p.exists() or p.is_symlink():
            add(p, Path(p.stem))
        elif any(ch in arg for ch in "*?["):
            matches = sorted(glob.glob(arg, recursive=recursive))
            if not matches:
                failures.append((arg, "no file matches this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_file():
                    add(mp, Path(mp.stem))
        else:
            failures.append((arg, "no such file or folder"))
    # Disambiguate equal output stems (e.g. a/x.jpg and b/x.png given as files).
    counts: dict[Path, int] = {}
    for j in jobs:
        n = counts.get(j.rel, 0)
        counts[j.rel] = n + 1
        if n:
            j.rel = j.rel.with_name(f"{j.rel.name}_{n}")
    return jobs, failures


def _save_png(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def overlay_image(rgb: np.ndarray, mask: np.ndarray, box) -> Image.Image:
    """The image with the mask tinted and the box outlined (for a quick visual check)."""
    from PIL import ImageDraw

    out = rgb.astype(np.float32)
    tint = np.array([255, 40, 40], np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * tint
    im = Image.fromarray(out.round().astype(np.uint8))
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        ImageDraw.Draw(im).rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=(255, 255, 0), width=max(1, min(rgb.shape[:2]) // 150))
    return im


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    wanted = [k for k in OUTPUTS if getattr(args, k) or args.all]
    want_boxes = args.boxes or args.all
    if not wanted and not want_boxes:
        wanted = ["mask"]
    if args.batch_size < 1:
        raise FoundError("--batch-size must be at least 1")
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise FoundError(f"output {outdir} exists and is not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FoundError(f"cannot create output folder {outdir}: {e.strerror or e}") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise FoundError(f"output folder {outdir} is not writable")

    jobs, failures = collect_inputs(args.inputs, args.recursive)
    inputs = {j.path.resolve() for j in jobs}
    for j in jobs:
        for k in wanted:
            if (outdir / (str(j.rel) + OUTPUTS[k])).resolve() in inputs:
                raise FoundError(f"output {outdir / (str(j.rel) + OUTPUTS[k])} would overwrite an input; choose another -o")
    boxes_path = outdir / BOXES_FILE
    if want_boxes and boxes_path.resolve() in inputs:
        raise FoundError(f"{boxes_path} is an input; choose another -o")
    old_boxes: dict[str, dict] = {}
    if want_boxes and boxes_path.is_file() and not args.overwrite:
        try:
            old_boxes = {e["file"]: e for e in json.loads(boxes_path.read_text())["images"]}
        except (ValueError, KeyError, TypeError):
            old_boxes = {}

    def done(j: Job) -> bool:
        if args.overwrite:
            return False
        files_done = all((outdir / (str(j.rel) + OUTPUTS[k])).exists() for k in wanted)
        return files_done and (not want_boxes or str(j.path) in old_boxes)

    todo = [j for j in jobs if not done(j)]
    skipped = len(jobs) - len(todo)
    if not jobs and failures:
        for arg, why in failures:
            print(f"found: {arg}: {why}", file=sys.stderr)
        return 1
    model = model_from_args(args) if todo else None

    records: dict[str, dict] = dict(old_boxes)
    ok = 0
    bar = tqdm(total=len(todo), unit="img", desc="segment", disable=not args.progress)
    for s in range(0, len(todo), args.batch_size):
        chunk = todo[s : s + args.batch_size]
        loaded = []
        for j in chunk:
            try:
                im = open_image(j.path)
                loaded.append((j, im, to_rgb_array(im)))
            except InputError as e:
                failures.append((str(j.path), str(e).split(": ", 1)[-1]))
                bar.update(1)
        if not loaded:
            continue
        small = [_downscale(rgb, args.max_side) for _, _, rgb in loaded]
        try:
            preds = model.predict([a for a, _ in small], mode=args.mode, refine=args.refine, batch_size=args.batch_size)
        except (RuntimeError, ValueError) as e:
            if "out of memory" not in str(e).lower() and not isinstance(e, ValueError):
                raise
            for j, _, _ in loaded:
                failures.append((str(j.path), str(e).splitlines()[0]))
            bar.update(len(loaded))
            continue
        for (j, im, rgb), (_, scale), pred in zip(loaded, small, preds):
            try:
                rec = _write_outputs(outdir, j, im, rgb, pred, scale, wanted)
                records[str(j.path)] = rec
                ok += 1
            except OSError as e:
                failures.append((str(j.path), f"cannot write outputs: {e.strerror or e}"))
            bar.update(1)
    bar.close()
    if want_boxes:
        entries = [records[k] for k in sorted(records)]
        atomic_write_text(boxes_path, json.dumps({"box_format": {"xyxy": "x1, y1, x2, y2 (max exclusive)", "xywh": "COCO x, y, width, height"},
                                                   "mode": args.mode, "images": entries}, indent=1))
    print(f"found segment: {ok} ok, {skipped} skipped (outputs exist), {len(failures)} failed", file=sys.stderr)
    for path, why in failures:
        print(f"  failed: {path}: {why}", file=sys.stderr)
    return 1 if failures else 0


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb, 1.0
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC)), s


def _write_outputs(outdir: Path, job: Job, im: Image.Image, rgb: np.ndarray, pred, scale: float, wanted: list[str]) -> dict:
    h, w = rgb.shape[:2]
    soft, mask, box = pred.soft, pred.mask, pred.box
    if scale != 1.0:  # bring the masks back to the input's size
        soft = np.asarray(Image.fromarray(soft).resize((w, h), Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)) > 127
        if box is not None:
            box = np.array([min(w, round(box[0] / scale)), min(h, round(box[1] / scale)), min(w, round(box[2] / scale)), min(h, round(box[3] / scale))])
    base = outdir / str(job.rel)
    if "mask" in wanted:
        _save_png(Path(str(base) + OUTPUTS["mask"]), Image.fromarray(mask.astype(np.uint8) * 255))
    if "soft" in wanted:
        _save_png(Path(str(base) + OUTPUTS["soft"]), Image.fromarray(np.clip(soft * 255 + 0.5, 0, 255).astype(np.uint8)))
    if "cutout" in wanted:
        alpha = mask.astype(np.uint8) * 255
        if "A" in im.getbands():
            alpha = np.minimum(alpha, np.asarray(im.getchannel("A").convert("L")))
        _save_png(Path(str(base) + OUTPUTS["cutout"]), Image.fromarray(np.dstack([rgb, alpha])))
    if "overlay" in wanted:
        _save_png(Path(str(base) + OUTPUTS["overlay"]), overlay_image(rgb, mask, box))
    rec = {"file": str(job.path), "width": w, "height": h, "score": round(float(pred.score), 6), "refined": bool(pred.refined),
           "downscaled": scale != 1.0, "box_xyxy": None, "box_xywh": None}
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        rec["box_xyxy"] = [x1, y1, x2, y2]
        rec["box_xywh"] = [x1, y1, x2 - x1, y2 - y1]
    return rec

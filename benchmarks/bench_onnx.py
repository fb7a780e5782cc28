#!/usr/bin/env python3
"""ONNX Runtime vs PyTorch on the CPU, same run: tensor in → binary mask out (``Found.masks``).

Rows: ``torch-fp32`` (the baseline: ``Found``'s fast PyTorch path in fp32, oneDNN on the CPU),
``torch-bf16`` (the same in bfloat16: what ``--precision auto`` runs on a CPU with bf16 units), ``ort-fp32`` (the exported
file on onnxruntime's CPU provider), ``ort-int8`` (onnxruntime's dynamic int8 quantisation of the
MLPs) and, for reference, ``torch-int8``. Each round times every row back to back (medians over
rounds; ``ratio`` = median of the per-round speed-ups over torch-fp32). The mask IoU of each row
against torch-fp32 is measured on ``--images`` (each photo at the working scale, found.engine.DEFAULT_MAX_SIDE).

    python benchmarks/bench_onnx.py --quick            # random ViT-S/8, about 3 minutes on 2 cores
    python benchmarks/bench_onnx.py --weights vit.pth --head head.pt --images DIR

Default weights are random (ViT-S/8's architecture, hence its compute): the timings hold, but the
IoU of a random network says little (any perturbation flips its noisy masks); see docs/onnx.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _hw(s: str) -> tuple[int, int]:
    h, _, w = s.partition("x")
    return int(h), int(w or h)


def build_nets(args: argparse.Namespace):
    """(backbone, head, name): the given checkpoints, or a seeded random ViT-S/8 and head."""
    from found.hub.build import load_backbone, load_head
    from found.model.backbone import VisionTransformer
    from found.model.head import FoundHead

    if args.weights:
        vit = load_backbone("auto", args.weights, progress=False)
        head = load_head("auto", args.head, in_dim=vit.embed_dim) if args.head else FoundHead(vit.embed_dim)
        return vit, head, f"{Path(args.weights).name} + {Path(args.head).name if args.head else 'random head'}"
    torch.manual_seed(0)
    vit = VisionTransformer(patch_size=8, embed_dim=384, depth=12, num_heads=6).eval()
    return vit, FoundHead(384).eval(), "random ViT-S/8 + random head"


def build_models(vit, head, folder: Path, threads: int, chunks: int) -> dict:
    """The rows: name → model, all on the CPU; the ONNX files are written into ``folder``."""
    from found import Found
    from found.export.onnx import export_onnx, quantize_onnx_int8
    from found.export.runtime import OnnxFound

    fp32 = export_onnx(vit, head, folder / "found.onnx", model="bench", attention_chunks=chunks)
    int8 = quantize_onnx_int8(fp32, folder / "found.int8.onnx")
    return {
        "torch-fp32": Found(vit, head, device="cpu", precision="fp32"),
        "torch-bf16": Found(vit, head, device="cpu", precision="bf16"),
        "ort-fp32": OnnxFound(fp32, "cpu", threads=threads),
        "ort-int8": OnnxFound(int8, "cpu", threads=threads),
        "torch-int8": Found(vit, head, device="cpu", precision="int8"),
    }


def time_rows(models: dict, hw: tuple[int, int], batch: int, reps: int) -> list[dict]:
    """ms/img of every model on one input, interleaved rounds after a warm-up."""
    x = torch.randn(batch, 3, *hw)
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.masks(x)  # warm-up (and ONNX Runtime's first-run allocations)
    for _ in range(reps):
        for name, m in models.items():
            t0 = time.perf_counter()
            m.masks(x)
            times[name].append((time.perf_counter() - t0) * 1000 / batch)
    base = times["torch-fp32"]
    rows = []
    for name, ts in times.items():
        rows.append({"bench": "speed", "size": f"{hw[0]}x{hw[1]}", "batch": batch, "path": name,
                     "ms_per_img": statistics.median(ts), "ratio": statistics.median(b / t for b, t in zip(base, ts)),
                     "ratio_best": min(base) / min(ts)})
    return rows


def agreement_rows(models: dict, paths: list[Path]) -> list[dict]:
    """Mask IoU of every row against torch-fp32 on the photos."""
    from found.export.runtime import MIN_INT8_IOU, predictor_agreement
    from found.io.images import read_image

    from found.engine import DEFAULT_MAX_SIDE

    images = [read_image(p, max_side=DEFAULT_MAX_SIDE, min_side=32).rgb() for p in paths]
    rows = []
    for name, m in models.items():
        if name == "torch-fp32":
            continue
        a = predictor_agreement(models["torch-fp32"], m, images)
        rows.append({"bench": "agreement", "path": name, **a,
                     "int8_accepted": a["mask_iou_min"] >= MIN_INT8_IOU if "int8" in name else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="224x224,320x480", help="input sizes HxW, comma-separated")
    p.add_argument("--batch-sizes", default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--reps", type=int, default=7, help="timed rounds per size and batch (default 7)")
    p.add_argument("--quick", action="store_true", help="3 rounds, batch 1 and 4")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads for both runtimes")
    p.add_argument("--weights", help="backbone checkpoint (default: random ViT-S/8)")
    p.add_argument("--head", help="FOUND head checkpoint (default: random)")
    p.add_argument("--images", default=str(REPO / "tests" / "data" / "images"), help="photos for the mask IoU ('' skips it)")
    p.add_argument("--attention-chunks", type=int, default=8, help="query slices of the exported attention (default 8)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [_hw(s) for s in args.sizes.split(",")]
    batches = [1, 4] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    reps = 3 if args.quick else args.reps
    vit, head, what = build_nets(args)
    import onnxruntime

    print(f"weights: {what}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads, CPU, "
          f"attention chunks {args.attention_chunks}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        models = build_models(vit, head, Path(d), args.threads, args.attention_chunks)
        for hw in sizes:
            for b in batches:
                for r in time_rows(models, hw, b, reps):
                    rows.append(r)
                    print(f"speed  {r['size']:>7s} batch {b:<2d} {r['path']:10s} {r['ms_per_img']:8.1f} ms/img  "
                          f"x{r['ratio']:.2f} vs torch-fp32 (best x{r['ratio_best']:.2f})")
        paths = sorted(q for q in Path(args.images).iterdir() if q.suffix.lower() in (".png", ".jpg", ".jpeg")) if args.images else []
        for r in agreement_rows(models, paths) if paths else []:
            rows.append(r)
            note = "" if r["int8_accepted"] is None else ("  accepted (>= 0.99)" if r["int8_accepted"] else "  REJECTED (< 0.99)")
            print(f"agree  {r['images']} photos  {r['path']:10s} mask IoU vs torch-fp32: mean {r['mask_iou_mean']:.4f}, "
                  f"min {r['mask_iou_min']:.4f} ({r['mask_pixels_differing']} px differ){note}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

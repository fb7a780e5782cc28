"""``found bench``: throughput of FOUND's fast path against the eager float32 baseline.

Two measurements, each with the baseline run in the same process and interleaved with the
candidates (medians over repetitions, so that load from other jobs hits both alike):

* model: a normalised tensor in → binary mask out (backbone, head, upsampling), per image size and
  batch size; also the agreement of the outputs (max |Δ| of CLS attention and keys, mask IoU);
* folder: JPEG files in → PNG masks out through the engine and writers that ``found segment`` runs
  (:func:`found.bench.segment_folder`), decoding and writing in worker threads, against the same
  engine with the eager model and everything in turn.

The backbone is a ViT-S/8 with random weights (same architecture, hence the same compute, as DINO
ViT-S/8; no download needed) and a random 1×1 head: the masks mean nothing, the timings do.
The baseline is DINO's code path as FOUND uses it: eager attention materialising the N×N map in
every block (``softmax(q kᵀ · scale) @ v``), the last block's full attention, keys from ``qkv``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch

from ..bench import (
    DEFAULT_SIZES,
    bench_backbones,
    bench_folder,
    bench_model,
    bench_profile,
    cpu_name,
    default_batches,
    default_precisions,
    folder_plan,
    load_nets,
    precision_agreement,
    quick_skip,
    report_targets,
    write_bench_json,
)
from ..errors import FoundError
from ..runtime.device import PRECISIONS, PrecisionError, as_device, check_precision


def _list(text: str, conv: Callable[[str], object]) -> list:
    """A comma-separated flag value, each item converted by ``conv`` (empty items dropped)."""
    return [conv(t) for t in text.split(",") if t.strip()]


def parse_size(text: str) -> tuple[int, int]:
    """``"320x480"`` (height × width) or ``"224"`` → (h, w)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        hw = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else None
    except ValueError:
        hw = None
    if hw is None or min(hw) < 1:
        raise ValueError(f"size {text!r} is not HxW (e.g. 320x480) or a single side")
    return hw


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``found bench`` (shared by the scripts in benchmarks/)."""
    p.add_argument("--quick", action="store_true", help="a short run (fewer repetitions, smaller batches and folders)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA if available, else CPU)")
    p.add_argument("--precision", type=lambda s: _list(s, str), metavar="LIST",
                   help=f"fast-path precisions to measure, comma-separated from {', '.join(PRECISIONS)} (default: cpu fp32,bf16,int8 on a CPU with bf16 units, else fp32,int8; cuda fp32,bf16)")
    p.add_argument("--sizes", type=lambda s: _list(s, parse_size), metavar="LIST", help="HxW image sizes (default 224x224,320x480)")
    p.add_argument("--batch-sizes", type=lambda s: _list(s, int), metavar="LIST", help="batch sizes (default: cpu 1,8 (quick 1,4); cuda 1,64,256)")
    p.add_argument("--reps", type=int, help="timed repetitions per measurement (default: 5, quick 2)")
    p.add_argument("--model", dest="run_model", action=argparse.BooleanOptionalAction, default=True, help="model throughput (tensor in → mask out)")
    p.add_argument("--folder", dest="run_folder", action=argparse.BooleanOptionalAction, default=True, help="folder throughput (JPEG files in → PNG masks out)")
    p.add_argument("--folder-images", type=int, metavar="N", help="JPEGs in the generated folder (default: cpu 16, quick 4; cuda 1000)")
    p.add_argument("--workers", type=int, help="decoding threads of the engine in the folder benchmark (default: as found segment, min(4, CPUs))")
    p.add_argument("--profile", dest="run_profile", action=argparse.BooleanOptionalAction, default=True,
                   help="where the time goes: backbone GFLOP/s at the working scale against this CPU's matmul GFLOP/s, "
                        "and one photo's split (decode, resize, backbone, head, edge upsampling, encode/write)")
    p.add_argument("--backbones", type=lambda s: _list(s, str), metavar="LIST",
                   help="also compare registered backbones (random weights, same compute) at the working scale, one row "
                        "each, e.g. dino-vits8,dinov2-vits14-reg (CPU)")
    p.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="working scale of the profile (default: found segment's)")
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="torch.compile the backbone on CUDA (optional mode, e.g. reduce-overhead for CUDA graphs)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    p.add_argument("--json", metavar="PATH", help="also write all results (and the environment) as JSON")
    p.add_argument("--targets", action="store_true", help="compare with the project's performance targets (exit 1 if one is missed)")
    g = p.add_argument_group("real weights (default: a random ViT-S/8 and head, same compute)")
    g.add_argument("--weights", metavar="PATH", help="a DINO backbone checkpoint (its ViT size is read off the file)")
    g.add_argument("--head", metavar="PATH",
                   help="a FOUND head; default with --weights: the published head of the default model (384-d backbones)")
    g.add_argument("--num-heads", type=int, help="attention heads of the --weights backbone (default: embed dim / 64)")
    g.add_argument("--images", metavar="DIR",
                   help="also measure the mask agreement of every precision with the eager fp32 baseline on these images")
    g.add_argument("--onnx", action="append", metavar="FILE",
                   help="with --images: also the agreement of this ONNX file (from `found export onnx` of the same "
                        "weights; repeatable), e.g. to check an int8 file against the 0.99 IoU rule with --targets")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``found bench`` to the ``found`` command's sub-commands."""
    p = sub.add_parser("bench", help="measure throughput against the eager float32 baseline", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``found bench``: the sections the flags ask for, then the targets and the JSON file."""
    device = as_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FoundError(f"--device {args.device}: CUDA is not available on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    precisions = args.precision or default_precisions(device)
    try:
        for p in precisions:
            check_precision(p, device)
    except PrecisionError as e:  # the library names the field, the CLI the flag
        raise FoundError(f"--precision: {e}") from None
    sizes = args.sizes or list(DEFAULT_SIZES)
    batches = args.batch_sizes or default_batches(device, args.quick)
    reps = args.reps or (2 if args.quick else 5)
    if reps < 1 or min(batches) < 1:
        raise FoundError("--reps and batch sizes must be at least 1")
    image_paths = _image_paths(args.images) if getattr(args, "images", None) else []
    nets, note = load_nets(getattr(args, "weights", None), getattr(args, "head", None), getattr(args, "num_heads", None))
    print(f"found bench on {device} ({cpu_name() if not cuda else torch.cuda.get_device_name(device)}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {note}")
    print("baseline 'eager-fp32': DINO's eager attention (N×N softmax) in every block, float32; "
          "ratio = median over interleaved rounds of baseline time / path time")
    rows: list[dict] = []
    if args.run_model:
        # a quick CPU run batches 224x224 only: the eager baseline at 320x480 costs seconds per image
        rows += bench_model(device, precisions, sizes, batches, reps, warmup=1, compile_mode=args.compile, memory=args.memory,
                            skip=quick_skip(device, sizes, batches, args.quick), nets=nets)
    if args.run_folder:
        plan = folder_plan(device, sizes, batches, args.folder_images, args.quick)
        rows += bench_folder(device, precisions, **plan, workers=args.workers, compile_mode=args.compile, nets=nets)
    if getattr(args, "run_profile", False) and not cuda:
        rows += bench_profile(precisions, nets, args.max_side, quick=args.quick)
    if getattr(args, "backbones", None) and not cuda:
        print(f"backbones at the working scale (--max-side {args.max_side or 'default'}; random weights):")
        rows += bench_backbones(args.backbones, args.max_side, quick=args.quick)
    if image_paths:
        rows += precision_agreement(device, precisions, image_paths, nets, max_side=args.max_side, onnx_files=args.onnx or [])
    status = report_targets(rows, device) if args.targets else 0
    if args.json:
        write_bench_json(args.json, note, rows)
    return status


def _image_paths(folder: str) -> list[Path]:
    """The image files directly in ``folder`` (sorted); a clear error when there are none."""
    from ..io.images import IMAGE_SUFFIXES

    d = Path(folder)
    if not d.is_dir():
        raise FoundError(f"--images {folder}: not a folder")
    paths = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FoundError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


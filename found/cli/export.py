"""``found export onnx``: write the model's tensor core as an ONNX file (optionally an int8 copy)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import FoundError
from .common import add_model_args, check_model_args

FORMATS = ("onnx",)
#: Highest opset of PyTorch's TorchScript-based ONNX exporter (torch 2.x: 20).
MAX_OPSET = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``found export`` and its ``onnx`` format (options of the file, int8 copy and its check)."""
    p = sub.add_parser("export", help="export the model for deployment (ONNX)")
    formats = p.add_subparsers(dest="format", metavar="FORMAT")
    o = formats.add_parser("onnx", help="ONNX file for ONNX Runtime: padded images → patch logits, CLS attention, keys")
    o.add_argument("-o", "--output", required=True, metavar="FILE", help="ONNX file to write (e.g. found.onnx)")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 (default) to 20")
    o.add_argument("--tau", type=float, default=0.3, help="coarse-mask threshold stored in the file (default 0.3)")
    o.add_argument("--attention-chunks", type=int, default=8, metavar="N",
                   help="query slices of the exported attention: peak memory of its N×N matrix / N (default 8; 1 is ~15%% faster)")
    o.add_argument("--int8", nargs="?", const="", metavar="FILE",
                   help="also write onnxruntime's dynamic int8 quantisation (default name: FILE with .int8.onnx)")
    o.add_argument("--int8-scope", choices=["mlp", "all"], default="mlp",
                   help="linear layers quantised: the MLPs (default, as the torch int8 path) or also attention")
    o.add_argument("--check-images", metavar="DIR",
                   help="keep the int8 file only if its masks reach IoU >= 0.99 against fp32 on every photo in DIR")
    o.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    add_model_args(o, runtime=False, precision="fp32")
    o.set_defaults(func=run_onnx)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _int8_path(args: argparse.Namespace, out: Path) -> Path | None:
    if args.int8 is None:
        return None
    if args.int8:
        return Path(args.int8)
    return out.with_name(out.name[: -len(".onnx")] + ".int8.onnx" if out.name.endswith(".onnx") else out.name + ".int8.onnx")


def run_onnx(args: argparse.Namespace) -> int:
    """``found export onnx``: check the options, write the fp32 ONNX file and, with --int8, its quantised copy."""
    from ..hub.build import load_backbone, load_head
    from ..export.onnx import export_onnx
    from ..hub.registry import get_model_spec

    check_model_args(args)
    if args.precision != "fp32":
        raise FoundError("the ONNX export is fp32; add --int8 for a quantised copy")
    if not 17 <= args.opset <= MAX_OPSET:
        raise FoundError(f"--opset {args.opset}: FOUND's export writes opsets 17 to {MAX_OPSET}")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise FoundError(f"{out.parent}: output folder does not exist")
    int8 = _int8_path(args, out)
    if args.attention_chunks < 1:
        raise FoundError("--attention-chunks must be at least 1")
    if args.check_images and int8 is None:
        raise FoundError("--check-images checks the int8 file: add --int8")
    images = _check_images(args.check_images) if args.check_images else None
    vit = load_backbone(args.model, args.weights, num_heads=args.num_heads, progress=args.progress)
    head = None if args.coarse else load_head(args.model, args.head, in_dim=vit.embed_dim, progress=args.progress)
    name = args.model if args.model == "auto" else get_model_spec(args.model).name
    export_onnx(vit, head, out, model=name, tau=args.tau, opset=args.opset, attention_chunks=args.attention_chunks)
    print(f"wrote {out} ({name}, patch {vit.patch_size}, {'coarse: attention and keys' if head is None else 'head logits'}, "
          f"{out.stat().st_size / 2**20:.1f} MiB)")
    if int8 is not None:
        return _write_int8(out, int8, args.int8_scope, images)
    return 0


def _check_images(folder: str):
    """The photos of ``--check-images`` as uint8 arrays at the working scale ``found segment`` runs them at."""
    from ..engine import DEFAULT_MAX_SIDE
    from ..io.images import IMAGE_SUFFIXES, read_image

    d = Path(folder)
    if not d.is_dir():
        raise FoundError(f"--check-images {folder}: not a folder")
    paths = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FoundError(f"--check-images {folder}: no images")
    return [read_image(p, max_side=DEFAULT_MAX_SIDE, min_side=32).rgb() for p in paths]


def _write_int8(src: Path, dst: Path, scope: str, images) -> int:
    """Quantise ``src`` into ``dst``; with images, remove ``dst`` again unless it passes the IoU rule."""
    from ..export.onnx import quantize_onnx_int8
    from ..export import runtime
    from ..export.runtime import int8_accepted, predictor_agreement
    from ..predictor import load_onnx

    quantize_onnx_int8(src, dst, scope=scope)
    if images is None:
        print(f"wrote {dst} (int8, {scope}; unchecked: add --check-images DIR to check it against fp32)")
        return 0
    agree = predictor_agreement(load_onnx(src, "cpu"), load_onnx(dst, "cpu"), images)
    line = f"mask IoU vs fp32 on {agree['images']} images: mean {agree['mask_iou_mean']:.4f}, min {agree['mask_iou_min']:.4f}"
    if not int8_accepted(agree):
        dst.unlink()
        raise FoundError(f"int8 rejected ({line} < {runtime.MIN_INT8_IOU}); {dst} not written")
    print(f"wrote {dst} (int8, {scope}; {line})")
    return 0

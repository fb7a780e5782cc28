"""Options shared by the sub-commands that run a model (model choice, weights, device, precision)."""
from __future__ import annotations

import argparse

from ..hub import ENV_BACKBONE, ENV_HEAD
from ..registry import DEFAULT_MODEL, MODELS


def add_model_args(parser: argparse.ArgumentParser, head: bool = True) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model ({', '.join(MODELS)}) or 'auto' to read the ViT size off --weights (default {DEFAULT_MODEL})")
    g.add_argument("--weights", metavar="PATH", help=f"local backbone checkpoint (or set {ENV_BACKBONE}); default: download into the torch hub cache")
    if head:
        g.add_argument("--head", metavar="PATH", help=f"local FOUND head (or set {ENV_HEAD}); default: the model's published head")
        g.add_argument("--coarse", action="store_true", help="no trained head: training-free step-1 masks (background discovery)")
    g.add_argument("--num-heads", type=int, help="attention heads of a --model auto backbone (default: embed dim / 64)")
    g.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: CUDA, then MPS, then CPU)")
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="backbone precision (autocast); fp32 reproduces the paper exactly")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def model_from_args(args: argparse.Namespace):
    """Build the :class:`found.Found` predictor described by the parsed options."""
    from ..build import build_found

    return build_found(
        model=args.model,
        weights=args.weights,
        head=getattr(args, "head", None),
        device=args.device,
        coarse=getattr(args, "coarse", False),
        num_heads=args.num_heads,
        progress=args.progress,
        precision=args.precision,
    )

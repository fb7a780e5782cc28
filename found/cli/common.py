"""Options shared by the sub-commands that run a model (model choice, weights, device, precision),
the flags → :class:`~found.options.RunOptions`, and the one table that words the library's field
names as flags (:data:`FIELD_FLAGS`, :func:`cli_message`)."""
from __future__ import annotations

import argparse
import re
from dataclasses import fields
from typing import Any

from ..errors import OptionsError, one_line
from ..hub.weights import ENV_BACKBONE, ENV_HEAD
from ..hub.registry import DEFAULT_MODEL, MODELS
from ..options import RunOptions

#: The library's field and parameter names → the flags that set them: how the CLI words the library's
#: errors (an OptionsError names its ``field``; other messages write a parameter as ``name=VALUE``).
FIELD_FLAGS: dict[str, str] = {
    # found.options.RunOptions
    "coco": "--coco",
    "mode": "--mode", "refine": "--refine", "batch_size": "--batch-size", "max_side": "--max-side",
    "edges": "--edges", "workers": "--workers", "max_instances": "--max-instances", "min_area": "--min-area",
    "min_score": "--min-score", "every": "--every", "smooth": "--smooth", "debug": "--debug",
    # the model: found.build_found, found.load_onnx
    "model": "--model", "weights": "--weights", "head": "--head", "coarse": "--coarse", "num_heads": "--num-heads",
    "device": "--device", "precision": "--precision", "runtime": "--runtime", "onnx": "--onnx",
    # videos (found.video), Ray (found.ray.segment_with_ray), the server (found.serve.Settings)
    "alpha_codec": "--alpha-codec", "frames": "--frames",
    "cpus_per_worker": "--cpus-per-worker", "gpus_per_worker": "--gpus-per-worker",
    "max_batch": "--max-batch", "max_wait_ms": "--max-wait-ms", "queue_size": "--queue-size", "timeout_s": "--timeout",
    "max_upload_bytes": "--max-upload-mb", "max_pixels": "--max-pixels", "api_key": "--api-key",
}
#: ``name=VALUE`` in a library message (not inside a path): worded ``--name VALUE`` (``--name`` for True).
_PARAMETER = re.compile(r"(?<![\w./\\-])(" + "|".join(sorted(FIELD_FLAGS, key=len, reverse=True))
                        + r")=('[^']*'|\"[^\"]*\"|[^\s,;)]+)")


def cli_message(e: BaseException) -> str:
    """An error's one-line message with the library's field names worded as the flags that set them."""
    text = one_line(e)
    if isinstance(e, OptionsError) and e.field in FIELD_FLAGS:
        text = one_line(f"{FIELD_FLAGS[e.field]} {e.detail}")

    def flag(m: re.Match) -> str:
        """One ``name=VALUE`` match worded as its flag: ``--name VALUE``, or ``--name`` alone for True."""
        value = m.group(2).strip("'\"")
        return FIELD_FLAGS[m.group(1)] + ("" if value == "True" else f" {value}")

    return _PARAMETER.sub(flag, text)


def add_model_args(parser: argparse.ArgumentParser, head: bool = True, runtime: bool = True, precision: str = "auto") -> None:
    """The model options; ``precision`` is the command's default (``found evaluate``: fp32, the paper's protocol)."""
    g = parser.add_argument_group("model")
    if head and runtime:
        g.add_argument("--runtime", choices=["torch", "onnx"], help="run the model in PyTorch (default) or ONNX Runtime (needs --onnx FILE)")
        g.add_argument("--onnx", metavar="FILE", help="ONNX file from `found export onnx` (implies --runtime onnx)")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model ({', '.join(MODELS)}) or 'auto' to read the ViT size off --weights (default {DEFAULT_MODEL})")
    g.add_argument("--weights", metavar="PATH", help=f"local backbone checkpoint (or set {ENV_BACKBONE}); default: download into the torch hub cache")
    if head:
        g.add_argument("--head", metavar="PATH", help=f"local FOUND head (or set {ENV_HEAD}); default: the model's published head")
        g.add_argument("--coarse", action="store_true", help="no trained head: training-free step-1 masks (background discovery)")
    g.add_argument("--num-heads", type=int, help="attention heads of a --model auto backbone (default: embed dim / 64)")
    g.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: CUDA, then MPS, then CPU)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"], default=precision,
                   help=f"backbone precision (default {precision}): auto = bf16 on a CPU with bfloat16 units (masks within IoU 0.99 "
                        "of fp32), fp32 elsewhere; fp32 = the paper's numbers; bf16/fp16 (GPUs: autocast); int8 = quantised MLPs (CPU only)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def check_model_args(args: argparse.Namespace) -> None:
    """Reject an unknown model name or an unusable device as usage errors (before any loading)."""
    import torch

    from ..errors import FoundError
    from ..hub.registry import get_model_spec

    if args.model != "auto":
        try:
            get_model_spec(args.model)
        except KeyError as e:
            raise FoundError(f"{e.args[0]} (or 'auto' with --weights)") from None
    if getattr(args, "num_heads", None) is not None and args.num_heads < 1:
        raise FoundError("--num-heads must be at least 1")
    if args.device:
        try:
            dev = torch.device(args.device)
        except (RuntimeError, ValueError):
            raise FoundError(f"--device {args.device!r} is not a device (cpu, cuda, cuda:1, mps)") from None
        if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
            raise FoundError(f"--device {args.device}: CUDA device not available on this machine")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise FoundError(f"--device {args.device}: Apple MPS not available on this machine")
        if dev.type not in ("cpu", "cuda", "mps"):
            raise FoundError(f"--device {args.device}: unsupported device type (use cpu, cuda or mps)")
    if getattr(args, "precision", None) == "int8":
        from ..runtime.device import PrecisionError, check_precision

        try:
            check_precision(args.precision, args.device)
        except PrecisionError:  # the library names the field, the CLI the flags
            raise FoundError("--precision int8 runs on the CPU only: add --device cpu, or use bf16/fp16 on a GPU") from None


def model_from_args(args: argparse.Namespace):
    """Build the :class:`found.Found` predictor described by the parsed options."""
    from ..hub.build import build_found

    check_model_args(args)
    if getattr(args, "onnx", None) or getattr(args, "runtime", None) == "onnx":
        return onnx_model_from_args(args)
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


def onnx_model_from_args(args: argparse.Namespace):
    """``found.load_onnx(FILE)`` of ``--onnx FILE``; the model options given
    (a non-default --model, --head, --coarse) are checked against the file, not loaded."""
    from ..errors import FoundError
    from ..export.runtime import OnnxFound, head_file_sha256
    from ..hub.registry import get_model_spec

    if getattr(args, "runtime", None) == "torch":
        raise FoundError("--onnx FILE runs ONNX Runtime: drop --runtime torch (or --onnx)")
    if not args.onnx:
        raise FoundError("--runtime onnx needs --onnx FILE (write one with `found export onnx -o FILE`)")
    for flag, value in (("--weights", args.weights), ("--num-heads", args.num_heads)):
        if value is not None:
            raise FoundError(f"{flag} is not used with --runtime onnx: the backbone is inside {args.onnx}")
    if args.precision not in ("auto", "fp32"):
        raise FoundError("--precision is for the torch runtime; for int8 pass a file from `found export onnx --int8`")
    spec = None if args.model in ("auto", DEFAULT_MODEL) else get_model_spec(args.model)
    head = getattr(args, "head", None)
    return OnnxFound(args.onnx, args.device, coarse=bool(getattr(args, "coarse", False)),
                     expect_patch_size=spec.arch.patch_size if spec else None, expect_model=spec.name if spec else None,
                     expect_head_sha256=head_file_sha256(head) if head else None)


def add_instance_args(parser: argparse.ArgumentParser) -> None:
    """Instance filters (found.model.instances.InstanceFilter): --max-instances, --min-area, --min-score."""
    g = parser.add_argument_group("instances")
    g.add_argument("--max-instances", type=int, metavar="K", help="keep at most the K largest instances per image (K >= 1; default all)")
    g.add_argument("--min-area", type=float, default=0.0, metavar="A",
                   help="drop instances smaller than A pixels (A >= 1) or than fraction A of the image (0 <= A < 1); default 0")
    g.add_argument("--min-score", type=float, default=0.0, metavar="S",
                   help="drop instances whose score (mean object probability of their patches) is below S, in [0, 1]; default 0")


def instance_filter_from_args(args: argparse.Namespace):
    """The InstanceFilter of the parsed options (a bad value: an OptionsError naming the field)."""
    from ..model.instances import InstanceFilter

    return InstanceFilter(max_instances=args.max_instances, min_area=args.min_area, min_score=args.min_score)


def run_options_from_args(args: argparse.Namespace, **overrides: Any) -> RunOptions:
    """The RunOptions of the parsed flags (each field from its flag when the command has it; ``overrides`` win)."""
    values = {f.name: getattr(args, f.name) for f in fields(RunOptions) if hasattr(args, f.name)}
    values["debug"] = bool(getattr(args, "debug", False))
    return RunOptions(**{**values, **overrides})


def check_batch_options(args: argparse.Namespace, **overrides: Any) -> RunOptions:
    """The RunOptions of a batch run (``found segment``, also with --ray), the model options checked too."""
    options = run_options_from_args(args, **overrides)
    check_model_args(args)
    return options

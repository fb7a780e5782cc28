"""``found segment --ray [ADDRESS]``: the options and the report of a run on a Ray cluster.

The work is :func:`found.ray.segment_with_ray`; this module only turns ``found segment``'s
parsed options into its arguments (``--coco`` and the instance filters included) and words the
outcome (exit 0 all ok, 1 some failed).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import FoundError
from ..options import RunOptions
from ..io.sinks import OUTPUT_SUFFIXES


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """The --ray options of ``found segment`` (Ray is imported only when --ray is given)."""
    g = p.add_argument_group("Ray cluster (pip install 'found[ray]')")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray: a cluster ADDRESS (e.g. 'auto' or ray://head:10001), or a local instance "
                        "started for the run when no address is given. --workers is then the number of actors, "
                        "each loading the model once; inputs may also be .txt/.csv/.parquet lists of paths or URIs "
                        "(s3://…), and -o may be a URI")
    g.add_argument("--gpus-per-worker", type=float, default=0, metavar="G", help="GPUs per Ray actor (default 0)")
    g.add_argument("--cpus-per-worker", type=float, default=1, metavar="C", help="CPUs per Ray actor (default 1)")
    g.add_argument("--table", default=None, metavar="NAME",
                   help="Parquet table of the run in the output folder, one row per input (default results.parquet)")


def model_options(args: argparse.Namespace) -> dict:
    """``found.build_found`` keyword arguments from the model options (built on each actor)."""
    return {"model": args.model, "weights": args.weights, "head": getattr(args, "head", None), "device": args.device,
            "coarse": getattr(args, "coarse", False), "num_heads": args.num_heads, "precision": args.precision}


def _check(args: argparse.Namespace) -> tuple[list[str], RunOptions]:
    """Usage errors before anything starts; returns the image outputs chosen and the RunOptions
    (--workers is the number of actors: segment_with_ray checks it; each actor decodes in turn)."""
    from .common import check_batch_options

    options = check_batch_options(args, workers=0)
    if args.onnx or args.runtime == "onnx":
        raise FoundError("--onnx / --runtime onnx is not available with --ray yet: actors build the torch model")
    if args.coco:
        from ..io.coco import require_pycocotools
        from ..ray import is_uri

        if is_uri(args.coco):
            raise FoundError(f"--coco {args.coco}: give a local path (the COCO file is written on the driver)")
        require_pycocotools()
    kinds = [k for k in OUTPUT_SUFFIXES if getattr(args, k) or args.all]
    return kinds or ["mask"], options


def _looks_like_address(s: str) -> bool:
    """``host:port`` (a Ray head), as opposed to a path taken by ``--ray``'s optional value."""
    host, sep, port = s.rpartition(":")
    return bool(sep and host and port.isdigit() and "/" not in host)


def run(args: argparse.Namespace) -> int:
    """``found segment --ray``: the run on a Ray cluster and its report; exit status 1 when an input failed."""
    from ..ray import TABLE_FILE, segment_with_ray

    kinds, options = _check(args)
    if args.ray not in ("local", "auto") and "://" not in args.ray and not _looks_like_address(args.ray):
        args.inputs.insert(0, args.ray)  # `--ray photos/ -o out`: the folder is an input, not an address
        args.ray = "local"
    summary = segment_with_ray(
        args.inputs, args.output, model_options(args), address=None if args.ray == "local" else args.ray,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        kinds=kinds, options=options, recursive=args.recursive, overwrite=args.overwrite, table=args.table or TABLE_FILE,
        coco=args.coco, boxes=bool(args.boxes or args.all))
    err = sys.stderr
    print(f"found segment: {summary.ok} ok, {summary.skipped} skipped (outputs exist), {len(summary.failures)} failed"
          f" ({summary.workers} Ray workers, {summary.seconds:.1f} s)", file=err)
    for path, why in summary.failures:
        print(f"  failed: {path}: {why}", file=err)
    print(f"  table: {summary.table}", file=err)
    if args.coco:
        print(f"  coco: {args.coco}", file=err)
    if getattr(args, "report", None):
        from ..io.files import atomic_write_text

        try:
            atomic_write_text(Path(args.report), json.dumps(summary.to_dict(), indent=1))
        except OSError as e:
            print(f"found segment: cannot write the report {args.report}: {e.strerror or e}", file=err)
    return 1 if summary.failures else 0

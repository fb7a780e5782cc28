"""``found train --data-dir DIR``: self-train a FOUND head with the authors' schedule.

The default is the paper's run: DINO ViT-S/8, DUTS-TR images (``DIR/DUTS-TR-Image`` or
``DIR/DUTS/DUTS-TR-Image``; any folder of images works, masks are never read), AdamW 5e-2,
StepLR(50, 0.95), batch 50, iterations 0…500. The trained head loads with
``found segment --head OUT/head.pt``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_model_args, check_model_args

#: Explicit flags → TrainConfig keys (everything else via --set KEY=VALUE).
_FLAG_KEYS = {
    "max_iter": "max_iter",
    "batch_size": "batch_size",
    "lr": "lr0",
    "seed": "seed",
    "num_workers": "num_workers",
    "epochs": "nb_epochs",
    "checkpoint_every": "checkpoint_every",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``found train``: data, run folder, schedule overrides, monitoring and backbone flags."""
    p = sub.add_parser("train", help="self-train a FOUND head (the authors' schedule; resumable)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, metavar="DIR", help="DUTS-TR root (or its DUTS-TR-Image folder) or any folder of images")
    p.add_argument("-r", "--recursive", action="store_true", help="also take images from sub-folders")
    p.add_argument("-o", "--out", default="found-train", metavar="DIR", help="run folder: head, checkpoints, logs (default ./found-train)")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT", help="continue the run in --out (or from CKPT)")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    c = p.add_argument_group("schedule (defaults: the authors' configs/found_DUTS-TR.yaml)")
    c.add_argument("--config", metavar="FILE", help="JSON/YAML overrides (flat keys or the authors' nested layout)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set stop_bkg_loss=50 (repeatable)")
    c.add_argument("--max-iter", type=int, help="last iteration index (authors: 500, i.e. 501 steps)")
    c.add_argument("--batch-size", type=int, help="images per iteration (authors: 50)")
    c.add_argument("--lr", type=float, help="initial learning rate (authors: 5e-2)")
    c.add_argument("--seed", type=int, help="seed of data order, augmentations and head init (authors: 0)")
    c.add_argument("--epochs", type=int, help="cap on passes over the data (authors: 3)")
    c.add_argument("--num-workers", type=int, help="data-loading processes (default 2)")
    c.add_argument("--checkpoint-every", type=int, help="iterations between resumable checkpoints (default 50)")
    m = p.add_argument_group("monitoring")
    m.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs (needs found[tensorboard])")
    m.add_argument("--eval-data-dir", metavar="DIR", help="saliency set root (e.g. holding ECSSD/) for evaluation every eval_every iterations")
    m.add_argument("--eval-dataset", default="ECSSD", help="saliency set name under --eval-data-dir (default ECSSD)")
    m.add_argument("--eval-limit", type=int, help="evaluate on the first N images only")
    add_model_args(p, head=False)
    for action in p._actions:  # training defaults to autocast on CUDA (fp32 on CPU)
        if action.dest == "precision":
            action.help = "backbone precision (default: bf16 autocast on CUDA — fp16 where unsupported — fp32 elsewhere)"
    p.set_defaults(func=run, precision=None)


def build_config(args: argparse.Namespace):
    """Defaults (or the resumed run's config), then --config FILE, then --set and explicit flags."""
    from ..train.checkpoint import CHECKPOINT_NAME, load_state
    from ..train.config import TrainConfig, load_config_file, parse_overrides

    base = TrainConfig().to_dict()
    if args.resume:
        src = Path(args.out) / CHECKPOINT_NAME if args.resume == "auto" else Path(args.resume)
        base = TrainConfig.from_dict(load_state(src).config).to_dict()
    if args.config:
        base.update(load_config_file(args.config))
    base.update(parse_overrides(args.overrides))
    for flag, key in _FLAG_KEYS.items():
        v = getattr(args, flag, None)
        if v is not None:
            base[key] = v
    return TrainConfig.from_dict(base)


def make_eval_fn(args: argparse.Namespace, backbone, device, precision):
    """Periodic saliency evaluation (the paper's protocol, 'multi' mode, no solver) on a copy of the head."""
    if not args.eval_data_dir:
        return None
    import copy

    from ..evaluate.datasets import saliency_dirs, saliency_samples
    from ..evaluate.saliency import evaluate_saliency
    from ..predictor import Found

    image_dir, mask_dir = saliency_dirs(args.eval_dataset, args.eval_data_dir)
    samples = saliency_samples(image_dir, mask_dir, limit=args.eval_limit)  # checked before training starts

    def eval_fn(head, n_iter: int) -> dict:
        """Saliency scores of a copy of ``head`` (the training head stays trainable) at iteration ``n_iter``."""
        model = Found(backbone, copy.deepcopy(head), device=device, precision=precision)  # Found freezes its head
        rep = evaluate_saliency(model, samples, dataset=args.eval_dataset, standard=False, progress=False)
        return {k: v for k, v in rep.authors.items() if isinstance(v, (int, float))}

    return eval_fn


def run(args: argparse.Namespace) -> int:
    """``found train``: build the config, train a head on the frozen backbone; exit 130 if interrupted (resumable)."""
    from ..hub.build import load_backbone
    from ..runtime.device import as_device, training_precision
    from ..train.data import find_images
    from ..train.loop import train

    check_model_args(args)
    cfg = build_config(args)
    files = find_images(args.data_dir, recursive=args.recursive)
    device = as_device(args.device)
    precision = training_precision(args.precision, device)
    backbone = load_backbone(args.model, args.weights, num_heads=args.num_heads, progress=args.progress)
    eval_fn = make_eval_fn(args, backbone, device, precision)
    if args.progress:
        print(f"found train: {len(files)} images, {args.model} backbone on {device} ({precision}), "
              f"iterations 0…{cfg.max_iter}, batch {cfg.batch_size} → {args.out}", file=sys.stderr)
    result = train(
        backbone, files, cfg, args.out, device=device, precision=precision,
        resume=args.resume or False, overwrite=args.overwrite, eval_fn=eval_fn,
        tensorboard=args.tensorboard, progress=args.progress,
        run_info={"model": args.model, "weights": args.weights, "data_dir": str(args.data_dir)},
    )
    if result.interrupted:
        print(f"found train: interrupted after {result.iterations_done} iteration(s); state saved to {result.checkpoint_path}; "
              f"continue with the same command plus --resume", file=sys.stderr)
        return 130
    last = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
    print(f"found train: done ({result.iterations_done} iterations, last loss {last}); "
          f"head: {result.head_path} (use with `found segment --head {result.head_path}`)", file=sys.stderr)
    return 0

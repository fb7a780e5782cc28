"""Time ``found train`` iterations: the batched torch bilateral solver vs a per-image scipy solver.

Both variants run the *same* training loop (:func:`found.train.train`: data loading in worker
processes, frozen backbone, pseudo-labels, losses, AdamW step, logging); only the solver behind
the pseudo-labels differs:

* ``found``  — :func:`found.refine.pseudo_labels`, all images of the batch solved at once, on the
  training device;
* ``scipy``  — the authors' formulation, one image at a time on the CPU (``benchmarks/scipy_bilateral.py``
  for the solve, then hole filling / components / IoU test / downsampling per image).

Iterations before ``stop_bkg_loss`` run the solver twice per image (own prediction + coarse mask),
later ones once, so both regimes are timed and the authors' schedule (iterations 0…500, the first
100 with the coarse loss) is projected as ``100·t_early + 401·t_late``. The default settings are
small so that the whole run takes about two minutes on a 2-core CPU; on CUDA the default batch is
the authors' 50.

    python benchmarks/bench_train.py                      # CPU, batch 4, ViT-S/8 (random weights)
    python benchmarks/bench_train.py --device cuda        # GPU, batch 50, bf16 autocast
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from found.model.backbone import VisionTransformer  # noqa: E402
from found.train import TrainConfig, train  # noqa: E402

AUTHORS_ITERS, AUTHORS_EARLY, AUTHORS_BATCH = 501, 100, 50


# ----------------------------------------------------------------------------- per-image baseline
def scipy_pseudo_labels(images: torch.Tensor, patch_masks: torch.Tensor, patch: int = 8, keep: str = "all"):
    """``found.refine.pseudo_labels`` semantics with the scipy solver, one image at a time on the CPU
    (the authors' way); post-processing and downsampling are found.refine's, so only the solve differs."""
    from scipy_bilateral import solve

    from found.refine import postprocess
    from found.refine.refinement import downsample_binary

    masks = patch_masks.reshape(patch_masks.shape[0], 1, *patch_masks.shape[-2:]).float().cpu()
    imgs = images.detach().float().cpu()
    labels, accepted = [], []
    for img, m in zip(imgs, masks):
        rgb = (img.permute(1, 2, 0) * 255).clamp(0, 255).to(torch.uint8).numpy()  # ToPILImage: ×255, truncated
        target = F.interpolate(m[None], size=img.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        soft, _ = solve(rgb, target.numpy())
        binary = torch.from_numpy(postprocess(soft, keep))
        fg = target > 0.5
        ok = bool((fg & binary).sum() / (fg | binary).sum() > 0.5)
        labels.append(downsample_binary(binary[None], m.shape[-2:])[0] if ok else m[0] > 0.5)
        accepted.append(ok)
    dev = patch_masks.device
    return torch.stack(labels).to(dev), torch.tensor(accepted, device=dev)


# ----------------------------------------------------------------------------- inputs
def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` random crops (random sizes ≥ 224 px) of the repository's test photos."""
    photos = sorted((REPO / "tests" / "data" / "images").glob("*.png"))
    if not photos:
        raise SystemExit("tests/data/images has no photos to crop from")
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        a = arrays[i % len(arrays)]
        H, W = a.shape[:2]
        h, w = int(rng.integers(min(224, H), H + 1)), int(rng.integers(min(224, W), W + 1))
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        p = folder / f"crop_{i:04d}.png"
        Image.fromarray(a[y : y + h, x : x + w]).save(p)
        files.append(p)
    return files


def make_backbone(arch: str, weights: str | None) -> VisionTransformer:
    if weights:
        from found.hub.build import load_backbone

        return load_backbone("auto", weights)
    torch.manual_seed(0)
    dims = {"vits8": (384, 12, 6), "tiny": (96, 3, 6)}[arch]
    return VisionTransformer(patch_size=8, embed_dim=dims[0], depth=dims[1], num_heads=dims[2]).eval()


# ----------------------------------------------------------------------------- timing
class TimedRefiner:
    """Wraps a refiner and records the wall time of each call (CUDA synchronised)."""

    def __init__(self, refine) -> None:
        self.refine, self.calls = refine, []

    def __call__(self, images, masks, **kw):
        sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
        sync()
        t0 = time.perf_counter()
        out = self.refine(images, masks, **kw)
        sync()
        self.calls.append(time.perf_counter() - t0)
        return out


def time_variant(name, refine, backbone, files, args, device, out: Path) -> dict:
    n = args.iters
    if refine is None:
        from found.refine import pseudo_labels as refine
    timed = TimedRefiner(refine)
    cfg = TrainConfig(
        batch_size=args.batch_size, crop_size=args.crop, max_iter=args.warmup + 2 * n - 1, stop_bkg_loss=args.warmup + n,
        nb_epochs=1000, num_workers=args.num_workers, checkpoint_every=0, save_model_freq=0, visualize_every=0, eval_every=0,
    )
    t0 = time.perf_counter()
    train(backbone, files, cfg, out / name, device=device, precision=args.precision, refine=timed, progress=False, overwrite=True)
    wall = time.perf_counter() - t0
    with open(out / name / "log.csv", newline="") as f:
        steps = [float(r["step_s"]) for r in csv.DictReader(f)]
    early, late = steps[args.warmup : args.warmup + n], steps[args.warmup + n :]
    w = 2 * args.warmup  # early iterations call the solver twice, late ones once
    solver_early = [a + b for a, b in zip(timed.calls[w : w + 2 * n : 2], timed.calls[w + 1 : w + 2 * n : 2])]
    solver_late = timed.calls[w + 2 * n :]
    t_early, t_late = statistics.median(early), statistics.median(late)
    projected = AUTHORS_EARLY * t_early + (AUTHORS_ITERS - AUTHORS_EARLY) * t_late
    return {"variant": name, "t_early_s": t_early, "t_late_s": t_late, "projected_501_iters_s": projected,
            "projected_at_batch_50_s": projected * AUTHORS_BATCH / args.batch_size, "wall_s": wall,
            "solver_early_s": statistics.median(solver_early), "solver_late_s": statistics.median(solver_late),
            "early_steps_s": early, "late_steps_s": late}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, help="images per iteration (default: 50 on CUDA, 4 on CPU)")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--iters", type=int, default=3, help="timed iterations per regime (early/late)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--arch", choices=["vits8", "tiny"], default="vits8", help="random-weight backbone (vits8 = the paper's size)")
    p.add_argument("--weights", help="a real backbone checkpoint instead (read with --model auto)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--no-baseline", action="store_true", help="time only found's solver")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    args.batch_size = args.batch_size or (AUTHORS_BATCH if device.type == "cuda" else 4)
    backbone = make_backbone(args.arch, args.weights)
    n_images = args.batch_size * (args.warmup + 2 * args.iters)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = make_images(tmp / "images", n_images)
        variants = [("found", None)] + ([] if args.no_baseline else [("scipy", scipy_pseudo_labels)])
        for name, refine in variants:
            r = time_variant(name, refine, backbone, files, args, device, tmp / "runs")
            results.append(r)
            print(f"{name:6s} early {r['t_early_s']:.3f} s/it (solver {r['solver_early_s']:.3f})  "
                  f"late {r['t_late_s']:.3f} s/it (solver {r['solver_late_s']:.3f})  "
                  f"projected 501 its {r['projected_501_iters_s'] / 60:.1f} min (batch {args.batch_size}), "
                  f"{r['projected_at_batch_50_s'] / 60:.1f} min at batch 50", flush=True)
    info = {"date": time.strftime("%Y-%m-%d"), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "batch_size": args.batch_size, "crop": args.crop,
            "arch": args.arch if not args.weights else "weights", "precision": args.precision, "results": results}
    if len(results) == 2:
        info["speedup_early"] = results[1]["t_early_s"] / results[0]["t_early_s"]
        info["speedup_late"] = results[1]["t_late_s"] / results[0]["t_late_s"]
        info["speedup_projected"] = results[1]["projected_501_iters_s"] / results[0]["projected_501_iters_s"]
        info["solver_speedup_early"] = results[1]["solver_early_s"] / results[0]["solver_early_s"]
        info["solver_speedup_late"] = results[1]["solver_late_s"] / results[0]["solver_late_s"]
        print(f"speed-up (scipy / found): early {info['speedup_early']:.2f}x, late {info['speedup_late']:.2f}x, "
              f"whole schedule {info['speedup_projected']:.2f}x; solver alone early {info['solver_speedup_early']:.2f}x, "
              f"late {info['solver_speedup_late']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

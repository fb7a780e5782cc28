"""Per-image time of the bilateral solver: ``found.refine`` (batched torch) vs a scipy.sparse baseline.

    python benchmarks/bench_bilateral.py            # 224x224 and 320x480, batch 1 and 50
    python benchmarks/bench_bilateral.py --quick    # fewer repetitions (~1 min on 2 cores)
    python benchmarks/bench_bilateral.py --device cuda --dtype float32

Inputs are crops of the public test photos (tests/data/images) with a noisy elliptical mask, so
that the grids look like real ones. Both implementations run in the same process on the same
inputs with the same number of threads (``--threads``, default 1: the CPU is shared, and torch's
thread pool degrades badly when oversubscribed). The baseline (``scipy_bilateral.py``) solves one
image at a time, so its per-image time does not depend on the batch size. Every run also checks
that both give the same soft output (max |Δ| is printed).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (default 1)")
    ap.add_argument("--device", default="cpu", help="device of found.refine (cpu, cuda, …)")
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="solver dtype of found.refine")
    ap.add_argument("--sizes", default="224x224,320x480", help="comma-separated HxW")
    ap.add_argument("--batches", default="1,50", help="comma-separated batch sizes")
    ap.add_argument("--no-baseline", action="store_true", help="skip the scipy baseline")
    return ap.parse_args()


def make_inputs(n: int, hw: tuple[int, int], seed: int):
    """``n`` crops (uint8 [H, W, 3]) of the test photos with noisy elliptical masks (float32 [H, W])."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(REPO / "tests" / "data" / "images" / f"{k}.png").convert("RGB"))
              for k in ("astronaut", "coffee", "retina")]
    h, w = hw
    images, masks = [], []
    for i in range(n):
        src = photos[i % len(photos)]
        if src.shape[0] < h or src.shape[1] < w:
            src = np.asarray(Image.fromarray(src).resize((max(w, src.shape[1]), max(h, src.shape[0]))))
        y0 = rng.integers(0, src.shape[0] - h + 1)
        x0 = rng.integers(0, src.shape[1] - w + 1)
        img = src[y0:y0 + h, x0:x0 + w]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        images.append(np.ascontiguousarray(img))
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.35) * h, rng.uniform(0.15, 0.35) * w
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        m ^= rng.random((h, w)) < 0.03
        masks.append(m.astype(np.float32))
    return images, masks


def timed(fn, reps: int) -> float:
    """Best-of-``reps`` wall time of ``fn()`` in seconds (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    args = parse()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    import numpy as np
    import torch

    import scipy_bilateral
    from found.refine import solve_batch

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    reps_small, reps_big = (2, 1) if args.quick else (5, 3)

    print(f"found.refine on {device} ({args.dtype}) vs scipy baseline; threads={args.threads}; "
          f"torch {torch.__version__}, numpy {np.__version__}")
    print(f"{'size':>9} {'batch':>5} {'found ms/img':>13} {'scipy ms/img':>13} {'speed-up':>9} {'max|Δ|':>9}")
    for hw in sizes:
        n_max = max(batches)
        images, masks = make_inputs(n_max, hw, seed=hw[0] * 1000 + hw[1])
        base_ms = None
        if not args.no_baseline:
            k = min(n_max, 10 if args.quick else 20)
            base_ref = [scipy_bilateral.solve(images[i], masks[i])[0] for i in range(k)]
            t = timed(lambda: [scipy_bilateral.solve(images[i], masks[i]) for i in range(k)], reps_big)
            base_ms = t / k * 1e3
        for bsz in batches:
            ims = [torch.from_numpy(x).to(device) for x in images[:bsz]]
            mks = [torch.from_numpy(x).to(device) for x in masks[:bsz]]

            def run():
                out = solve_batch(ims, mks, dtype=dtype)
                sync()
                return out

            if bsz == 1:  # several single-image calls on different images
                k = min(n_max, 10)
                single = [([torch.from_numpy(images[i]).to(device)], [torch.from_numpy(masks[i]).to(device)]) for i in range(k)]

                def run():  # noqa: F811
                    for im, mk in single:
                        solve_batch(im, mk, dtype=dtype)
                    sync()

                ms = timed(run, reps_small) / k * 1e3
            else:
                ms = timed(run, reps_big) / bsz * 1e3
            err = float("nan")
            if base_ms is not None:
                out = solve_batch(ims[:1], mks[:1], dtype=dtype).soft[0].double().cpu().numpy()
                err = float(np.abs(out - base_ref[0]).max())
            ratio = f"{base_ms / ms:8.1f}x" if base_ms else "      n/a"
            base = f"{base_ms:13.2f}" if base_ms else f"{'—':>13}"
            print(f"{hw[0]:>4}x{hw[1]:<4} {bsz:>5} {ms:13.2f} {base} {ratio} {err:9.1e}", flush=True)


if __name__ == "__main__":
    main()

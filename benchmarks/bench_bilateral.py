"""Per-image time of the bilateral solver: ``found.refine`` (batched torch) vs a scipy.sparse baseline.

    python benchmarks/bench_bilateral.py            # 224x224 and 320x480, batch 1 and 50
    python benchmarks/bench_bilateral.py --quick    # fewer repetitions (~1 min on 2 cores)
    python benchmarks/bench_bilateral.py --device cuda --dtype float32

Inputs are crops of the public test photos (tests/data/images) with a noisy elliptical mask, so
that the grids look like real ones. Both implementations run in the same process on the same
inputs with the same number of threads (``--threads``, default 1: the CPU is shared, and torch's
thread pool degrades badly when oversubscribed; with more, ``found.refine`` solves independent
chunks of a batch in parallel, while the scipy baseline's sparse kernels stay single-threaded —
time such runs with ``--clock wall``), interleaved repetition by repetition so that both
see the same machine load; the best repetition of each is reported. The baseline
(``scipy_bilateral.py``) solves one image at a time, so its per-image time does not depend on the
batch size. Every run also checks that both give the same soft output (max |Δ| is printed).
"table" says whether the cached colour table was used: the library builds it once calls with the
same sigmas have solved ``found.refine.solver.LUT_MIN_PIXELS`` pixels in all (~64 M on CPU);
batch 1 is timed both in a cold process (no table: short jobs) and in a warm one (table built:
long jobs), large batches in a warm one (training's steady state); its one-off cost is printed last.
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
    ap.add_argument("--backend", default="auto", choices=("auto", "torch", "numpy"),
                    help="RefineSettings.backend: auto = numpy on CPU, torch elsewhere")
    ap.add_argument("--sizes", default="224x224,320x480", help="comma-separated HxW")
    ap.add_argument("--batches", default="1,50", help="comma-separated batch sizes")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="wall time, or this process's CPU time (steadier on a shared machine; CPU only)")
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
        images.append(np.array(img, order="C"))  # writable copy
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.35) * h, rng.uniform(0.15, 0.35) * w
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        m ^= rng.random((h, w)) < 0.03
        masks.append(m.astype(np.float32))
    return images, masks


CLOCK = time.perf_counter


def once(fn) -> float:
    """Time of one call of ``fn()`` in seconds, on ``CLOCK``."""
    t = CLOCK()
    fn()
    return CLOCK() - t


def main() -> None:
    args = parse()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    import numpy as np
    import torch

    import scipy_bilateral
    from found.refine import RefineSettings, clear_caches, colour, grid, solve_batch, solver

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    settings = RefineSettings(dtype=dtype, backend=args.backend)  # FOUND's parameters
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    reps = 2 if args.quick else 5
    n_base = 5 if args.quick else 10

    print(f"found.refine on {device} ({args.dtype}, backend {args.backend}) vs scipy baseline; "
          f"threads={args.threads}; clock={args.clock}; "
          f"torch {torch.__version__}, numpy {np.__version__}; best of {reps}, interleaved")
    print(f"{'size':>9} {'batch':>5} {'found ms/img':>13} {'scipy ms/img':>13} {'speed-up':>9} {'max|Δ|':>9} {'table':>5}")
    lut_min, lut_min_gpu = solver.LUT_MIN_PIXELS, solver.LUT_MIN_PIXELS_GPU
    for hw in sizes:
        images, masks = make_inputs(max(max(batches), n_base), hw, seed=hw[0] * 1000 + hw[1])
        base_ref = None if args.no_baseline else scipy_bilateral.solve(images[0], masks[0])[0]

        def baseline():
            for i in range(n_base):
                scipy_bilateral.solve(images[i], masks[i])

        rows = [(b, "cold" if b == 1 else "warm") for b in batches]
        if 1 in batches:
            rows.insert(rows.index((1, "cold")) + 1, (1, "warm"))
        for bsz, mode in rows:
            # batch 1 "cold": a fresh process (no colour table; its automatic build is held off so that
            # it cannot land in a timed call); "warm" (batch 1 and large batches): a process that has
            # built the table (as the library does after LUT_MIN_PIXELS pixels of earlier calls)
            clear_caches()
            solver.LUT_MIN_PIXELS = float("inf") if mode == "cold" else lut_min
            solver.LUT_MIN_PIXELS_GPU = float("inf") if mode == "cold" else lut_min_gpu
            if mode == "warm":
                lay = grid.key_layout([hw], settings)
                radix = (lay.weights[3] // lay.weights[2], lay.weights[4] // lay.weights[2])
                colour.colour_table(settings, radix, device, build=True)
            if bsz == 1:  # single-image calls on n_base different images
                calls = [([torch.from_numpy(images[i]).to(device)], [torch.from_numpy(masks[i]).to(device)])
                         for i in range(n_base)]
                n_img = n_base
            else:
                calls = [([torch.from_numpy(x).to(device) for x in images[:bsz]],
                          [torch.from_numpy(x).to(device) for x in masks[:bsz]])]
                n_img = bsz

            def ours():
                for ims, mks in calls:
                    solve_batch(ims, mks, settings=settings)
                sync()

            ours()  # warm-up (and colour-table build for large batches)
            t_ours, t_base = [], []
            for _ in range(reps):  # interleaved, so that both see the same machine load
                t_ours.append(once(ours) / n_img * 1e3)
                if not args.no_baseline:
                    t_base.append(once(baseline) / n_base * 1e3)
            ms = min(t_ours)
            base_ms = min(t_base) if t_base else None
            err = float("nan")
            if base_ref is not None:
                out = solve_batch(calls[0][0][:1], calls[0][1][:1], settings=settings).soft[0].double().cpu().numpy()
                err = float(np.abs(out - base_ref).max())
            ratio = f"{base_ms / ms:8.1f}x" if base_ms else "      n/a"
            base = f"{base_ms:13.2f}" if base_ms else f"{'—':>13}"
            lut = "yes" if colour._LUT_CACHE else "no"
            print(f"{hw[0]:>4}x{hw[1]:<4} {bsz:>5} {ms:13.2f} {base} {ratio} {err:9.1e} {lut:>5}", flush=True)
    solver.LUT_MIN_PIXELS, solver.LUT_MIN_PIXELS_GPU = lut_min, lut_min_gpu
    clear_caches()
    lay = grid.key_layout([(8, 8)], settings)
    radix = (lay.weights[3] // lay.weights[2], lay.weights[4] // lay.weights[2])
    t = CLOCK()
    colour.colour_table(settings, radix, device, build=True)
    sync()
    print(f"one-off colour-table build (sigma_luma 16, sigma_chroma 8): {(CLOCK() - t) * 1e3:.0f} ms")
    clear_caches()


if __name__ == "__main__":
    main()

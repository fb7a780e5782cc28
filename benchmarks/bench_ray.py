#!/usr/bin/env python3
"""Ray path vs the single-process engine: images/s on the same images, in one run.

Generates a folder of noise JPEGs, saves a random ViT-S/8 + head (DINO ViT-S/8's compute; the masks
mean nothing, the timings do), then, in this order:

1. **single process** — ``found segment`` in-process (the engine with its decoding threads and
   background writer; torch uses every CPU);
2. **Ray** — :func:`found.distributed.segment_with_ray` on a local Ray instance with ``--cpus``
   CPUs, ``--workers`` actors of one CPU each (one torch thread each);
3. the single process again (its mean is the baseline: the machine's load may drift).

Both write masks into their own folder; the run compares them (byte-identical files, differing
pixels: with a different torch thread count per process, float sums differ by ~1e-7, and a random
network's soft mask sits within ~1e-6 of the 0.5 threshold, so a few pixels may flip). Reported for Ray:
end to end with the instance start (a laptop run), without it (a cluster that is already up), and
steady state (after the first rows came back), plus the overhead terms: Ray start, pool start to
the first rows (actor processes, imports, one model load per actor, first chunk), and the bytes
sent back per image (rows only: images are read by the actors, never shipped).

    python benchmarks/bench_ray.py                  # 240 images of 320×240, 2 workers
    python benchmarks/bench_ray.py --images 64      # quick
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_images(folder: Path, n: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(n):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (230, 40, 30)
        Image.fromarray(a).save(folder / f"img{i:05d}.jpg", quality=90)


def save_model(folder: Path) -> dict:
    """A random ViT-S/8 and head saved as files: what each actor loads (as --weights/--head would)."""
    import torch

    from found.cli.bench import random_head, vit_s8

    torch.save(vit_s8().state_dict(), folder / "vit_s8_random.pth")
    random_head().save(folder / "head_random.pt")
    return {"model": "auto", "weights": str(folder / "vit_s8_random.pth"), "head": str(folder / "head_random.pt"),
            "device": "cpu"}


def model_load_seconds(options: dict) -> float:
    from found import build_found

    t = time.perf_counter()
    build_found(**options, progress=False)
    return time.perf_counter() - t


def run_single(images: Path, out: Path, options: dict, batch: int) -> float:
    from found.cli.main import main

    argv = ["segment", str(images), "-o", str(out), "--batch-size", str(batch), "--no-progress",
            "--model", "auto", "--weights", options["weights"], "--head", options["head"], "--device", "cpu"]
    t = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(f"found segment failed ({code})")
    return time.perf_counter() - t


def run_ray(images: Path, out: Path, options: dict, batch: int, workers: int, cpus: int, chunks: int,
            cpus_per_worker: int) -> dict:
    import pyarrow as pa
    import ray

    from found.distributed import segment_with_ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    arrivals: list[tuple[float, int, int]] = []

    def on_rows(rows: list[dict]) -> None:
        arrivals.append((time.perf_counter(), len(rows), pa.Table.from_pylist(rows).nbytes))

    t1 = time.perf_counter()
    try:
        s = segment_with_ray([str(images)], out, options, workers=workers, cpus_per_worker=cpus_per_worker,
                             batch_size=batch, chunks_per_task=chunks,
                             on_rows=on_rows)
    finally:
        t_end = time.perf_counter()
        ray.shutdown()
    n = s.ok + len(s.failures)
    first_t, first_n = arrivals[0][0], arrivals[0][1]
    steady = (n - first_n) / (arrivals[-1][0] - first_t) if len(arrivals) > 1 and arrivals[-1][0] > first_t else None
    return {"n": n, "failed": len(s.failures), "init_s": t_init, "pipeline_s": t_end - t1,
            "first_rows_s": first_t - t1, "steady_img_s": steady, "row_bytes_per_image": sum(a[2] for a in arrivals) / n,
            "workers": s.workers}


def compare_masks(a: Path, b: Path) -> tuple[int, int, int]:
    """(identical files, files, differing pixels) between two folders of masks."""
    fa = sorted(p.name for p in a.glob("*.png"))
    if fa != sorted(p.name for p in b.glob("*.png")):
        raise SystemExit("the two runs wrote different files")
    same = sum((a / f).read_bytes() == (b / f).read_bytes() for f in fa)
    pixels = sum(int((np.asarray(Image.open(a / f)) != np.asarray(Image.open(b / f))).sum()) for f in fa)
    return same, len(fa), pixels


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=240)
    p.add_argument("--size", default="320x240", help="WxH of the generated images")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="Ray actors")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (torch threads) per actor")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    p.add_argument("--chunks-per-task", type=int, default=2, help="chunks of --batch-size images per Ray task")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        make_images(tmp / "in", args.images, size)  # type: ignore[arg-type]
        options = save_model(tmp)
        load_s = model_load_seconds(options)
        load_before = os.getloadavg()[0]
        single_a = run_single(tmp / "in", tmp / "single", options, args.batch_size)
        r = run_ray(tmp / "in", tmp / "ray", options, args.batch_size, args.workers, args.cpus, args.chunks_per_task,
                    args.cpus_per_worker)
        single_b = run_single(tmp / "in", tmp / "single2", options, args.batch_size)  # before and after: drift
        single_s = (single_a + single_b) / 2
        load_after = os.getloadavg()[0]
        same, files, pixels = compare_masks(tmp / "single", tmp / "ray")
        n_pixels = args.images * size[0] * size[1]
    n = args.images
    single = n / single_s
    e2e, cluster = n / (r["init_s"] + r["pipeline_s"]), n / r["pipeline_s"]
    res = {"images": n, "size": args.size, "batch_size": args.batch_size, "cpus": os.cpu_count(), "workers": r["workers"],
           "single_img_s": single, "ray_end_to_end_img_s": e2e, "ray_without_start_img_s": cluster,
           "ray_steady_img_s": r["steady_img_s"], "ratio_end_to_end": e2e / single, "ratio_without_start": cluster / single,
           "ratio_steady": (r["steady_img_s"] or 0) / single, "ray_init_s": r["init_s"], "pool_start_to_first_rows_s": r["first_rows_s"],
           "model_load_s": load_s, "row_bytes_per_image": r["row_bytes_per_image"], "identical_files": same, "files": files, "differing_pixels": pixels,
           "failed": r["failed"], "single_runs_s": [single_a, single_b], "loadavg_before_after": [load_before, load_after]}
    print(f"{n} images {args.size}, batch {args.batch_size}, random ViT-S/8 on {os.cpu_count()} CPUs")
    print(f"  single process (found segment)     {single:7.2f} img/s   (mean of {single_a:.1f} s before and "
          f"{single_b:.1f} s after the Ray run)")
    print(f"  Ray, end to end (instance started) {e2e:7.2f} img/s   ×{e2e / single:.2f}")
    print(f"  Ray, instance already up           {cluster:7.2f} img/s   ×{cluster / single:.2f}")
    if r["steady_img_s"]:
        print(f"  Ray, steady state (after 1st rows) {r['steady_img_s']:7.2f} img/s   ×{res['ratio_steady']:.2f}")
    print(f"  overhead: Ray start {r['init_s']:.1f} s; pool start → first rows {r['first_rows_s']:.1f} s "
          f"(actor processes + imports + model load {load_s:.1f} s per actor + first chunk); "
          f"rows back {r['row_bytes_per_image']:.0f} B/image")
    print(f"  masks identical to found segment: {same}/{files} files, {pixels} of {n_pixels} pixels differ "
          f"(torch threads: {torch_threads()} in the single process, {args.cpus_per_worker} per actor); "
          f"load average {load_before:.1f} → {load_after:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0 if not r["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())

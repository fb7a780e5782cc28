#!/usr/bin/env python3
"""Ray path vs the single-process engine: images/s on the same images, in one run.

Generates a folder of noise JPEGs, saves a random ViT-S/8 + head (DINO ViT-S/8's compute; the masks
mean nothing, the timings do), then, in this order:

1. **single process** — ``found segment`` in-process (the engine with its decoding threads and
   background writer; torch uses every CPU);
2. **Ray** — :func:`found.ray.segment_with_ray` on a local Ray instance with ``--cpus``
   CPUs, ``--workers`` actors of one CPU each (one torch thread each);
3. the single process again (its mean is the baseline: the machine's load may drift).

Both write masks into their own folder; the run compares them (byte-identical files, differing
pixels: with a different torch thread count per process, float sums differ by ~1e-7, and a random
network's soft mask sits within ~1e-6 of the 0.5 threshold, so a few pixels may flip).

How each figure is computed (N = ``--images``):

* **single process** — N / the mean wall time of the two ``found segment`` calls (model build,
  decoding, inference, writing: the whole command).
* **Ray, end to end (instance started)** — N / (``ray.init`` + ``segment_with_ray``): a laptop run.
* **Ray, without instance start** — N / ``segment_with_ray`` alone: planning, the actor pool's start
  (processes, imports, one model load per actor), the run, the table; a cluster that is already up.
* **steady state**, Ray and single process on the same footing, from the *workers' own clocks*
  (:func:`steady_rate`). Every chunk the work is done on is a *call*, recorded as (process id,
  ``time.time()`` at start and end, inputs): for Ray, each :meth:`SegmentActor.segment` call of an
  actor (one chunk of ``--batch-size`` inputs read, inferred and written, sequentially; recorded by
  a subclass passed as ``actor_class``, to a JSON-lines file per actor, so the table's schema is
  untouched; the actors run on this machine, so their clocks are the driver's); for the single
  process, each :meth:`Engine.infer` call (one chunk inferred, decoding and writing overlapping it
  in threads). A process is *warm* at the end of its first call (model loaded, first batch done);
  the window opens when every process that did work is warm (the latest of those ends) and closes
  at the last call's end; the rate is the inputs of the calls that *started* inside the window over
  its length. Those calls ran entirely inside the window, so the rate never exceeds what was
  actually processed in that wall time (work that straddles the window's start is left out: it
  errs low, never high). Rows arriving at the driver are *not* used: Ray Data hands them over in
  bursts, so their arrival times measure buffering, not compute. With too few chunks (no call
  starts after all are warm) the rate is n/a: use more ``--images`` or a smaller ``--batch-size``.
* **ratios** — each Ray rate over the single process's rate of the same kind (steady over steady;
  over the end-to-end rate only when the single process has no steady window, which is said).
* **overhead** — Ray start (``ray.init``); pool start → first rows at the driver; pool start → all
  actors warm (from the actors' clocks); the model load time (one ``build_found`` here); the bytes
  sent back per image (rows only: images are read by the actors, never shipped).

``--json`` also keeps the windows and the raw call records (``ray_calls``, ``single_calls``), and a
warning is printed when the two single-process runs differ by more than 1.5× (a load change).

    python benchmarks/bench_ray.py                  # 240 images of 320×240, 2 workers
    python benchmarks/bench_ray.py --images 64      # quick
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
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

    from found.bench import random_head, vit_s8
    from found.hub.build import save_head

    torch.save(vit_s8().state_dict(), folder / "vit_s8_random.pth")
    save_head(random_head(), folder / "head_random.pt")
    return {"model": "auto", "weights": str(folder / "vit_s8_random.pth"), "head": str(folder / "head_random.pt"),
            "device": "cpu"}


def model_load_seconds(options: dict) -> float:
    from found import build_found

    t = time.perf_counter()
    build_found(**options, progress=False)
    return time.perf_counter() - t


def steady_rate(calls: list[dict]) -> dict | None:
    """The steady-state rate of a pool of worker processes from their own call records.

    ``calls``: one dict per call, ``{"pid", "start", "end", "n"}`` (process id, ``time.time()`` at
    the call's start and end, inputs it processed). A process is warm at the end of its first call
    (earliest start); the window opens at ``warm_at`` = the latest of those (every process that did
    work is warm) and closes at ``end`` = the last call's end. ``img_s`` = the inputs of the calls
    that started at or after ``warm_at``, over ``end - warm_at``. Each counted call lies wholly
    inside the window, so ``img_s`` is at most what the processes really did in that wall time.
    ``None`` when no call starts in the window (too few chunks) or the window is empty.
    """
    if not calls:
        return None
    first: dict[object, dict] = {}
    for c in calls:
        if c["pid"] not in first or c["start"] < first[c["pid"]]["start"]:
            first[c["pid"]] = c
    warm_at = max(c["end"] for c in first.values())
    end = max(c["end"] for c in calls)
    counted = [c for c in calls if c["start"] >= warm_at]
    if not counted or end <= warm_at:
        return None
    images = sum(c["n"] for c in counted)
    return {"img_s": images / (end - warm_at), "images": images, "calls": len(counted), "window_s": end - warm_at,
            "warm_at": warm_at, "end": end, "processes": len(first), "all_calls": len(calls),
            "all_images": sum(c["n"] for c in calls)}


def run_single(images: Path, out: Path, options: dict, batch: int) -> tuple[float, list[dict]]:
    """Wall time of ``found segment`` in this process, and its :meth:`Engine.infer` calls (for :func:`steady_rate`)."""
    from found.cli.main import main
    from found.engine import Engine

    calls: list[dict] = []
    infer = Engine.infer

    def timed_infer(self, imgs):
        start = time.time()
        preds = infer(self, imgs)
        calls.append({"pid": os.getpid(), "start": start, "end": time.time(), "n": len(imgs)})
        return preds

    argv = ["segment", str(images), "-o", str(out), "--batch-size", str(batch), "--no-progress",
            "--model", "auto", "--weights", options["weights"], "--head", options["head"], "--device", "cpu"]
    Engine.infer = timed_infer  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        code = main(argv)
        seconds = time.perf_counter() - t
    finally:
        Engine.infer = infer  # type: ignore[method-assign]
    if code != 0:
        raise SystemExit(f"found segment failed ({code})")
    return seconds, calls


def timed_actor_class(calls_dir: str) -> type:
    """A :class:`SegmentActor` that appends one JSON line per :meth:`segment` call (one chunk) to
    ``calls_dir/calls-<pid>.jsonl``: ``{"pid", "start", "end", "n"}`` with ``time.time()`` clocks.
    Defined in a function so that Ray pickles it by value (the actors need not import this file)."""
    from found.ray import SegmentActor

    class TimedSegmentActor(SegmentActor):
        log_dir = calls_dir

        def segment(self, items):
            start = time.time()
            rows = SegmentActor.segment(self, items)
            record = {"pid": os.getpid(), "start": start, "end": time.time(), "n": len(items)}
            with open(os.path.join(self.log_dir, f"calls-{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
            return rows

    return TimedSegmentActor


def read_calls(calls_dir: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(calls_dir.glob("calls-*.jsonl"))
            for line in f.read_text().splitlines() if line.strip()]


def run_ray(images: Path, out: Path, options: dict, batch: int, workers: int, cpus: int, chunks: int,
            cpus_per_worker: int) -> dict:
    import pyarrow as pa
    import ray

    from found.ray import segment_with_ray

    calls_dir = Path(tempfile.mkdtemp(prefix="bench-ray-calls-"))
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    arrivals: list[tuple[float, int, int]] = []

    def on_rows(rows: list[dict]) -> None:
        arrivals.append((time.perf_counter(), len(rows), pa.Table.from_pylist(rows).nbytes))

    t1, t1_wall = time.perf_counter(), time.time()
    try:
        s = segment_with_ray([str(images)], out, options, workers=workers, cpus_per_worker=cpus_per_worker,
                             batch_size=batch, chunks_per_task=chunks, actor_class=timed_actor_class(str(calls_dir)),
                             on_rows=on_rows)
    finally:
        t_end = time.perf_counter()
        ray.shutdown()
    calls = read_calls(calls_dir)
    shutil.rmtree(calls_dir, ignore_errors=True)
    n = s.ok + len(s.failures)
    steady = steady_rate(calls)
    return {"n": n, "failed": len(s.failures), "init_s": t_init, "pipeline_s": t_end - t1,
            "first_rows_s": arrivals[0][0] - t1 if arrivals else None,
            "all_warm_s": steady["warm_at"] - t1_wall if steady else None,
            "steady": steady, "steady_img_s": steady["img_s"] if steady else None,
            "row_bytes_per_image": sum(a[2] for a in arrivals) / max(n, 1), "workers": s.workers,
            "actors_with_calls": len({c["pid"] for c in calls}), "calls": calls}


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
        single_a, calls_a = run_single(tmp / "in", tmp / "single", options, args.batch_size)
        r = run_ray(tmp / "in", tmp / "ray", options, args.batch_size, args.workers, args.cpus, args.chunks_per_task,
                    args.cpus_per_worker)
        single_b, calls_b = run_single(tmp / "in", tmp / "single2", options, args.batch_size)  # before and after: drift
        single_s = (single_a + single_b) / 2
        load_after = os.getloadavg()[0]
        same, files, pixels = compare_masks(tmp / "single", tmp / "ray")
        n_pixels = args.images * size[0] * size[1]
    n = args.images
    single = n / single_s
    # the single process's steady state: each run on its own (same pid), pooled as images / seconds
    single_windows = [w for w in (steady_rate(calls_a), steady_rate(calls_b)) if w]
    single_steady = (sum(w["images"] for w in single_windows) / sum(w["window_s"] for w in single_windows)
                     if single_windows else None)
    e2e, cluster = n / (r["init_s"] + r["pipeline_s"]), n / r["pipeline_s"]
    ray_steady = r["steady_img_s"]
    steady_base, steady_base_name = (single_steady, "single-process steady") if single_steady else (single, "single-process end to end")
    ratio_steady = ray_steady / steady_base if ray_steady else None
    res = {"images": n, "size": args.size, "batch_size": args.batch_size, "cpus": os.cpu_count(), "workers": r["workers"],
           "single_img_s": single, "single_steady_img_s": single_steady, "ray_end_to_end_img_s": e2e,
           "ray_without_start_img_s": cluster, "ray_steady_img_s": ray_steady, "ratio_end_to_end": e2e / single,
           "ratio_without_start": cluster / single, "ratio_steady": ratio_steady, "ratio_steady_baseline": steady_base_name,
           "ray_steady_window": r["steady"], "single_steady_windows": single_windows,
           "ray_calls": r["calls"], "single_calls": [calls_a, calls_b],  # the raw records (time.time() clocks)
           "ray_init_s": r["init_s"], "pool_start_to_first_rows_s": r["first_rows_s"],
           "pool_start_to_all_actors_warm_s": r["all_warm_s"], "actors_with_calls": r["actors_with_calls"],
           "model_load_s": load_s, "row_bytes_per_image": r["row_bytes_per_image"], "identical_files": same, "files": files,
           "differing_pixels": pixels, "failed": r["failed"], "single_runs_s": [single_a, single_b],
           "loadavg_before_after": [load_before, load_after]}
    print(f"{n} images {args.size}, batch {args.batch_size}, random ViT-S/8 on {os.cpu_count()} CPUs")
    print(f"  single process (found segment), end to end  {single:7.2f} img/s   (mean of {single_a:.1f} s before and "
          f"{single_b:.1f} s after the Ray run)")
    if single_steady:
        windows = " and ".join(f"{w['images']} img in {w['window_s']:.1f} s" for w in single_windows)
        print(f"  single process, steady state (infer calls)  {single_steady:7.2f} img/s   ({windows} after the first batch)")
    else:
        print("  single process, steady state                   n/a   (one chunk only: no call after the first)")
    print(f"  Ray, end to end (instance started)          {e2e:7.2f} img/s   ×{e2e / single:.2f} vs end to end")
    print(f"  Ray, without instance start (pool + run)    {cluster:7.2f} img/s   ×{cluster / single:.2f} vs end to end")
    if ray_steady:
        w = r["steady"]
        print(f"  Ray, steady state (actors' clocks)          {ray_steady:7.2f} img/s   ×{ratio_steady:.2f} vs {steady_base_name}  "
              f"({w['images']} of {w['all_images']} img in {w['calls']} chunks, {w['window_s']:.1f} s after all "
              f"{w['processes']} actors were warm)")
    else:
        print(f"  Ray, steady state (actors' clocks)             n/a   (no chunk started after all "
              f"{r['actors_with_calls']} actors were warm: use more --images or a smaller --batch-size)")
    first_rows = f"{r['first_rows_s']:.1f} s" if r["first_rows_s"] is not None else "n/a"
    all_warm = f"{r['all_warm_s']:.1f} s" if r["all_warm_s"] is not None else "n/a"
    print(f"  overhead: Ray start {r['init_s']:.1f} s; pool start → first rows at the driver {first_rows}, "
          f"→ all actors warm {all_warm} (actor processes + imports + model load {load_s:.1f} s per actor + first chunk); "
          f"rows back {r['row_bytes_per_image']:.0f} B/image")
    print(f"  masks identical to found segment: {same}/{files} files, {pixels} of {n_pixels} pixels differ "
          f"(torch threads: {torch_threads()} in the single process, {args.cpus_per_worker} per actor); "
          f"load average {load_before:.1f} → {load_after:.1f}")
    if max(single_a, single_b) > 1.5 * min(single_a, single_b):
        print(f"  warning: the two single-process runs took {single_a:.1f} s and {single_b:.1f} s: the machine's load "
              f"changed during the benchmark (another process?), so the ratios are unreliable; the raw call records "
              f"are in --json")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0 if not r["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Video throughput: a video's frames through :func:`found.video.segment_video` vs the same frames as
image files through the engine (``Engine.run`` on PNG paths), in one run.

Generates an H.264 MP4 (a square moving over a textured background), decodes it once and saves
every frame as a PNG (lossless: both paths see the same pixels). Then, interleaved repetition by
repetition so both see the same machine load, times

* ``infer``: frames → results (video: decode + engine; images: PNG decode + engine);
* ``masks``: the same plus writing the masks (video: one lossless mask video via
  ``VideoOutputs``; images: one mask PNG per frame, written behind the model as ``found segment``).

Prints frames/s of each (best repetition), the ratio video / images (target ≥ 0.9) and whether
both gave the same masks. The model has random weights (speed only): ``--arch small`` is ViT-S/8
(the paper's backbone), ``--arch tiny`` the test suite's small ViT.

    python benchmarks/bench_video.py --quick
    python benchmarks/bench_video.py --frames 240 --size 640x360 --arch small --device cuda
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=96, help="frames in the generated video")
    p.add_argument("--size", default="320x240", help="WxH of the video")
    p.add_argument("--arch", choices=("tiny", "small"), default="tiny", help="random ViT: tiny (tests) or small (ViT-S/8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=None, help="engine decoding threads (default as found segment)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="48 frames, 2 repetitions")
    return p.parse_args(argv)


def make_video(path: Path, n: int, w: int, h: int) -> None:
    import av

    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)[:h, :w]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"crf": "18", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = bg.copy()
            x, y = (i * 5) % (w - w // 3), (i * 3) % (h - h // 3)
            img[y: y + h // 3, x: x + w // 3] = (220, 40, 30)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def build_model(arch: str, device: str):
    import torch

    from found.model.backbone import VisionTransformer
    from found.model.head import FoundHead
    from found.predictor import Found

    torch.manual_seed(0)
    cfg = dict(patch_size=8, embed_dim=64, depth=2, num_heads=2) if arch == "tiny" else \
        dict(patch_size=8, embed_dim=384, depth=12, num_heads=6)
    return Found(VisionTransformer(**cfg), FoundHead(cfg["embed_dim"]), device=device)


def run_video(engine, video: Path, out: Path | None) -> list[np.ndarray]:
    from found.video import VideoOutputs, VideoReader, segment_video

    if out is None:
        return [fr.prediction.mask for fr in segment_video(video, engine)]
    with VideoReader(video) as reader:
        VideoOutputs(out, ["mask"]).write(reader.path, reader.info, segment_video(reader, engine), "clip")
    return []


def run_images(engine, paths: list[Path], out: Path | None) -> list[np.ndarray]:
    from found.io.sinks import ImageOutputs, write_results

    if out is None:
        return [r.prediction.mask for r in engine.run(paths)]
    images = ImageOutputs(out, ["mask"])
    for _ in write_results(engine.run(paths), paths, lambda r, p: images.write(r, p.stem),
                           threaded=engine.workers > 0, max_pending=2 * engine.batch_size):
        pass
    return []


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.quick:
        args.frames, args.repeats = 48, 2
    import torch
    from PIL import Image

    from found.engine import Engine
    from found.video import iter_video_frames

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="found-bench-video-"))
    video = tmp / "clip.mp4"
    make_video(video, args.frames, w, h)
    frames_dir = tmp / "frames"
    frames_dir.mkdir()
    paths = []
    for fr in iter_video_frames(video):
        paths.append(frames_dir / f"{fr.index:06d}.png")
        Image.fromarray(fr.rgb()).save(paths[-1], compress_level=1)
    model = build_model(args.arch, args.device)
    engine = Engine(model, batch_size=args.batch_size, workers=args.workers)
    next(engine.run([paths[0]]))  # warm-up (allocations, kernels)
    same = all(np.array_equal(a, b) for a, b in zip(run_video(engine, video, None), run_images(engine, paths, None)))
    best: dict[tuple[str, str], float] = {}
    for rep in range(args.repeats):
        for task in ("infer", "masks"):
            for kind, fn, src in (("video", run_video, video), ("images", run_images, paths)):
                out = None
                if task == "masks":
                    out = tmp / f"out-{kind}-{rep}"
                    out.mkdir()
                t = time.perf_counter()
                fn(engine, src, out)
                dt = time.perf_counter() - t
                best[(task, kind)] = min(best.get((task, kind), dt), dt)
    n = len(paths)
    print(f"found video benchmark: {n} frames {w}×{h}, ViT {args.arch} (random weights), device {args.device}, "
          f"batch {args.batch_size}, workers {engine.workers}, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats}")
    print(f"{'task':<8}{'video frames/s':>16}{'image files/s':>16}{'ratio':>8}")
    for task in ("infer", "masks"):
        fv, fi = n / best[(task, "video")], n / best[(task, "images")]
        print(f"{task:<8}{fv:>16.1f}{fi:>16.1f}{fv / fi:>8.2f}")
    print(f"same masks from the video and from the PNG frames: {'yes' if same else 'NO'}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

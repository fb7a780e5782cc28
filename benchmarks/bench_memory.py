#!/usr/bin/env python3
"""Peak memory of ``found segment`` on one large photo, every output written (``--all``).

Generates a 4000×3000 JPEG (quality 90) unless ``--photo`` is given, saves a random ViT-S/8 + head
(DINO ViT-S/8's size, hence its memory; the masks mean nothing) unless ``--weights/--head`` are
given, runs ``python -m found segment PHOTO -o OUT --all`` in a child process (default settings
otherwise, plus ``--found-args``) and reports the child's peak RSS (``ru_maxrss`` of the children of
a wrapper process, so nothing else counts) and its wall time. Target (issue #24): below 1.5 GB.

    python benchmarks/bench_memory.py                      # 4000×3000, default settings
    python benchmarks/bench_memory.py --found-args --edges bilinear
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_BYTES = 1.5e9
#: Runs found in a child of this wrapper and prints the child's peak RSS (KiB on Linux).
WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run([sys.executable, "-m", "found", *sys.argv[1:]], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "stderr": p.stderr[-2000:], "seconds": time.perf_counter() - t,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def make_photo(path: Path, size: tuple[int, int]) -> None:
    """A photo-like JPEG: smooth background, a bright ellipse, noise (encodes like a photo)."""
    import numpy as np
    from PIL import Image

    w, h = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = ((yy - 0.5 * h) / (0.3 * h)) ** 2 + ((xx - 0.45 * w) / (0.25 * w)) ** 2 < 1
    img = 60 + 40 * yy[..., None] / h + inside[..., None] * np.array([150, 60, 20], np.float32)
    img = img + rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def save_random_model(folder: Path) -> list[str]:
    import torch

    from found.hub.build import save_head
    from found.model.backbone import VisionTransformer
    from found.model.head import FoundHead

    torch.manual_seed(0)
    torch.save(VisionTransformer(patch_size=8, embed_dim=384, depth=12, num_heads=6).state_dict(), folder / "vit.pth")
    save_head(FoundHead(384), folder / "head.pt")
    return ["--model", "auto", "--weights", str(folder / "vit.pth"), "--head", str(folder / "head.pt")]


def machine() -> str:
    cpu, flags = platform.processor(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        have = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
        flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have]
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({', '.join(flags)}), {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", help="a photo to use (default: a generated 4000×3000 JPEG)")
    p.add_argument("--size", default="4000x3000", help="WxH of the generated photo")
    p.add_argument("--weights", help="a backbone checkpoint (default: a random ViT-S/8 of the real size)")
    p.add_argument("--head", help="a FOUND head (with --weights)")
    p.add_argument("--json", help="also write the result as JSON")
    p.add_argument("--found-args", nargs=argparse.REMAINDER, default=[], help="more found segment options (last)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photo = Path(args.photo) if args.photo else root / "photo.jpg"
        if not args.photo:
            w, _, h = args.size.partition("x")
            make_photo(photo, (int(w), int(h)))
        model = (["--model", "auto", "--weights", args.weights] + (["--head", args.head] if args.head else [])
                 if args.weights else save_random_model(root))
        cmd = ["segment", str(photo), "-o", str(root / "out"), "--all", *model, *args.found_args]
        proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if res["rc"] != 0:
            print(f"found segment failed: {res['stderr']}", file=sys.stderr)
            return 1
        from PIL import Image

        with Image.open(photo) as im:
            size = im.size
        outputs = sorted(q.name for q in (root / "out").iterdir())
    peak = res["maxrss_kib"] * 1024
    result = {"photo": f"{size[0]}x{size[1]}", "peak_rss_bytes": peak, "seconds": res["seconds"], "outputs": outputs,
              "limit_bytes": LIMIT_BYTES, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/bench_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(f"found segment --all on a {size[0]}×{size[1]} JPEG: peak RSS {peak / 1e9:.2f} GB "
          f"({'below' if peak < LIMIT_BYTES else 'ABOVE'} the {LIMIT_BYTES / 1e9:.1f} GB target), {res['seconds']:.1f} s "
          f"with start-up; outputs: {', '.join(outputs)}")
    print(f"machine: {result['machine']}; {result['date']}; weights: {'given' if args.weights else 'random ViT-S/8 (memory and time only)'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if peak < LIMIT_BYTES else 2


if __name__ == "__main__":
    sys.exit(main())

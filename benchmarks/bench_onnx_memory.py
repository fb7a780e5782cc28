"""Peak memory of one large image through the exported ONNX file (1 vs N attention chunks) and through torch.

Exports a seeded random tiny ViT (patch 8, 96-d, 3 blocks, 6 heads: the parity tiny ViT's shape, with the
same operators as ViT-S/8) and a random head twice, with ``--attention-chunks 1`` and with the default
slicing, then runs one ``--size`` image (default 640x640, N = 6,401 tokens) in a fresh process per row:
ONNX Runtime CPU for each file, and torch's CPU path (``Found.patch_logits``) in fp32 and bf16. Reported:
the peak RSS above the RSS just before the call (a warm-up call at 64x64 first; the peak is reset through
/proc/self/clear_refs, then VmHWM after the call minus VmRSS before it), in MiB. Linux only.

    python benchmarks/bench_onnx_memory.py
    python benchmarks/bench_onnx_memory.py --size 480x320 --chunks 4
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

DIMS = dict(patch_size=8, embed_dim=96, depth=3, num_heads=6)


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(kind: str, folder: Path, h: int, w: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if kind.startswith("ort"):
        from found.export.runtime import OnnxFound

        model = OnnxFound(str(folder / f"{kind}.onnx"), device="cpu", threads=threads)
    else:
        from found import Found
        from found.model.backbone import VisionTransformer
        from found.model.head import FoundHead

        torch.manual_seed(0)
        model = Found(VisionTransformer(**DIMS), FoundHead(DIMS["embed_dim"]), device="cpu", precision=kind.split("-")[1])
    model.patch_logits(torch.randn(1, 3, 64, 64))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS")
    model.patch_logits(torch.randn(1, 3, h, w))
    print(json.dumps({"row": kind, "extra_mib": round(_status("VmHWM") - before, 1)}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x640", help="HxW of the image (default 640x640)")
    p.add_argument("--chunks", type=int, default=None, help="attention chunks of the sliced file (default: the export's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    if args.child:
        child(args.child[0], Path(args.child[1]), h, w, args.threads)
        return 0
    import torch

    from found.model.backbone import VisionTransformer
    from found.export.onnx import ATTENTION_CHUNKS, export_onnx
    from found.model.head import FoundHead

    chunks = args.chunks or ATTENTION_CHUNKS
    if chunks < 2:
        p.error("--chunks must be at least 2 (the file with 1 chunk is always measured)")
    print(f"one {h}x{w} image, random tiny ViT {DIMS}, {args.threads} threads; peak RSS above the loaded model")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        vit, head = VisionTransformer(**DIMS), FoundHead(DIMS["embed_dim"])
        for c in (1, chunks):
            export_onnx(vit, head, Path(tmp) / f"ort-{c}.onnx", attention_chunks=c)
        for kind in ("ort-1", f"ort-{chunks}", "torch-fp32", "torch-bf16"):
            out = subprocess.run([sys.executable, __file__, "--size", args.size, "--threads", str(args.threads),
                                  "--child", kind, tmp], check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            what = {"ort-1": "onnxruntime, 1 attention chunk", f"ort-{chunks}": f"onnxruntime, {chunks} attention chunks",
                    "torch-fp32": "torch fp32 (CPU backbone)", "torch-bf16": "torch bf16 (CPU backbone)"}[kind]
            print(f"  {what:34s} +{row['extra_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Run an exported FOUND file in onnxruntime-web (the browser runtime, WebAssembly backend) under
Node.js and compare its logits with PyTorch's, on several input sizes through the one file.

    mkdir -p /tmp/ortweb && (cd /tmp/ortweb && npm install onnxruntime-web)
    python benchmarks/onnx_web_check.py --node-modules /tmp/ortweb/node_modules

The model is a seeded random ViT (``--tiny``: patch 8, 96-d, 3 blocks; default ViT-S/8) with a
random head: this checks that the graph runs and computes the same numbers, not mask quality.
The int8 file (onnxruntime's dynamic quantisation) is run too; its logits are compared with
onnxruntime's own (Python) result for that file.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

JS = r"""
const ort = require('onnxruntime-web');
const fs = require('fs');
const dir = process.argv[2];
(async () => {
  ort.env.wasm.numThreads = 1;
  const cases = JSON.parse(fs.readFileSync(dir + '/cases.json'));
  for (const file of ['found.onnx', 'found.int8.onnx']) {
    const session = await ort.InferenceSession.create(fs.readFileSync(dir + '/' + file), { executionProviders: ['wasm'] });
    for (let i = 0; i < cases.length; i++) {
      const buf = fs.readFileSync(`${dir}/in${i}.bin`);
      const x = new ort.Tensor('float32', new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4), cases[i]);
      const out = await session.run({ image: x });
      const l = out.logits.data;
      fs.writeFileSync(`${dir}/${file}.out${i}.bin`, Buffer.from(l.buffer, l.byteOffset, l.byteLength));
    }
  }
  console.log('onnxruntime-web', ort.env.versions ? JSON.stringify(ort.env.versions) : '');
})().catch(e => { console.error('FAILED', e.message || e); process.exit(1); });
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--node-modules", required=True, help="a node_modules folder holding onnxruntime-web")
    p.add_argument("--tiny", action="store_true", help="a tiny ViT (fast) instead of ViT-S/8")
    p.add_argument("--sizes", default="224x224,320x480,200x336", help="padded input sizes HxW")
    args = p.parse_args(argv)
    from found import Found, FoundHead, VisionTransformer
    from found.export.onnx import export_onnx, quantize_onnx_int8
    from found.export.runtime import OnnxFound

    torch.manual_seed(0)
    arch = dict(patch_size=8, embed_dim=96, depth=3, num_heads=6) if args.tiny else dict(patch_size=8, embed_dim=384, depth=12, num_heads=6)
    vit = VisionTransformer(**arch).eval()
    head = FoundHead(arch["embed_dim"]).eval()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        fp32 = export_onnx(vit, head, d / "found.onnx", model="web-check")
        int8 = quantize_onnx_int8(fp32, d / "found.int8.onnx")
        ref_torch, ref_int8 = Found(vit, head, device="cpu", precision="fp32"), OnnxFound(int8, "cpu")
        refs, cases = [], []
        for i, hw in enumerate(sizes):
            x = torch.randn(1, 3, *hw)
            x.numpy().astype("<f4").tofile(d / f"in{i}.bin")
            refs.append((ref_torch.patch_logits(x).numpy().ravel(), ref_int8.patch_logits(x).numpy().ravel()))
            cases.append([1, 3, *hw])
        (d / "cases.json").write_text(json.dumps(cases))
        (d / "run.js").write_text(JS)
        env = {**os.environ, "NODE_PATH": str(Path(args.node_modules).resolve())}
        r = subprocess.run(["node", str(d / "run.js"), str(d)], env=env, capture_output=True, text=True)
        if r.returncode:
            print(f"onnxruntime-web failed: {r.stderr.strip() or r.stdout.strip()}")
            return 1
        print(r.stdout.strip())
        worst = 0.0
        for i, (hw, (t, q)) in enumerate(zip(sizes, refs)):
            web = np.fromfile(d / f"found.onnx.out{i}.bin", "<f4")
            web8 = np.fromfile(d / f"found.int8.onnx.out{i}.bin", "<f4")
            dt, dq = float(np.abs(web - t).max()), float(np.abs(web8 - q).max())
            worst = max(worst, dt)
            print(f"{hw[0]}x{hw[1]}: fp32 file, max |logit(web) - logit(torch)| = {dt:.2e}; "
                  f"int8 file, max |logit(web) - logit(onnxruntime)| = {dq:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""``found serve`` under concurrent clients: requests/s and p50/p95 latency, with and without
dynamic batching, against the engine's own figures measured in the same run.

A real uvicorn server (``found serve``, a subprocess) on 127.0.0.1; 1, 4 and 16 clients (threads,
one keep-alive connection each) post JPEGs and read the JSON answer. Baselines, in this process,
while no server runs: a direct ``Found.predict`` call on one decoded image (latency), and the
engine's offline batched throughput (``Engine(batch_size=max_batch).run`` over the same encoded
images: decoding included, as in the server). Targets: at 16 clients with batching, throughput
≥ 90 % of the offline figure; at 1 client, p50 ≤ 1.2 × the direct predict call.

    python benchmarks/bench_serve.py                       # random ViT-S/8, 224² JPEGs, CPU
    python benchmarks/bench_serve.py --quick               # tiny random ViT: a smoke run
    python benchmarks/bench_serve.py --device cuda --image-size 480x320 --requests 96 --json serve.json

Random weights (the real checkpoints cannot be downloaded here): the compute is ViT-S/8's, the
masks mean nothing.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARCHS = {"vits8": dict(patch_size=8, embed_dim=384, depth=12, num_heads=6),
         "tiny": dict(patch_size=8, embed_dim=64, depth=2, num_heads=2)}


def write_checkpoint(arch: str, folder: Path) -> tuple[Path, Path]:
    """A seeded random backbone and head, saved so that the server loads exactly this model."""
    import torch

    from found.backbone import VisionTransformer
    from found.head import FoundHead

    torch.manual_seed(0)
    vit = VisionTransformer(**ARCHS[arch])
    torch.save(vit.state_dict(), folder / "vit.pth")
    FoundHead(ARCHS[arch]["embed_dim"]).save(folder / "head.pt")
    return folder / "vit.pth", folder / "head.pt"


def make_images(n: int, size: tuple[int, int]) -> list[bytes]:
    """``n`` distinct JPEGs (a coloured square on noise)."""
    rng, out = np.random.default_rng(0), []
    w, h = size
    for _ in range(n):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = rng.integers(0, 256, 3)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


class Baseline:
    """The engine's own figures, in this process: a direct ``predict`` call on one decoded image
    (latency) and ``Engine(batch_size=max_batch).run`` over encoded images (offline throughput).
    Measured right before each server run (the server idle), so that both see the same machine, and
    on one worker thread as in the server (PyTorch's CPU threading behaves differently on the main
    thread of a busy machine; see docs/serve.md)."""

    def __init__(self, vit: Path, head: Path, device: str, images: list[bytes], max_batch: int, reps: int) -> None:
        from found import build_found
        from found.engine import Engine
        from found.imageio import read_image

        self.model = build_found("auto", weights=vit, head=head, device=device, progress=False)
        self.engine = Engine(self.model, batch_size=max_batch)
        self.images, self.reps, self.max_batch = images, reps, max_batch
        self.rgb = read_image(images[0]).rgb()
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="baseline")
        self.thread.submit(self.model.predict, [self.rgb]).result()  # warm-up
        self.thread.submit(lambda: list(self.engine.run(images[:max_batch]))).result()

    def measure(self, n_images: int) -> dict:
        return self.thread.submit(self._measure, n_images).result()

    def _measure(self, n_images: int) -> dict:
        lat = []
        for _ in range(self.reps):
            t = time.perf_counter()
            self.model.predict([self.rgb])
            lat.append(time.perf_counter() - t)
        batch = [self.images[i % len(self.images)] for i in range(n_images)]
        t = time.perf_counter()
        n = sum(r.ok for r in self.engine.run(batch))
        return {"predict_ms_p50": statistics.median(lat) * 1000, "offline_img_s": n / (time.perf_counter() - t)}


def start_server(vit: Path, head: Path, device: str, port: int, max_batch: int, max_wait_ms: float, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "found.cli.main", "serve", "--port", str(port), "--model", "auto", "--weights", str(vit),
           "--head", str(head), "--device", device, "--no-progress", "--max-batch", str(max_batch),
           "--max-wait-ms", str(max_wait_ms), "--queue-size", "256", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text(errors='replace')}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server not ready after 300 s")


def load(port: int, images: list[bytes], clients: int, per_client: int) -> dict:
    """``clients`` threads × ``per_client`` requests; throughput and latency percentiles."""
    lat: list[float] = []
    batch_sizes: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        barrier.wait()
        for j in range(per_client):
            body = images[(k * per_client + j) % len(images)]
            t = time.perf_counter()
            conn.request("POST", "/v1/segment", body=body, headers={"Content-Type": "image/jpeg"})
            r = conn.getresponse()
            data = r.read()
            dt = time.perf_counter() - t
            with lock:
                if r.status == 200:
                    lat.append(dt)
                    batch_sizes.append(json.loads(data)["batch_size"])
                else:
                    errors.append(f"{r.status} {data[:100]!r}")
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat.sort()
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "req_s": len(lat) / wall,
            "p50_ms": lat[len(lat) // 2] * 1000, "p95_ms": lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000,
            "mean_batch": statistics.mean(batch_sizes) if batch_sizes else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), default="vits8", help="random backbone (default vits8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--image-size", default="224x224", help="WxH of the JPEGs (default 224x224)")
    p.add_argument("--clients", default="1,4,16", help="client counts (default 1,4,16)")
    p.add_argument("--requests", type=int, default=32, help="requests per run (default 32; also the offline baseline's image count)")
    p.add_argument("--min-per-client", type=int, default=8, help="requests of the single client (default 8)")
    p.add_argument("--max-batch", type=int, default=16, help="server's max batch with batching on (default 16)")
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--quick", action="store_true", help="tiny backbone, fewer requests (a smoke run)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    a = p.parse_args(argv)
    if a.quick:
        a.arch, a.requests, a.min_per_client = "tiny", 32, 16
    w, h = (int(v) for v in a.image_size.lower().split("x"))
    clients = [int(c) for c in a.clients.split(",")]
    images = make_images(32, (w, h))
    out = {"arch": a.arch, "device": a.device, "image_size": [w, h], "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        vit, head = write_checkpoint(a.arch, Path(tmp))
        base = Baseline(vit, head, a.device, images, a.max_batch, reps=5 if a.arch == "vits8" else 20)
        for batching, mb in (("on", a.max_batch), ("off", 1)):
            proc = start_server(vit, head, a.device, a.port, mb, a.max_wait_ms, Path(tmp) / f"server_{batching}.log")
            try:
                load(a.port, images, 1, 2)  # warm-up
                for n in clients:
                    per = max(a.min_per_client if n == 1 else 2, -(-a.requests // n))
                    b = base.measure(max(a.requests, a.max_batch))
                    r = {"batching": batching, "max_batch": mb, **load(a.port, images, n, per), **b}
                    r["vs_offline"] = r["req_s"] / b["offline_img_s"]
                    r["p50_vs_predict"] = r["p50_ms"] / b["predict_ms_p50"]
                    out["runs"].append(r)
                    print(f"batching {batching:3} clients {n:2}: {r['req_s']:7.2f} req/s  p50 {r['p50_ms']:8.1f} ms  "
                          f"p95 {r['p95_ms']:8.1f} ms  mean batch {r['mean_batch']:4.1f} ({r['requests']} ok, {r['errors']} errors) | "
                          f"engine: predict {b['predict_ms_p50']:7.1f} ms, offline {b['offline_img_s']:6.2f} img/s | "
                          f"×offline {r['vs_offline']:.2f}  p50/predict {r['p50_vs_predict']:.2f}", flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    on = {r["clients"]: r for r in out["runs"] if r["batching"] == "on"}
    targets = {}
    if max(clients) in on:
        t = targets["throughput_vs_offline"] = on[max(clients)]["vs_offline"]
        print(f"target: {max(clients)} clients throughput / engine offline = {t:.2f} (≥ 0.90: {'met' if t >= 0.9 else 'NOT met'})")
    if 1 in on:
        t = targets["p50_1_client_vs_predict"] = on[1]["p50_vs_predict"]
        print(f"target: 1 client p50 / direct predict = {t:.2f} (≤ 1.20: {'met' if t <= 1.2 else 'NOT met'})")
    out["targets"] = targets
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
    python benchmarks/bench_serve.py --device cuda --image-size 480x320 --per-round 64 --json serve.json

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

    from found.hub.build import save_head
    from found.model.backbone import VisionTransformer
    from found.model.head import FoundHead

    torch.manual_seed(0)
    vit = VisionTransformer(**ARCHS[arch])
    torch.save(vit.state_dict(), folder / "vit.pth")
    save_head(FoundHead(ARCHS[arch]["embed_dim"]), folder / "head.pt")
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
    """The engine's own figures, in this process while the server is idle: a direct ``predict``
    call on one decoded image (latency), and ``Engine(batch_size=max_batch).run`` over encoded
    images (offline throughput, decoding included). Run on one worker thread as in the server
    (PyTorch's CPU threading behaves differently on the main thread of a busy machine)."""

    def __init__(self, vit: Path, head: Path, device: str, images: list[bytes], max_batch: int) -> None:
        from found import build_found
        from found.engine import Engine
        from found.io.images import read_image

        self.model = build_found("auto", weights=vit, head=head, device=device, progress=False)
        self.engine = Engine(self.model, batch_size=max_batch)
        self.images = images
        self.rgb = read_image(images[0]).rgb()
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="baseline")
        self.predict_s()  # warm-up
        self.offline(max_batch)

    def predict_s(self) -> float:
        """Seconds for one direct ``predict`` call on one decoded image."""
        def one() -> float:
            t = time.perf_counter()
            self.model.predict([self.rgb])
            return time.perf_counter() - t
        return self.thread.submit(one).result()

    def offline(self, n: int) -> tuple[int, float]:
        """(images done, seconds) for ``n`` encoded images through the engine."""
        def run() -> tuple[int, float]:
            batch = [self.images[i % len(self.images)] for i in range(n)]
            t = time.perf_counter()
            ok = sum(r.ok for r in self.engine.run(batch))
            return ok, time.perf_counter() - t
        return self.thread.submit(run).result()


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


def load(port: int, images: list[bytes], clients: int, per_client: int, offset: int = 0) -> dict:
    """``clients`` threads × ``per_client`` requests: latencies (s), batch sizes, errors, wall time (s)."""
    lat: list[float] = []
    batch_sizes: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        barrier.wait()
        for j in range(per_client):
            body = images[(offset + k * per_client + j) % len(images)]
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
    return {"lat": lat, "batch": batch_sizes, "errors": errors, "wall": time.perf_counter() - start}


def measure(port: int, base: Baseline, images: list[bytes], clients: int, rounds: int, per_round: int) -> dict:
    """Rounds of [the engine offline over ``per_round`` images, then ``per_round`` requests from
    ``clients`` clients]; with one client, each request follows a direct predict call. Ratios are
    taken over the sums, so a machine whose speed drifts weighs on both sides alike."""
    lat, batch, errors, direct = [], [], [], []
    served_t = off_n = off_t = 0.0
    for r in range(rounds):
        n, t = base.offline(per_round)
        off_n, off_t = off_n + n, off_t + t
        runs = []
        if clients == 1:
            for j in range(per_round):
                direct.append(base.predict_s())
                runs.append(load(port, images, 1, 1, offset=r * per_round + j))
        else:
            runs.append(load(port, images, clients, -(-per_round // clients), offset=r * per_round))
        for res in runs:
            lat += res["lat"]
            batch += res["batch"]
            errors += res["errors"]
            served_t += res["wall"]
    lat.sort()
    out = {"clients": clients, "requests": len(lat), "errors": len(errors), "req_s": len(lat) / served_t,
           "p50_ms": lat[len(lat) // 2] * 1000, "p95_ms": lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000,
           "mean_batch": statistics.mean(batch) if batch else 0.0, "offline_img_s": off_n / off_t}
    out["vs_offline"] = out["req_s"] / out["offline_img_s"]
    if direct:
        out["predict_ms_p50"] = statistics.median(direct) * 1000
        out["p50_vs_predict"] = out["p50_ms"] / out["predict_ms_p50"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), default="vits8", help="random backbone (default vits8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--image-size", default="224x224", help="WxH of the JPEGs (default 224x224)")
    p.add_argument("--clients", default="1,4,16", help="client counts (default 1,4,16)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per measurement (default 2)")
    p.add_argument("--per-round", type=int, default=16, help="requests (and offline images) per round (default 16)")
    p.add_argument("--max-batch", type=int, default=16, help="server's max batch with batching on (default 16)")
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--quick", action="store_true", help="tiny backbone, fewer requests (a smoke run)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    a = p.parse_args(argv)
    if a.quick:
        a.arch, a.rounds = "tiny", 3
    w, h = (int(v) for v in a.image_size.lower().split("x"))
    clients = [int(c) for c in a.clients.split(",")]
    images = make_images(32, (w, h))
    out = {"arch": a.arch, "device": a.device, "image_size": [w, h], "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        vit, head = write_checkpoint(a.arch, Path(tmp))
        base = Baseline(vit, head, a.device, images, a.max_batch)
        for batching, mb in (("on", a.max_batch), ("off", 1)):
            proc = start_server(vit, head, a.device, a.port, mb, a.max_wait_ms, Path(tmp) / f"server_{batching}.log")
            try:
                load(a.port, images, 1, 2)  # warm-up
                for n in clients:
                    r = {"batching": batching, "max_batch": mb, **measure(a.port, base, images, n, a.rounds, a.per_round)}
                    out["runs"].append(r)
                    extra = (f", p50/predict {r['p50_vs_predict']:.2f} (predict {r['predict_ms_p50']:.1f} ms)"
                             if "predict_ms_p50" in r else "")
                    print(f"batching {batching:3} clients {n:2}: {r['req_s']:7.2f} req/s  p50 {r['p50_ms']:8.1f} ms  "
                          f"p95 {r['p95_ms']:8.1f} ms  mean batch {r['mean_batch']:4.1f} ({r['requests']} ok, {r['errors']} "
                          f"errors) | engine offline {r['offline_img_s']:6.2f} img/s, ×offline {r['vs_offline']:.2f}{extra}",
                          flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
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

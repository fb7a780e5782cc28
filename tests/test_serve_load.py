"""``found serve`` under load on loopback: 16 concurrent clients × 25 requests against a real uvicorn
server (tiny random backbone), with bad uploads mixed in. Every request gets 200 or 503; each 200
equals the single-image result for its own input; the server's memory stays bounded.
Bounded in count and time (a global deadline), not a benchmark: see benchmarks/bench_serve.py.
"""
from __future__ import annotations

import io
import random
import threading
import time

import numpy as np
import pytest
from PIL import Image

from agreement import assert_masks_agree
from conftest import require
from found.engine import Engine
from helpers import noise_image, tiny  # noqa: F401  (fixture)
from serve_support import bad_uploads, png, rss_kib, running_server

require("fastapi", "serve")
require("httpx", "test")
pytestmark = pytest.mark.slow

CLIENTS, REQUESTS = 16, 25
DEADLINE_S = 420  # the whole load, on a slow shared CI machine
SIZES = [(64, 48), (48, 64), (80, 56), (56, 80)]


@pytest.fixture(scope="module")
def inputs(tiny):
    """Eight images (two per size) and the engine's single-image prediction for each."""
    from found import build_found

    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False)
    datas = [png(noise_image(w, h, seed=10 * i + s)) for i, (w, h) in enumerate(SIZES) for s in range(2)]
    preds = [next(Engine(model, batch_size=1, workers=0).run([d])).prediction for d in datas]
    return datas, preds


def _client(url: str, k: int, datas: list[bytes], bad: list[bytes], out: list, stop: threading.Event) -> None:
    import httpx

    rng = random.Random(k)
    with httpx.Client(base_url=url, timeout=120) as c:
        for j in range(REQUESTS):
            if stop.is_set():
                return
            if j % 8 == 7:  # a bad upload now and then, from the same clients
                b = rng.randrange(len(bad))
                r = c.post("/v1/segment", content=bad[b])
                out.append(("bad", b, r.status_code, None, None))
                continue
            i = rng.randrange(len(datas))
            r = c.post("/v1/segment", content=datas[i], params={"output": "mask"})
            mask = np.asarray(Image.open(io.BytesIO(r.content))) > 127 if r.status_code == 200 else None
            out.append(("good", i, r.status_code, mask, r.headers.get("x-found-batch-size")))
            if r.status_code == 503:
                time.sleep(0.05)  # busy: back off a little (a real client would honour Retry-After)


def test_concurrent_clients_each_get_their_own_result_and_memory_stays_bounded(tiny, inputs, tmp_path) -> None:
    import httpx

    datas, preds = inputs
    expected = [p.mask for p in preds]
    bad = list(bad_uploads(datas[0]).values())
    # a queue smaller than the number of clients, so that the 503 path is exercised under load too
    args = [*tiny.args(), "--max-batch", "8", "--max-wait-ms", "5", "--queue-size", "12", "--timeout", "120"]
    with running_server(args, tmp_path / "server.log") as (url, proc):
        with httpx.Client(base_url=url, timeout=60) as c:  # warm the allocator with one round of every input
            for d in datas * 2:
                assert c.post("/v1/segment", content=d).status_code == 200
        rss_before = rss_kib(proc.pid)
        results: list = []
        stop = threading.Event()
        threads = [threading.Thread(target=_client, args=(url, k, datas, bad, results, stop), daemon=True) for k in range(CLIENTS)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, DEADLINE_S - (time.monotonic() - start)))
        stop.set()
        assert not any(t.is_alive() for t in threads), f"load did not finish within {DEADLINE_S} s"
        rss_after = rss_kib(proc.pid)
        with httpx.Client(base_url=url, timeout=60) as c:  # still serving, and still right
            last = c.post("/v1/segment", content=datas[3], params={"output": "mask"})
            health = c.get("/healthz")
        assert proc.poll() is None
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]

    assert len(results) == CLIENTS * REQUESTS  # none lost
    good = [r for r in results if r[0] == "good"]
    codes = {r[2] for r in good}
    assert codes <= {200, 503}, codes
    ok = [r for r in good if r[2] == 200]
    assert len(ok) >= len(good) // 4, f"only {len(ok)} of {len(good)} answered"
    for _, i, _, mask, _ in ok:  # its own input's result: the right size, and that input's mask
        assert mask.shape == expected[i].shape
        agree = [float(np.mean(mask == m)) if m.shape == mask.shape else 0.0 for m in expected]
        assert agree[i] >= 0.99 and agree[i] == max(agree), (i, agree)
    assert max(int(r[4]) for r in ok) > 1, "no request shared a forward pass"
    assert all(400 <= r[2] < 500 or r[2] == 503 for r in results if r[0] == "bad"), [r[2] for r in results if r[0] == "bad"]
    assert any(400 <= r[2] < 500 for r in results if r[0] == "bad")
    assert last.status_code == 200
    assert_masks_agree(np.asarray(Image.open(io.BytesIO(last.content))) > 127, expected[3], preds[3].soft, "served mask")
    assert health.json() == {"status": "ok"}
    grown_mib = (rss_after - rss_before) / 1024
    print(f"server RSS {rss_before / 1024:.0f} → {rss_after / 1024:.0f} MiB over {len(results)} requests "
          f"({len(ok)} ok, {len(good) - len(ok)} busy)")
    assert grown_mib < 150, f"server memory grew by {grown_mib:.0f} MiB under load"

"""Live camera (found.serve.live): the WebSocket endpoint in-process, and the camera page in headless
Chromium with its fake camera against a real uvicorn server.

CI installs Debian's chromium (.ci/run) and fastapi, uvicorn, websockets and playwright (the test
extra); a missing browser is a failure here, never a skip.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import require
from found import build_found
from found.engine import Engine
from helpers import noise_image, tiny  # noqa: F401  (fixture)

require("fastapi", "serve")
pytestmark = pytest.mark.slow


class SlowEngine(Engine):
    """The engine with a fixed delay per call: a model slower than the camera."""

    delay = 0.0

    def infer(self, images):
        time.sleep(self.delay)
        return super().infer(images)


@pytest.fixture(scope="module")
def model(tiny):  # noqa: F811
    return build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu")


def jpeg(seed: int, w: int = 96, h: int = 72) -> bytes:
    buf = io.BytesIO()
    noise_image(w, h, seed=seed).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def next_answer(ws, timeout: float = 60.0) -> dict:
    """The next JSON answer of a test WebSocket; a failure, not a hang, when none comes in ``timeout`` s
    (a dropped answer must fail the test)."""
    got: dict = {}

    def receive() -> None:
        try:
            got["answer"] = ws.receive_json()
        except BaseException as e:  # re-raised in the test's thread
            got["error"] = e

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        pytest.fail(f"no answer from the live endpoint within {timeout:.0f} s")
    if "error" in got:
        raise got["error"]
    return got["answer"]


def answer_mask(answer: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))) > 127


def app_with_live(engine):
    from fastapi import FastAPI

    from found.serve.live import register_live

    app = FastAPI()
    register_live(app, engine)
    return app


# ---------------------------------------------------------------------------- the endpoint
def test_each_frame_gets_the_engines_box_and_mask(model):
    from fastapi.testclient import TestClient

    engine = Engine(model, batch_size=1, workers=0)
    with TestClient(app_with_live(engine)) as client, client.websocket_connect("/v1/live") as ws:
        for seed in (1, 2):
            data = jpeg(seed)
            ws.send_bytes(data)
            a = next_answer(ws)
            expected = engine.infer([engine.load(data)])[0]
            assert a["frame"] == seed and (a["width"], a["height"]) == (96, 72) and a["dropped"] == 0
            assert np.array_equal(answer_mask(a), expected.mask)
            assert a["box_xyxy"] == (None if expected.box is None else [int(v) for v in expected.box])
            assert a["score"] == pytest.approx(expected.score, abs=1e-5)


def test_frames_arriving_while_the_model_is_busy_are_dropped_not_queued(model):
    from fastapi.testclient import TestClient

    engine = SlowEngine(model, batch_size=1, workers=0)
    engine.delay = 0.4
    frames = [jpeg(i) for i in range(8)]
    with TestClient(app_with_live(engine)) as client, client.websocket_connect("/v1/live") as ws:
        for data in frames:
            ws.send_bytes(data)
        answers = [next_answer(ws)]
        while answers[-1]["frame"] != len(frames):
            answers.append(next_answer(ws))
    got = [a["frame"] for a in answers]
    assert got[0] == 1 and got == sorted(got) and len(got) <= 3  # the newest frame, not a backlog
    assert answers[-1]["dropped"] == len(frames) - len(answers)
    expected = engine.infer([engine.load(frames[-1])])[0]
    assert np.array_equal(answer_mask(answers[-1]), expected.mask)


def test_a_bad_frame_gets_a_one_line_error_and_the_session_goes_on(model):
    from fastapi.testclient import TestClient

    with TestClient(app_with_live(Engine(model, batch_size=1, workers=0))) as client, \
            client.websocket_connect("/v1/live") as ws:
        ws.send_bytes(b"this is not an image")
        bad = next_answer(ws)
        assert bad["frame"] == 1 and "error" in bad and "\n" not in bad["error"] and "mask_png" not in bad
        ws.send_text("keep-alive")  # ignored
        ws.send_bytes(jpeg(3))
        good = next_answer(ws)
        assert good["frame"] == 2 and "mask_png" in good


def test_api_key_is_required_when_set_and_inference_runs_where_the_app_says(model):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from found.serve.live import register_live

    calls = []

    async def call(fn, *args):
        calls.append(fn.__name__)
        return fn(*args)

    app = FastAPI()
    register_live(app, lambda: Engine(model, batch_size=1, workers=0), call=call, api_key="s3cret")
    with TestClient(app) as client:
        for url in ("/v1/live", "/v1/live?key=wrong"):
            with pytest.raises(WebSocketDisconnect) as e, client.websocket_connect(url) as ws:
                ws.receive_json()
            assert e.value.code == 1008
        with client.websocket_connect("/v1/live?key=s3cret") as ws:
            ws.send_bytes(jpeg(5))
            assert "mask_png" in next_answer(ws)
    assert calls == ["frame_answer"]


# ---------------------------------------------------------------------------- the camera page in Chromium
@contextlib.contextmanager
def serving(app):
    """``app`` on a real uvicorn server (WebSockets need the websockets library) on a free loopback port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="auto"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    return path


def test_live_camera_in_headless_chromium_draws_the_overlay_and_drops_frames(model):
    playwright = require("playwright.sync_api", "test")

    engine = SlowEngine(model, batch_size=1, workers=0)
    engine.delay = 0.4  # far slower than the fake camera's 30 fps
    sent: list[bytes] = []
    received: dict[int, dict] = {}
    problems: list[str] = []

    def on_socket(ws) -> None:
        ws.on("framesent", lambda payload: sent.append(payload) if isinstance(payload, bytes) else None)
        ws.on("framereceived", lambda payload: received.update({(a := json.loads(payload))["frame"]: a}))

    with serving(app_with_live(engine)) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                    args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        try:
            page = browser.new_page()
            page.on("websocket", on_socket)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url + "/live")
            page.click("#live-start")
            page.wait_for_function("window.foundLive && foundLive.stats.drawn >= 6", timeout=90_000)
            # the status line is refreshed on a timer: wait for it to show the answers
            playwright.expect(page.locator("#live-stats")).to_contain_text("answered", timeout=60_000)
            state = page.evaluate("""() => {
                const live = window.foundLive, s = live.stats;
                live.stop();
                const c = live.overlay, d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const alpha = []; for (let i = 3; i < d.length; i += 4) alpha.push(d[i]);
                return {stats: {...s, latencies: [...s.latencies]}, w: c.width, h: c.height, alpha,
                        video: [live.video.videoWidth, live.video.videoHeight], status: document.getElementById('live-stats').textContent};
            }""")
        finally:
            browser.close()
    s = state["stats"]
    assert problems == []
    assert s["answered"] >= 6 and s["errors"] == 0
    assert s["skipped"] > 0  # camera frames dropped while the model was busy...
    assert s["sent"] - s["answered"] <= 1  # ...never queued: at most one frame in flight
    assert s["dropped"] == 0  # so the server never had to drop one either: no backlog, whatever the speeds
    assert state["video"][0] > 0 and "answered" in state["status"]
    # the overlay shows the answer for the frame it names, which is the engine's mask of the frame sent
    frame = s["drawnFrame"]
    answer = received[frame]
    assert (state["w"], state["h"]) == (answer["width"], answer["height"]) == tuple(
        Image.open(io.BytesIO(sent[frame - 1])).size)
    expected = engine.infer([engine.load(sent[frame - 1])])[0]
    assert np.array_equal(answer_mask(answer), expected.mask)
    alpha = np.array(state["alpha"], dtype=np.uint8).reshape(state["h"], state["w"])
    box_band = alpha == 255
    assert np.array_equal(alpha[~box_band] == 115, expected.mask[~box_band])
    assert set(np.unique(alpha)) <= {0, 115, 255}
    if expected.box is not None:
        x1, y1, x2, y2 = (int(v) for v in expected.box)
        assert box_band[y1, x1:x2].all() and box_band[y1:y2, x1].all()

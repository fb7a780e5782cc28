"""Live camera: frames in over a WebSocket, boxes and masks out, frames dropped rather than queued.

:func:`register_live` adds to a FastAPI app:

* ``WebSocket /v1/live`` — each binary message is one encoded frame (JPEG, PNG or WebP, as a
  browser's ``canvas.toBlob`` gives it); each processed frame gets one JSON answer::

      {"schema_version": 2, "frame": 7, <the frame's record: "width", "height", "score", "box_xyxy",
       "box_xywh", "instances", … (docs/records.md)>, "mask_png": "<base64 PNG, 0/255, the frame's size>",
       "ms": 41.5, "dropped": 2}

  ``frame`` counts the binary messages received on this connection (1-based). While the model is
  busy, a newer frame replaces the one waiting, so at most one frame waits per connection and the
  answers follow the camera with one frame of latency at most; ``dropped`` counts the frames
  replaced so far. A frame that cannot be decoded gets ``{"frame": n, "error": "…"}`` and the
  session goes on. Inference runs in a worker thread (``engine.load`` → ``engine.infer``), one
  live frame at a time per app.
* ``GET /live`` — a page with the camera mode alone, and ``GET /live.js`` — its client
  (``FoundLive.start(container, options)``: ``getUserMedia`` → JPEG frames → the overlay drawn live;
  the page sends a new frame only once the previous one is answered, and skips camera frames
  meanwhile), so the main page can include the same script.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from typing import Awaitable, Callable

from ..engine import Engine
from ..errors import FoundError, InputError
from ..io.records import SCHEMA_VERSION, prediction_record
from ..io.render import png_bytes, render

__all__ = ["LIVE_HTML", "LIVE_JS", "MAX_FRAME_BYTES", "frame_answer", "register_live"]

#: Largest frame accepted over the WebSocket (an encoded camera frame is far smaller).
MAX_FRAME_BYTES = 8 << 20


def frame_answer(engine: Engine, data: bytes, frame: int) -> dict:
    """The JSON answer for one encoded frame: its record (box, score, instances…) and mask PNG, or a one-line error."""
    t0 = time.perf_counter()
    if len(data) > MAX_FRAME_BYTES:
        return {"frame": frame, "error": f"frame too large ({len(data)} bytes, at most {MAX_FRAME_BYTES})"}
    try:
        image = engine.load(data, frame)
    except InputError as e:
        return {"frame": frame, "error": str(e)}
    pred = engine.infer([image])[0]
    if isinstance(pred, FoundError):
        return {"frame": frame, "error": str(pred)}
    mask_png = png_bytes(render("mask", pred), compress_level=1)
    return {"schema_version": SCHEMA_VERSION, "frame": frame, **prediction_record(pred, image),
            "mask_png": base64.b64encode(mask_png).decode("ascii"), "ms": round((time.perf_counter() - t0) * 1000, 1)}


class _Session:
    """One connection: a reader keeping only the newest frame, a worker answering it when free."""

    def __init__(self, ws, engine: Engine, call: Callable[..., Awaitable[dict]]) -> None:
        self.ws, self.engine, self.call = ws, engine, call
        self.waiting: tuple[int, bytes] | None = None
        self.received = self.dropped = 0
        self.ready = asyncio.Event()
        self.closed = False

    async def read(self) -> None:
        """Receive frames until the client leaves, keeping only the newest one waiting (older ones are dropped)."""
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                data = msg.get("bytes")
                if data is None:
                    continue  # text messages are ignored (keep-alives)
                self.received += 1
                if self.waiting is not None:
                    self.dropped += 1  # the model is busy: the newer frame replaces the waiting one
                self.waiting = (self.received, data)
                self.ready.set()
        finally:
            self.closed = True
            self.ready.set()

    async def work(self) -> None:
        """Answer the waiting frame whenever there is one, until the connection closes."""
        while True:
            await self.ready.wait()
            self.ready.clear()
            if self.closed:
                return
            if self.waiting is None:
                continue
            (frame, data), self.waiting = self.waiting, None
            answer = await self.call(frame_answer, self.engine, data, frame)
            answer["dropped"] = self.dropped
            await self.ws.send_text(json.dumps(answer))

    async def run(self) -> None:
        """Run the reader and the worker until either ends, then stop both."""
        reader = asyncio.create_task(self.read())
        worker = asyncio.create_task(self.work())
        try:
            await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, worker):
                task.cancel()
            for task in (reader, worker):
                with contextlib.suppress(BaseException):
                    await task


def _locked_threadpool() -> Callable[..., Awaitable[dict]]:
    """Blocking calls on Starlette's thread pool, one at a time (one live frame in the model at once)."""
    from starlette.concurrency import run_in_threadpool

    lock = threading.Lock()

    def locked(fn: Callable[..., dict], *args: object) -> dict:
        """``fn(*args)`` while holding the lock, so one live frame is in the model at a time."""
        with lock:
            return fn(*args)

    return lambda fn, *args: run_in_threadpool(locked, fn, *args)


def register_live(app, engine: Engine | Callable[[], Engine], *, path: str = "/v1/live", page: str | None = "/live",
                  call: Callable[..., Awaitable[dict]] | None = None, api_key: str | None = None) -> None:
    """Add the live WebSocket at ``path`` (and, unless ``page`` is None, the camera page at ``page``
    and its script at ``page + ".js"``) to the FastAPI ``app``.

    ``engine`` may be a callable returning the engine (called once per connection), for apps that
    build their model lazily. ``call(fn, *args)`` runs the blocking inference and returns its value
    (default: a thread of Starlette's pool, one live frame at a time; a server with its own model
    thread passes e.g. ``batcher.in_model_thread``). With ``api_key``, a connection must give
    ``?key=KEY`` (browsers cannot set headers on a WebSocket) or it is refused (close code 1008).
    """
    from fastapi import WebSocket
    from fastapi.responses import HTMLResponse, Response

    get_engine = engine if callable(engine) and not isinstance(engine, Engine) else (lambda: engine)
    run = call or _locked_threadpool()
    expected = hashlib.sha256(api_key.encode()).digest() if api_key else None

    @app.websocket(path)
    async def live(ws: WebSocket) -> None:
        """One live connection: check the key (close 1008 if wrong), then answer its frames until it closes."""
        if expected is not None:
            given = hashlib.sha256(ws.query_params.get("key", "").encode()).digest()
            if not hmac.compare_digest(given, expected):
                await ws.close(code=1008, reason="missing or wrong API key (?key=KEY)")
                return
        await ws.accept()
        await _Session(ws, get_engine(), run).run()

    if page is None:
        return

    @app.get(page, include_in_schema=False)
    async def live_page() -> HTMLResponse:
        """The camera page, pointed at this app's script and WebSocket paths."""
        return HTMLResponse(LIVE_HTML.replace("__SCRIPT__", page + ".js").replace("__WS__", path))

    @app.get(page + ".js", include_in_schema=False)
    async def live_script() -> Response:
        """The live client script (``FoundLive``) the camera page and the main page load."""
        return Response(LIVE_JS, media_type="text/javascript")


#: The camera client: ``FoundLive.start(container, {url, maxSide, quality, key})`` → a controller with
#: ``stats`` (sent, answered, skipped, dropped, errors, drawn, latencies) and ``stop()``.
LIVE_JS = r"""
(function () {
  "use strict";
  function wsUrl(path) {
    const u = new URL(path, location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.href;
  }
  async function start(container, options) {
    const opts = Object.assign({ url: "/v1/live", maxSide: 480, quality: 0.8, key: "" }, options || {});
    const stats = { sent: 0, answered: 0, skipped: 0, dropped: 0, errors: 0, drawn: 0, latencies: [], last: null, error: "" };
    const wrap = document.createElement("div");
    wrap.className = "found-live";
    wrap.style.cssText = "position:relative;display:inline-block;max-width:100%";
    const video = document.createElement("video");
    video.muted = true; video.playsInline = true; video.autoplay = true;
    video.style.cssText = "display:block;max-width:100%";
    const overlay = document.createElement("canvas");
    overlay.className = "found-live-overlay";
    overlay.style.cssText = "position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none";
    wrap.append(video, overlay);
    container.append(wrap);
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    video.srcObject = stream;
    await video.play();
    const ws = new WebSocket(wsUrl(opts.url) + (opts.key ? "?key=" + encodeURIComponent(opts.key) : ""));
    ws.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("live: cannot connect to " + opts.url));
    });
    const grab = document.createElement("canvas");
    let inFlight = false, sentAt = 0, stopped = false;

    function schedule() {
      if (stopped) return;
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(tick);
      else requestAnimationFrame(tick);
    }
    function tick() {
      if (stopped) return;
      if (inFlight) stats.skipped++;          // the model is slower than the camera: drop this frame
      else if (video.videoWidth) send();
      schedule();
    }
    function send() {
      const s = Math.min(1, opts.maxSide / Math.max(video.videoWidth, video.videoHeight));
      grab.width = Math.max(1, Math.round(video.videoWidth * s));
      grab.height = Math.max(1, Math.round(video.videoHeight * s));
      grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
      inFlight = true;
      grab.toBlob((blob) => {
        const closed = () => stopped || ws.readyState !== WebSocket.OPEN;
        if (closed() || !blob) { inFlight = false; return; }
        blob.arrayBuffer().then((buf) => {  // stop() may have closed the socket meanwhile
          if (closed()) { inFlight = false; return; }
          sentAt = performance.now(); ws.send(buf); stats.sent++;
        });
      }, "image/jpeg", opts.quality);
    }
    function draw(a) {
      const img = new Image();
      img.onload = () => {
        if (stopped) return;
        overlay.width = a.width; overlay.height = a.height;
        const g = overlay.getContext("2d");
        g.drawImage(img, 0, 0);
        const px = g.getImageData(0, 0, a.width, a.height), d = px.data;
        for (let i = 0; i < d.length; i += 4) {
          const on = d[i] > 127;
          d[i] = 255; d[i + 1] = 40; d[i + 2] = 40; d[i + 3] = on ? 115 : 0;
        }
        g.putImageData(px, 0, 0);
        if (a.box_xyxy) {  // the box as four filled bands: crisp, opaque pixels (no anti-aliasing)
          const [x1, y1, x2, y2] = a.box_xyxy, w = x2 - x1, h = y2 - y1;
          const lw = Math.max(1, Math.min(Math.round(Math.min(a.width, a.height) / 150), w, h));
          g.fillStyle = "#ffd400";
          g.fillRect(x1, y1, w, lw); g.fillRect(x1, y2 - lw, w, lw);
          g.fillRect(x1, y1, lw, h); g.fillRect(x2 - lw, y1, lw, h);
        }
        stats.drawn++;
        stats.drawnFrame = a.frame;
      };
      img.src = "data:image/png;base64," + a.mask_png;
    }
    ws.onmessage = (ev) => {
      inFlight = false;
      stats.latencies.push(performance.now() - sentAt);
      if (stats.latencies.length > 100) stats.latencies.shift();
      const a = JSON.parse(ev.data);
      stats.dropped = a.dropped || 0;
      if (a.error) { stats.errors++; stats.error = a.error; return; }
      stats.answered++;
      stats.last = { frame: a.frame, width: a.width, height: a.height, box: a.box_xyxy, score: a.score, ms: a.ms };
      draw(a);
    };
    ws.onclose = () => { stopped = true; };
    schedule();
    return {
      stats, video, overlay,
      stop() {
        stopped = true;
        stream.getTracks().forEach((t) => t.stop());
        ws.close();
        wrap.remove();
      },
    };
  }
  window.FoundLive = { start };
})();
"""

LIVE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>found — live camera</title>
<link rel="icon" href="data:,">
<style>
 body { font: 15px system-ui, sans-serif; margin: 1.5rem; color: #222; }
 #live-stats { font: 13px ui-monospace, monospace; color: #555; }
 button { font: inherit; padding: .4rem 1rem; }
</style>
</head>
<body>
<h1>Live camera</h1>
<p>The main object of each camera frame, found on the server; frames are skipped while the model is busy.</p>
<p><button id="live-start" type="button">Start camera</button> <button id="live-stop" type="button" disabled>Stop</button></p>
<div id="live-view"></div>
<p id="live-stats" aria-live="polite"></p>
<script src="__SCRIPT__"></script>
<script>
(function () {
  let live = null, timer = null;
  const startBtn = document.getElementById("live-start"), stopBtn = document.getElementById("live-stop");
  const out = document.getElementById("live-stats");
  function show() {
    if (!live) return;
    const s = live.stats, l = s.latencies, ms = l.length ? l[l.length - 1].toFixed(0) : "-";
    out.textContent = `sent ${s.sent} · answered ${s.answered} · skipped ${s.skipped} · latency ${ms} ms` +
      (s.last ? ` · score ${s.last.score.toFixed(2)}` : "") + (s.error ? ` · error: ${s.error}` : "");
  }
  startBtn.onclick = async () => {
    startBtn.disabled = true;
    try {
      live = await FoundLive.start(document.getElementById("live-view"), { url: "__WS__" });
      window.foundLive = live;
      stopBtn.disabled = false;
      timer = setInterval(show, 250);
    } catch (e) {
      out.textContent = "camera not available: " + e.message;
      startBtn.disabled = false;
    }
  };
  stopBtn.onclick = () => {
    if (live) live.stop();
    live = null; clearInterval(timer);
    stopBtn.disabled = true; startBtn.disabled = false;
  };
})();
</script>
</body>
</html>
"""

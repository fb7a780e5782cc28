"""The web page in a real browser: headless Debian Chromium (via Playwright) against a real uvicorn server.

CI installs ``chromium`` (.ci/run) and Playwright's Python package (the test extra); a missing
browser is a failure here, never a skip. The screenshot is kept in tests/artifacts/.
Every check of the page's state waits for it (Playwright's ``expect``, ``wait_for_*``, bounded
timeouts): nothing assumes how fast the browser or the server is.
"""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agreement import assert_instance_boxes_agree, assert_masks_agree, tie_fraction
from conftest import require
from found.engine import Engine
from helpers import noise_image, tiny  # noqa: F401  (fixture)
from serve_support import png, running_server

require("fastapi", "serve")
playwright = require("playwright.sync_api", "test")
expect = playwright.expect
pytestmark = pytest.mark.slow
#: Longest wait for a state of the page (ms): generous, for a loaded 2-core CI machine.
WAIT_MS = 60_000

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "data" / "images" / "astronaut.png"
ARTIFACTS = REPO / "tests" / "artifacts"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    with running_server([*tiny.args(), "--max-wait-ms", "2"], tmp_path_factory.mktemp("serve") / "server.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def expected(tiny):
    from found import build_found

    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False)
    return next(Engine(model, batch_size=1, workers=0).run([PHOTO.read_bytes()])).prediction


@pytest.fixture()
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
            pg = context.new_page()
            pg.requests, pg.problems = [], []
            pg.on("request", lambda r: pg.requests.append(r.url))
            pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
            pg.on("pageerror", lambda e: pg.problems.append(str(e)))
            pg.set_default_timeout(WAIT_MS)
            pg.goto(server + "/")
            yield pg
        finally:
            browser.close()


def natural_size(page) -> tuple[int, int]:
    return tuple(page.eval_on_selector("#result-image", "im => [im.naturalWidth, im.naturalHeight]"))


def white_fraction(page) -> float:
    """Fraction of white pixels of the image shown (read back through a canvas)."""
    return page.eval_on_selector("#result-image", """im => {
        const c = document.createElement('canvas'); c.width = im.naturalWidth; c.height = im.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(im, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 127) n++;
        return n / (c.width * c.height); }""")


def test_upload_shows_overlay_boxes_mask_and_downloads_the_cutout(page, server, expected) -> None:
    page.get_by_label("Image file").set_input_files(str(PHOTO))
    page.wait_for_selector("#result-image[data-view=overlay]")
    assert natural_size(page) == (480, 480)
    assert len(expected.instances) > 1
    expect(page.locator("#boxes rect.box")).to_have_count(len(expected.instances))  # one box per object
    boxes = page.eval_on_selector_all("#boxes rect.box", "rs => rs.map(r => r.dataset.xyxy.split(',').map(Number))")
    assert_instance_boxes_agree(boxes, [i.box_xyxy for i in expected.instances], expected.soft)
    expect(page.locator("#boxes")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    page.get_by_label("Mask", exact=True).check()
    page.wait_for_selector("#result-image[data-view=mask]")
    assert natural_size(page) == (480, 480)
    # pixels that may fall either side of 0.5 may be either colour
    assert white_fraction(page) == pytest.approx(float(expected.mask.mean()), abs=tie_fraction(expected.soft) + 1e-6)
    expect(page.locator("#boxes")).to_be_hidden()  # boxes belong to the overlay view

    page.keyboard.press("ArrowRight")  # radio group by keyboard: mask → cut-out
    page.wait_for_selector("#result-image[data-view=cutout]")
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download the cut-out (PNG)").click()
    assert dl.value.suggested_filename == "astronaut_cutout.png"
    with Image.open(dl.value.path()) as im:
        cut = np.asarray(im)
    assert cut.shape == (480, 480, 4)
    # the photo is over the working scale: the cut-out follows its edges (guided filter of the working-scale mask)
    from found.model.edges import guided_upsample
    from found.io.images import read_image

    guided = guided_upsample(expected.processed.mask.astype(np.float32), read_image(PHOTO).rgb())
    assert_masks_agree(cut[..., 3] > 0, guided > 0.5, guided, "cut-out alpha")

    page.get_by_label("Soft mask").check()
    page.wait_for_selector("#result-image[data-view=soft]")
    assert natural_size(page) == (480, 480)
    expect(page.locator("#facts")).to_contain_text("Score")
    expect(page.locator("#status")).to_contain_text(f"Done: {len(expected.instances)} boxes")
    assert all(u.startswith((server, "blob:", "data:")) for u in page.requests), page.requests
    assert page.problems == []


def _file_transfer(page, data: bytes, name: str):
    return page.evaluate_handle("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer(); dt.items.add(new File([bytes], name, {type: 'image/png'})); return dt; }""",
                                [base64.b64encode(data).decode(), name])


def test_drop_and_paste_an_image_and_bad_files_show_an_error(page, server) -> None:
    dropped = _file_transfer(page, png(noise_image(96, 64, seed=5)), "dropped.png")
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    page.wait_for_selector("#result-image[data-view=overlay]")
    assert natural_size(page) == (96, 64)

    pasted = _file_transfer(page, png(noise_image(40, 72, seed=6)), "pasted.png")
    page.evaluate("dt => document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}))", pasted)
    page.wait_for_function("() => document.querySelector('#result-image').naturalWidth === 40")
    page.wait_for_selector("#result-image[data-view=overlay]")
    assert natural_size(page) == (40, 72)

    broken = _file_transfer(page, b"<html>not an image</html>", "fake.png")
    page.dispatch_event("#drop", "drop", {"dataTransfer": broken})
    expect(page.locator("#error")).to_contain_text("422: not an image Pillow can read")
    problems = [p for p in page.problems if "422" not in p]  # the browser logs the failed request itself
    assert problems == []


def test_every_control_is_labelled_and_reachable_by_keyboard(page) -> None:
    for label in ("Image file", "Mask mode", "Refine edges (bilateral solver, slower)", "API key (if the server needs one)"):
        assert page.get_by_label(label).count() == 1, label
    page.keyboard.press("Tab")
    expect(page.locator("#drop")).to_be_focused()
    expect(page.locator("#status")).to_have_attribute("aria-live", "polite")


def test_camera_mode_of_the_page_draws_the_engines_mask_live(server, tiny) -> None:  # noqa: F811
    """The page's camera mode with Chromium's fake camera: frames go over the WebSocket of the real
    ``found serve`` process, the overlay is drawn from the answers, at most one frame is in flight."""
    import io
    import json

    from found import build_found

    sent: list[bytes] = []
    answers: dict[int, dict] = {}

    def on_socket(ws) -> None:
        ws.on("framesent", lambda payload: sent.append(payload) if isinstance(payload, bytes) else None)
        ws.on("framereceived", lambda payload: answers.update({(a := json.loads(payload))["frame"]: a}))

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                    args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("websocket", on_socket)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server + "/")
            page.get_by_role("button", name="Start camera").click()
            page.wait_for_function("() => window.foundLive && window.foundLive.stats.drawn >= 3", timeout=90_000)
            stats = page.evaluate("() => { const s = foundLive.stats; return {...s, latencies: [...s.latencies]}; }")
            # the status line is refreshed on a timer: wait for it to show the answers
            expect(page.locator("#camera-stats")).to_contain_text("answered", timeout=WAIT_MS)
            page.get_by_role("button", name="Stop camera").click()
            expect(page.locator("#camera-view video")).to_have_count(0, timeout=WAIT_MS)
        finally:
            browser.close()
    assert problems == []
    assert stats["answered"] >= 3 and stats["errors"] == 0 and stats["sent"] - stats["answered"] <= 1
    frame = stats["drawnFrame"]
    answer = answers[frame]
    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False)
    expected = next(Engine(model, batch_size=1, workers=0).run([sent[frame - 1]])).prediction
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))) > 127
    assert (answer["width"], answer["height"]) == (mask.shape[1], mask.shape[0])
    assert_masks_agree(mask, expected.mask, expected.soft, "served mask")  # the engine's mask for the frame sent

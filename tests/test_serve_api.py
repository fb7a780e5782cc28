"""``found serve`` API, in-process through httpx: answers equal the engine's, limits, errors, batching, access."""
from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np
import pytest

from agreement import assert_instance_boxes_agree, assert_masks_agree, assert_same_box, tie_fraction
from conftest import require

require("fastapi", "serve")
require("httpx", "test")
from found.engine import Engine  # noqa: E402
from found.serve import Settings, create_app  # noqa: E402
from helpers import noise_image, run_cli, tiny  # noqa: E402,F401  (fixture)
from serve_support import GatedModel, asgi_client, bad_uploads, decode_png, huge_header_png, png  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny):
    from found import build_found

    return build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False)


@pytest.fixture(scope="module")
def image() -> bytes:
    return png(noise_image(72, 56, seed=3))


def single(model, data: bytes, mode: str = "multi"):
    """The engine's result for one input alone: what every server answer must equal."""
    return next(Engine(model, mode=mode, batch_size=1, workers=0).run([data]))


def call(app, *requests):
    """Send ``requests`` (kwargs of client.request) concurrently to ``app``; their responses, in order."""
    async def go():
        async with asgi_client(app) as c:
            return await asyncio.gather(*(c.request(**r) for r in requests))

    return asyncio.run(go())


def post(content=None, params=None, **kw) -> dict:
    return dict(method="POST", url="/v1/segment", content=content, params=params or {}, **kw)


def test_health_and_readiness_answer_once_the_model_is_warm(model) -> None:
    app = create_app(model)

    async def go():
        async with asgi_client(app) as c:
            return (await c.get("/healthz")), (await c.get("/readyz"))

    health, ready = asyncio.run(go())
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["patch_size"] == 8


def test_json_answer_equals_the_engine_result(model, image) -> None:
    expected = single(model, image)
    (r,) = call(create_app(model), dict(method="POST", url="/v1/segment", files={"file": ("x.png", image, "image/png")}))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert (doc["width"], doc["height"]) == (72, 56)
    pred = expected.prediction
    assert_same_box(doc["box_xyxy"], pred.box, pred.patch_probs, pred.mask.shape, pred.patch)
    x1, y1, x2, y2 = doc["box_xyxy"]
    assert doc["box_xywh"] == [x1, y1, x2 - x1, y2 - y1] and doc["schema_version"] == 2
    assert doc["score"] == pytest.approx(float(expected.prediction.score), abs=1e-6)
    assert doc["refined"] is False and doc["batch_size"] == 1
    want = expected.prediction.instances
    assert len(doc["instances"]) == len(want) > 0
    assert_instance_boxes_agree([g["box_xyxy"] for g in doc["instances"]], [i.box_xyxy for i in want], pred.soft)
    for got, inst in zip(doc["instances"], want):  # every object of the mask, largest first
        assert got["area"] == pytest.approx(inst.area, abs=tie_fraction(pred.soft) * pred.soft.size)
        assert got["score"] == pytest.approx(inst.score, abs=1e-6)
    assert set(doc["timings"]) >= {"queue", "decode", "model", "encode", "total"}
    assert doc["mask_fraction"] == pytest.approx(float(pred.mask.mean()), abs=tie_fraction(pred.soft) + 1e-6)


def test_png_answers_chosen_by_parameter_or_accept_header(model, image) -> None:
    expected = single(model, image).prediction
    rs = call(create_app(model), post(image, headers={"Accept": "image/png"}), post(image, {"output": "soft"}),
              post(image, {"output": "cutout"}), post(image, {"output": "overlay"}))
    assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in rs)
    mask, soft, cutout, overlay = (decode_png(r.content) for r in rs)
    # four concurrent requests may share a forward pass: float rounding only (tests/agreement.py)
    assert_masks_agree(mask > 127, expected.mask, expected.soft, "mask")
    assert np.abs(soft.astype(int) - np.round(expected.soft * 255)).max() <= 1
    assert cutout.shape == (56, 72, 4)
    assert_masks_agree(cutout[..., 3] > 0, expected.mask, expected.soft, "cut-out alpha")
    assert overlay.shape == (56, 72, 3)
    box = [int(v) for v in rs[0].headers["x-found-box"].split(",")]
    assert_same_box(box, expected.box, expected.patch_probs, expected.mask.shape, expected.patch)
    assert "model;dur=" in rs[0].headers["server-timing"]


def test_json_can_embed_the_pngs(model, image) -> None:
    (r,) = call(create_app(model), post(image, {"include": "mask,cutout"}))
    images = r.json()["images"]
    assert set(images) == {"mask", "cutout"}
    mask = decode_png(base64.b64decode(images["mask"].split(",", 1)[1]))
    want = single(model, image).prediction
    assert_masks_agree(mask > 127, want.mask, want.soft)


def test_single_mode_per_request(model) -> None:
    data = png(noise_image(64, 64, seed=9))
    (r,) = call(create_app(model), post(data, {"mode": "single", "output": "mask"}))
    want = single(model, data, mode="single").prediction
    assert_masks_agree(decode_png(r.content) > 127, want.mask, want.soft)


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_result(model) -> None:
    inputs = [png(noise_image(64, 48, seed=s)) for s in range(6)]
    gated = GatedModel(model)
    app = create_app(gated, Settings(max_batch=4, max_wait_ms=200))

    async def go():
        async with asgi_client(app) as c:
            gated.gate.clear()  # hold the model: the requests queue up behind the first
            tasks = [asyncio.create_task(c.post("/v1/segment", content=d, params={"output": "mask"})) for d in inputs]
            while app.state.batcher.admitted < len(inputs) or app.state.batcher.on_the_way:
                await asyncio.sleep(0.01)
            gated.gate.set()
            return await asyncio.gather(*tasks)

    rs = asyncio.run(go())
    assert [r.status_code for r in rs] == [200] * 6
    sizes = [int(r.headers["x-found-batch-size"]) for r in rs]
    passes = gated.calls[1:]  # after the warm-up pass
    assert sum(passes) == 6 and 2 <= max(passes) <= 4 and len(passes) < 6, passes
    assert sorted(set(sizes)) == sorted(set(passes)), (sizes, passes)
    masks = [decode_png(r.content) > 127 for r in rs]
    own = [single(model, d).prediction.mask for d in inputs]
    for i, m in enumerate(masks):  # batched and alone agree (to float rounding); the others' masks do not
        agree = [float(np.mean(m == o)) for o in own]
        assert agree[i] >= 0.99 and agree[i] == max(agree), (i, agree)


def test_bad_uploads_get_4xx_with_the_cli_reason_and_the_server_keeps_serving(model, image, tiny, tmp_path: Path) -> None:
    bad = bad_uploads(image)
    over_limit = huge_header_png(12_000, 12_000)  # under Pillow's own guard, over the server's 50 Mpx
    rs = call(create_app(model), *(post(d) for d in bad.values()), post(over_limit), post(image))
    answers = dict(zip(bad, rs))
    assert rs[-1].status_code == 200
    assert answers["huge_header"].status_code == 413 and "decompression-bomb" in answers["huge_header"].json()["detail"]
    assert rs[-2].status_code == 413 and rs[-2].json()["detail"].startswith("image is 12000×12000 px (144.0 Mpx), over")
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in bad.items():
        (folder / f"{name}.png").write_bytes(data)
    run_cli(["segment", str(folder), "-o", str(tmp_path / "out"), "--report", str(tmp_path / "r.json"), *tiny.args()])
    cli = {Path(f["input"]).stem: f["reason"] for f in json.loads((tmp_path / "r.json").read_text())["failed"]}
    for name in ("empty", "truncated", "text", "html"):
        r = answers[name]
        assert r.status_code == 422, (name, r.text)
        assert r.json() == {"detail": cli[name]}, name


def test_upload_size_limit_gives_413_for_raw_and_multipart_bodies(model) -> None:
    big = png(noise_image(160, 160, seed=1))
    app = create_app(model, Settings(max_upload_bytes=len(big) - 1))
    raw, multi = call(app, post(big), dict(method="POST", url="/v1/segment", files={"file": ("a.png", big, "image/png")}))
    assert raw.status_code == 413 and "limit" in raw.json()["detail"]
    assert multi.status_code == 413


def test_pixel_limit_refuses_before_decoding(model) -> None:
    data = png(noise_image(100, 100))
    (r,) = call(create_app(model, Settings(max_pixels=9_999)), post(data))
    assert r.status_code == 413 and r.json()["detail"].startswith("image is 100×100 px")


def test_full_queue_answers_503_with_retry_after(model, image) -> None:
    gated = GatedModel(model)
    app = create_app(gated, Settings(queue_size=1, max_batch=1))

    async def go():
        async with asgi_client(app) as c:
            gated.gate.clear()
            first = asyncio.create_task(c.post("/v1/segment", content=image))
            while not app.state.batcher.admitted:
                await asyncio.sleep(0.01)
            second = await c.post("/v1/segment", content=image)
            gated.gate.set()
            return await first, second, await c.post("/v1/segment", content=image)

    first, second, third = asyncio.run(go())
    assert second.status_code == 503 and second.headers["retry-after"] == "1" and "busy" in second.json()["detail"]
    assert first.status_code == 200 and third.status_code == 200


def test_request_timeout_answers_503_and_the_server_recovers(model, image) -> None:
    gated = GatedModel(model)
    app = create_app(gated, Settings(timeout_s=0.5))

    async def go():
        async with asgi_client(app) as c:
            gated.gate.clear()
            late = await c.post("/v1/segment", content=image)
            gated.gate.set()
            return late, await c.post("/v1/segment", content=image)

    late, after = asyncio.run(go())
    assert late.status_code == 503 and "timed out" in late.json()["detail"] and "retry-after" in late.headers
    assert after.status_code == 200


def test_api_key_is_required_when_set(model, image) -> None:
    app = create_app(model, Settings(api_key="s3cret"))
    rs = call(app, post(image), post(image, headers={"Authorization": "Bearer wrong"}),
              post(image, headers={"Authorization": "Bearer s3cret"}), post(image, headers={"X-API-Key": "s3cret"}),
              dict(method="GET", url="/healthz"))
    assert [r.status_code for r in rs] == [401, 401, 200, 200, 200]
    assert "API key" in rs[0].json()["detail"] and rs[0].headers["www-authenticate"] == "Bearer"


def test_cors_is_off_by_default_and_on_for_listed_origins(model) -> None:
    preflight = dict(method="OPTIONS", url="/v1/segment", headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"})
    (off,) = call(create_app(model), preflight)
    (on,) = call(create_app(model, Settings(cors_origins=("https://a.example",))), preflight)
    assert "access-control-allow-origin" not in off.headers
    assert on.headers["access-control-allow-origin"] == "https://a.example"


def test_clients_cannot_name_server_paths(model, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(noise_image(32, 32)))
    rs = call(create_app(model), post(str(secret).encode()), post(str(secret).encode(), {"path": str(secret)}),
              dict(method="POST", url="/v1/segment", data={"file": str(secret)}, files={"other": ("x", b"x")}))
    assert [r.status_code for r in rs] == [422, 422, 422]
    assert rs[0].json()["detail"].startswith("not an image") and "'file' part" in rs[2].json()["detail"]


def test_errors_are_one_line_json(model, image) -> None:
    rs = call(create_app(model), post(image, {"mode": "nope"}), post(image, {"include": "bogus"}),
              dict(method="GET", url="/v1/segment"), dict(method="GET", url="/nowhere"))
    assert [r.status_code for r in rs] == [422, 422, 405, 404]
    for r in rs:
        assert isinstance(r.json()["detail"], str) and "\n" not in r.json()["detail"]


def test_page_and_docs_are_served_and_the_page_needs_nothing_external(model) -> None:
    rs = call(create_app(model), *(dict(method="GET", url=u) for u in ("/", "/static/app.js", "/static/app.css", "/openapi.json", "/docs")))
    assert [r.status_code for r in rs] == [200] * 5
    assert "default-src 'none'" in rs[0].headers["content-security-policy"]
    for r in rs[:3]:
        text = r.text.replace("http://www.w3.org/2000/svg", "")  # a namespace name, never fetched
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert '<label for="file">' in rs[0].text
    spec = rs[3].json()["paths"]["/v1/segment"]["post"]
    assert {"multipart/form-data", "image/*"} <= set(spec["requestBody"]["content"])


def test_cli_rejects_bad_server_options_in_one_line() -> None:
    r = run_cli(["serve", "--max-batch", "0"])
    assert r.code == 2 and r.err.strip().startswith("found: error:") and "--max-batch" in r.err and len(r.err.strip().splitlines()) == 1


def test_api_key_comes_from_the_option_or_the_environment(monkeypatch) -> None:
    from found.cli.main import build_parser
    from found.cli.serve import settings_from_args

    monkeypatch.setenv("FOUND_API_KEY", "from-env")
    assert settings_from_args(build_parser().parse_args(["serve"])).api_key == "from-env"
    assert settings_from_args(build_parser().parse_args(["serve", "--api-key", "given"])).api_key == "given"
    monkeypatch.delenv("FOUND_API_KEY")
    s = settings_from_args(build_parser().parse_args(["serve", "--max-upload-mb", "2", "--max-pixels", "4"]))
    assert s.api_key is None and s.max_upload_bytes == 2 << 20 and s.max_pixels == 4_000_000 and s.cors_origins == ()

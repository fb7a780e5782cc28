"""The inference engine (found.engine): inputs of every kind in, full-resolution results out, in
input order, errors as values, bounded memory, and clean early stops."""
from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import seeded_head, tiny_vit
from found import Found
from found.engine import Engine, ScaledPrediction, map_ahead, segment
from found.errors import FoundError, InferenceError, InputError
from found.io.images import read_image
from found.io.sinks import INTERRUPTED, ImageOutputs, write_results
from helpers import leftovers, noise_image


@pytest.fixture(scope="module")
def model() -> Found:
    return Found(tiny_vit(), seeded_head(96, seed=5, zero_bias=False), device="cpu")


def _png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _mixed_inputs(tmp_path: Path, photos) -> tuple[list[object], list[np.ndarray | None]]:
    """Paths, bytes, PIL images and arrays of several sizes, with bad inputs between them; and the
    pixels each good input decodes to (None for the bad ones)."""
    a, b, c = photos["astronaut"][:150, :200], photos["coffee"][:97, :131], photos["retina"][:64, :64]
    Image.fromarray(a).save(tmp_path / "a.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    inputs = [tmp_path / "a.png", _png_bytes(b), tmp_path / "broken.jpg", Image.fromarray(c), b"", a.copy(),
              tmp_path / "missing.png", np.zeros((4, 4, 3), np.uint8), str(tmp_path / "a.png"), np.zeros((8, 8), np.float32)]
    pixels = [a, b, None, c, None, a, None, None, a, None]
    return inputs, pixels


@pytest.mark.numerics
@pytest.mark.parametrize("workers,batch_size", [(0, 1), (3, 3)])
def test_results_come_in_input_order_with_errors_as_values(model, tmp_path, photos, workers, batch_size):
    inputs, pixels = _mixed_inputs(tmp_path, photos)
    results = list(Engine(model, batch_size=batch_size, workers=workers).run(inputs))
    assert [r.index for r in results] == list(range(len(inputs)))
    for r, src, px in zip(results, inputs, pixels):
        assert r.source is src
        if px is None:
            assert not r.ok and isinstance(r.error, InputError) and r.prediction is None
            assert "\n" not in str(r.error) and str(r.error).startswith(r.name)
            continue
        assert r.ok, r.error
        expected = model.predict(px)[0]  # one image alone: the engine ran the same float operations
        np.testing.assert_array_equal(r.prediction.mask, expected.mask)
        np.testing.assert_array_equal(r.prediction.soft, expected.soft)
        assert r.size == (px.shape[1], px.shape[0]) and np.array_equal(r.rgb(), px)
        assert (r.prediction.box is None and expected.box is None) or np.array_equal(r.prediction.box, expected.box)
    assert results[2].name == str(tmp_path / "broken.jpg") and results[4].name == "<bytes #4>"
    assert "smaller than one 8×8 patch" in str(results[7].error) and "uint8" in str(results[9].error)


@pytest.mark.numerics
def test_inputs_over_max_side_come_back_at_full_resolution(model, photos):
    big = photos["astronaut"]
    H, W = big.shape[:2]
    [r] = list(Engine(model, max_side=128, workers=0).run([big]))
    assert r.ok and r.downscaled and isinstance(r.prediction, ScaledPrediction)
    pred = r.prediction
    assert pred.mask.shape == pred.soft.shape == (H, W) and pred.soft.dtype == np.float32
    assert r.rgb().shape == big.shape and np.array_equal(r.rgb(), big)
    reduced = read_image(big, max_side=128).rgb()
    assert max(reduced.shape[:2]) == 128
    small = model.predict(reduced)[0]
    up = np.asarray(Image.fromarray(small.mask.astype(np.uint8) * 255).resize((W, H), Image.Resampling.BILINEAR)) > 127
    np.testing.assert_array_equal(pred.mask, up)
    if small.box is not None:
        s = W / reduced.shape[1]
        np.testing.assert_array_equal(pred.box, [min(W, round(v * s)) for v in small.box])
    assert pred.soft_uint8().shape == (H, W)
    assert abs(float(pred.soft.mean()) - float(small.soft.mean())) < 0.02


def test_a_failing_batch_is_retried_per_image_and_failures_are_values(model, monkeypatch, photos):
    real = Found.predict

    def predict(self, images, *a, **k):
        if len(images) > 1 or images[0].shape[0] == 97:
            raise RuntimeError("out of memory")
        return real(self, images, *a, **k)

    monkeypatch.setattr(Found, "predict", predict)
    ims = [photos["astronaut"][:64, :64], photos["coffee"][:97, :131], photos["retina"][:64, :64]]
    results = list(Engine(model, batch_size=3, workers=0).run(ims))
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, InferenceError) and "out of memory" in str(results[1].error)
    with pytest.raises(RuntimeError):
        list(Engine(model, batch_size=3, workers=0, debug=True).run(ims))


def test_read_ahead_is_bounded_and_memory_does_not_grow_over_1000_inputs(model):
    pulled = {"n": 0}
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(8)]

    def inputs():
        for i in range(1000):
            pulled["n"] += 1
            yield pictures[i % 8]

    engine = Engine(model, batch_size=4, workers=2)
    rss = {}
    for r in engine.run(inputs()):
        assert r.ok
        assert pulled["n"] - (r.index + 1) <= engine.read_ahead + engine.batch_size  # never more held than that
        if r.index in (199, 999):
            rss[r.index] = _rss_kib()
    assert pulled["n"] == 1000
    if rss.get(199) is not None:
        assert rss[999] - rss[199] < 32 * 1024, rss  # KiB: no growth with the number of inputs


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def test_closing_the_generator_stops_decoding_and_leaves_no_temporary_files(model, tmp_path):
    files = []
    for i in range(20):
        files.append(tmp_path / f"i{i:02d}.png")
        noise_image(24, 24, seed=i).save(files[-1])
    out = tmp_path / "out"
    out.mkdir()
    images = ImageOutputs(out, ["mask", "cutout"])
    gen = Engine(model, batch_size=2, workers=3).run(files)
    for r in gen:
        images.write(r, Path(r.name).stem)
        if r.index == 4:
            break
    gen.close()
    assert sorted(p.name for p in out.glob("*_mask.png")) == [f"i{i:02d}_mask.png" for i in range(5)]
    assert leftovers(out) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("found-read")]


def test_ctrl_c_during_a_run_keeps_finished_outputs_and_no_temporary_files(model, tmp_path, monkeypatch):
    files = []
    for i in range(10):
        files.append(tmp_path / f"i{i}.png")
        noise_image(24, 24, seed=i).save(files[-1])
    real, calls = Found.predict, {"n": 0}

    def predict(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Found, "predict", predict)
    out = tmp_path / "out"
    out.mkdir()
    images = ImageOutputs(out, ["mask", "soft"])
    writes = write_results(Engine(model, batch_size=2, workers=2).run(files), [f.stem for f in files], images.write,
                           threaded=True, max_pending=4)
    done = [o.key for o in writes]  # the sink hands outcomes back; it never calls its caller
    assert writes.stopped == INTERRUPTED
    assert done == [f.stem for f in files[:4]]  # two chunks predicted before Ctrl-C, all written
    assert len(list(out.glob("*.png"))) == 8 and leftovers(out) == []


def test_map_ahead_keeps_order_bounds_the_window_and_cancels_on_close():
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()
    started: list[int] = []

    def fn(x: int) -> int:
        with lock:
            started.append(x)
        if x % 4 == 3:
            raise InputError(f"bad {x}")
        if x == 10:
            raise ZeroDivisionError("a bug is raised, not yielded")
        return x * x

    for threads in (0, 3):
        pool = ThreadPoolExecutor(threads) if threads else None
        started.clear()
        try:
            gen = map_ahead(fn, range(20), pool, window=3)
            got = []
            for x, r in gen:
                with lock:
                    assert len(started) - (x + 1) <= (3 if pool else 0)
                got.append((x, r if isinstance(r, int) else str(r)))
                if x == 5:
                    break
            gen.close()
            assert got == [(0, 0), (1, 1), (2, 4), (3, "bad 3"), (4, 16), (5, 25)]
            with pytest.raises(ZeroDivisionError):
                list(map_ahead(fn, range(8, 14), pool, window=3))
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        assert max(x for x in started if x < 8) <= 5 + 3  # closing cancelled what had not started


def test_bad_engine_options_are_one_line_errors_naming_the_parameter(model):
    for kwargs, word in [({"mode": "all"}, "mode"), ({"batch_size": 0}, "batch_size"), ({"workers": -1}, "workers"),
                         ({"max_side": 4}, "max_side"), ({"edges": "sharp"}, "edges")]:
        with pytest.raises(FoundError, match=word):
            Engine(model, **kwargs)


def test_segment_is_the_one_call_entry_point(model, photos):
    a = photos["coffee"][:64, :96]
    [r] = list(segment([a], model, workers=0, mode="single"))
    np.testing.assert_array_equal(r.prediction.mask, model.predict(a, mode="single")[0].mask)


def _sharp_disc(W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured photo-like image with a sharp-edged disc of another colour, and the disc's mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 0.52 * H) ** 2 + (xx - 0.47 * W) ** 2 < (0.3 * H) ** 2
    img = np.where(disc[..., None], [200, 60, 40], [40, 90, 160]) + rng.normal(0, 8, (H, W, 3))
    return np.clip(img, 0, 255).astype(np.uint8), disc


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_cutouts_of_reduced_images_follow_the_full_size_edges():
    """A mask made at the working scale (here: the true disc on the 8-px patch grid of a 400-px image)
    brought to 1600×1200: the guided cut-out mask is closer to the true shape than the stretched mask;
    ``edges="bilinear"`` gives the stretched mask; a full-size prediction's cut-out is its mask."""
    from found.predictor import Prediction

    W, H = 1600, 1200
    img, disc = _sharp_disc(W, H)
    small = np.asarray(Image.fromarray(disc).resize((400, 300), Image.Resampling.BOX))
    soft = np.asarray(Image.fromarray(small.astype(np.float32)).resize((50, 38), Image.Resampling.BOX)
                      .resize((400, 300), Image.Resampling.BILINEAR))
    pred = Prediction(soft=soft, mask=soft > 0.5, patch_mask=np.zeros((38, 50), bool))
    guided, bilinear = ScaledPrediction(pred, (W, H)), ScaledPrediction(pred, (W, H), edges="bilinear")
    stretched = guided.mask
    assert np.array_equal(bilinear.cutout_mask(img), stretched)
    cut = guided.cutout_mask(img)
    assert cut.shape == (H, W) and cut.dtype == bool
    assert _iou(cut, disc) > _iou(stretched, disc) + 0.005
    assert (cut != disc).sum() < 0.5 * (stretched != disc).sum()
    assert np.array_equal(pred.cutout_mask(img), pred.mask)


def test_a_one_patch_thin_strip_falls_back_to_the_stretched_mask():
    """4000×10 is processed at 400×8 (the short side kept at one patch): the aspects differ, so the
    cut-out uses the stretched mask instead of failing."""
    from found.predictor import Prediction

    soft = np.linspace(0, 1, 400 * 8, dtype=np.float32).reshape(8, 400)
    pred = Prediction(soft=soft, mask=soft > 0.5, patch_mask=np.zeros((1, 50), bool))
    scaled = ScaledPrediction(pred, (4000, 10))
    rgb = np.zeros((10, 4000, 3), np.uint8)
    assert np.array_equal(scaled.cutout_mask(rgb), scaled.mask)


def test_the_working_scale_is_one_policy_for_every_surface():
    """One default, read by the engine, found segment, found serve, the Ray path and video (which
    runs the engine); found evaluate never reduces (the paper's protocol, tested in its tests)."""
    import inspect

    import found.ray
    from found.cli.main import build_parser
    from found.engine import DEFAULT_MAX_SIDE

    assert 224 <= DEFAULT_MAX_SIDE <= 640  # inside the regime the paper evaluated (224² training crops … COCO)
    assert inspect.signature(Engine).parameters["max_side"].default == DEFAULT_MAX_SIDE
    assert inspect.signature(found.ray.segment_with_ray).parameters["max_side"].default == DEFAULT_MAX_SIDE
    assert found.ray.RunConfig({}, "out").max_side == DEFAULT_MAX_SIDE
    parser = build_parser()
    for argv in (["segment", "photo.jpg", "-o", "out"], ["serve"]):
        args = parser.parse_args(argv)
        assert args.max_side == DEFAULT_MAX_SIDE and args.edges == "guided" and args.precision == "auto", argv
    assert parser.parse_args(["evaluate", "saliency", "--dataset", "ECSSD", "--data-dir", "d"]).precision == "fp32"


def test_the_library_entry_point_works_at_the_working_scale(model, photos):
    import found

    big = np.ascontiguousarray(np.tile(photos["coffee"][:240, :240], (1, 2, 1)))  # 480 px wide, over 400
    [r] = list(found.segment([big], model, workers=0))
    assert r.downscaled and r.image.size == (found.DEFAULT_MAX_SIDE, found.DEFAULT_MAX_SIDE // 2)
    assert r.prediction.mask.shape == big.shape[:2]
    [native] = list(found.segment([big], model, workers=0, max_side=0))
    assert not native.downscaled and np.array_equal(native.prediction.mask, model.predict(big)[0].mask)

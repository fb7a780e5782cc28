"""Videos through the engine (found.video and ``found segment`` on videos), on videos generated here with PyAV."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from agreement import assert_masks_agree
from conftest import require
from helpers import leftovers, noise_image, run_cli, tiny  # noqa: F401  (fixture)

av = require("av", "video")
pytestmark = pytest.mark.slow

from found import build_found  # noqa: E402
from found.engine import Engine  # noqa: E402
from found.video import (  # noqa: E402
    VideoDecodeError, VideoOutputs, VideoReader, input_kind, is_video, iter_video_frames, probe_video, segment_video,
)

MS = Fraction(1, 1000)


def make_video(path: Path, n: int = 30, w: int = 96, h: int = 64, *, codec: str = "libx264", pix: str = "yuv420p",
               pts: list[int] | None = None, audio: bool = False, fmt: str | None = None, options: dict | None = None) -> Path:
    """A red square moving over a fixed noisy background, ``n`` frames at 25 fps (or at ``pts`` ms)."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix
        s.codec_context.time_base = MS
        a = c.add_stream("aac", rate=16000) if audio else None
        bg = np.random.default_rng(0).integers(0, 80, (h, w, 3), dtype=np.uint8)
        for i in range(n):
            img = bg.copy()
            x = (i * 3) % max(1, w - w // 3)
            img[h // 4: h // 4 + h // 3, x: x + w // 3] = (230, 40, 30)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = (pts[i] if pts else i * 40), MS
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            t, total = 0, int(n * 0.04 * 16000)
            while t < total:
                samples = (np.sin(np.arange(t, t + 1024) / 10)[None] * 3000).astype(np.int16)
                fr = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
                fr.sample_rate, fr.pts, t = 16000, t, t + 1024
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def decoded(path: Path, fmt: str = "rgb24", decoder: str | None = None) -> tuple[list[np.ndarray], list[float], object]:
    """Every frame of ``path`` decoded on its own with plain PyAV: pixels, times (s), and the stream."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if decoder is None:
            frames = list(c.decode(s))
        else:  # e.g. libvpx-vp9: FFmpeg's own VP9 decoder drops the alpha plane
            ctx = av.CodecContext.create(decoder, "r")
            frames = [f for pkt in c.demux(s) for f in ctx.decode(pkt)]
        info = (s.average_rate, s.width, s.height, [st.type for st in c.streams], c.duration)
        return [f.to_ndarray(format=fmt) for f in frames], [float(f.pts * f.time_base) for f in frames], info


def assert_same_mask(mask: np.ndarray, ref) -> None:
    """``mask`` equals the reference prediction's mask at every pixel whose probability is not a
    float tie with the 0.5 threshold (batches of other sizes may round the last digit differently)."""
    assert_masks_agree(mask, ref.mask, ref.soft, max_ties=0.005)


@pytest.fixture(scope="module")
def model(tiny):  # noqa: F811
    return build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    vfr = [0, 33, 70, 100, 180, 200, 260, 261, 300, 400, 433, 470, 520, 560, 600, 700, 740, 760, 800, 850, 900, 990]
    return {
        "mp4": make_video(d / "clip.mp4", 30, audio=True),
        "odd": make_video(d / "odd.mkv", 24, 97, 65, codec="ffv1", pix="yuv444p"),
        "vfr": make_video(d / "vfr.mkv", len(vfr), 64, 48, codec="ffv1", pix="yuv420p", pts=vfr),
    }


# ---------------------------------------------------------------------------- detection and reading
def test_detection_is_by_content_and_images_stay_images(tmp_path, videos):
    renamed = tmp_path / "movie.dat"
    renamed.write_bytes(videos["mp4"].read_bytes())
    noise_image(40, 30).save(tmp_path / "still.png")
    frames = [noise_image(40, 30, seed=i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "notes.txt").write_text("just text\n")
    assert is_video(renamed) and input_kind(renamed) == "video"
    for name in ("still.png", "anim.gif", "notes.txt"):
        assert not is_video(tmp_path / name) and input_kind(tmp_path / name) == "image"


def test_frames_keep_their_timestamps_with_a_variable_frame_rate(videos):
    times = [f.time for f in iter_video_frames(videos["vfr"])]
    assert times == pytest.approx([t / 1000 for t in [0, 33, 70, 100, 180, 200, 260, 261, 300, 400, 433, 470, 520, 560,
                                                       600, 700, 740, 760, 800, 850, 900, 990]])
    info = probe_video(videos["odd"])
    assert (info.width, info.height, info.fps) == (97, 65, 25)


# ---------------------------------------------------------------------------- per-frame results
def test_mask_of_each_frame_equals_predict_on_that_frame_alone(model, videos):
    for key in ("mp4", "odd"):
        frames, times, _ = decoded(videos[key])
        results = list(segment_video(videos[key], Engine(model, batch_size=4)))
        assert [r.index for r in results] == list(range(len(frames)))
        assert [r.time for r in results] == pytest.approx(times)
        assert all(r.processed for r in results)
        for k in (0, len(frames) // 2, len(frames) - 1):
            alone = model.predict(frames[k], batch_size=1)[0]
            assert_same_mask(results[k].prediction.mask, alone)
            assert np.allclose(results[k].prediction.soft, alone.soft, atol=1e-5)
            assert np.array_equal(results[k].rgb(), frames[k])


def test_every_n_runs_the_model_on_one_frame_in_n_and_holds_its_mask(model, videos):
    results = list(segment_video(videos["mp4"], Engine(model, batch_size=4), every=4))
    assert len(results) == 30
    assert [r.index for r in results if r.processed] == list(range(0, 30, 4))
    for r in results:
        k = r.index - r.index % 4
        assert np.array_equal(r.prediction.mask, results[k].prediction.mask)
        assert r.result is results[k].result


def test_smoothing_is_a_moving_average_of_the_logits(model, videos):
    frames, _, _ = decoded(videos["mp4"])
    plain = list(segment_video(videos["mp4"], Engine(model, batch_size=4)))
    same = list(segment_video(videos["mp4"], Engine(model, batch_size=4), smooth=1.0))
    assert all(np.array_equal(a.prediction.mask, b.prediction.mask) for a, b in zip(plain, same))
    smooth = list(segment_video(videos["mp4"], Engine(model, batch_size=4), smooth=0.3))
    state = None
    h, w = frames[0].shape[:2]
    for k, frame in enumerate(frames):
        logits = model.patch_logits(model.input_batch([frame]))
        state = logits if state is None else 0.3 * logits + 0.7 * state
        soft = model.soft_from_logits(state)[0, :h, :w].numpy()
        assert np.allclose(smooth[k].prediction.soft, soft, atol=1e-4)
    assert not all(np.allclose(a.prediction.soft, b.prediction.soft) for a, b in zip(plain, smooth))


def test_decoding_is_streamed_not_read_whole(model, tmp_path, monkeypatch):
    path = make_video(tmp_path / "long.mkv", 150, 32, 32, codec="ffv1")
    decoded_count = []
    original = VideoReader.frames

    def counting(self):
        for fr in original(self):
            decoded_count.append(fr.index)
            yield fr

    monkeypatch.setattr(VideoReader, "frames", counting)
    it = segment_video(path, Engine(model, batch_size=2, workers=1))
    first = next(it)
    assert first.index == 0
    assert len(decoded_count) < 40  # read-ahead only, not the 150 frames
    it.close()


# ---------------------------------------------------------------------------- found segment on videos
def test_outputs_keep_frame_count_fps_size_timestamps_and_audio(tiny, videos, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    r = run_cli(["segment", str(videos["mp4"]), str(videos["odd"]), str(videos["vfr"]), "-o", str(out), "--all",
                 "--report", str(tmp_path / "r.json")] + tiny.args())
    assert r.code == 0, r.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] == 3 and report["failed"] == []
    assert any("video: 30 frames (30 processed)" in n["note"] for n in report["notes"])
    for key, stem in (("mp4", "clip"), ("odd", "odd"), ("vfr", "vfr")):
        frames, times, (rate, w, h, _, duration) = decoded(videos[key])
        for name in (f"{stem}_mask.mp4", f"{stem}_soft.mp4", f"{stem}_overlay.mp4", f"{stem}_cutout.webm"):
            got, got_times, (got_rate, gw, gh, kinds, got_duration) = decoded(out / name)
            assert len(got) == len(frames), name
            assert (gw, gh) == (w, h) and got[0].shape[:2] == (h, w), name
            assert got_times == pytest.approx(times, abs=1e-3), name
            if key != "vfr":
                assert got_rate == rate, name
        lines = [json.loads(x) for x in (out / f"{stem}_boxes.jsonl").read_text().splitlines()]
        assert [x["frame"] for x in lines] == list(range(len(frames)))
        assert [x["time"] for x in lines] == pytest.approx(times, abs=1e-6)
        assert all({"box_xyxy", "box_xywh", "score", "pts", "processed"} <= set(x) for x in lines)
    _, _, (_, _, _, kinds, in_duration) = decoded(videos["mp4"])
    _, _, (_, _, _, out_kinds, out_duration) = decoded(out / "clip_overlay.mp4")
    assert kinds == out_kinds == ["video", "audio"]
    assert abs(out_duration - in_duration) <= 0.05 * 1_000_000  # µs: within about one frame
    assert leftovers(tmp_path) == []


def test_mask_video_reads_back_as_the_masks_predicted(model, tiny, videos, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert run_cli(["segment", str(videos["odd"]), "-o", str(out), "--mask"] + tiny.args()).code == 0
    frames, _, _ = decoded(videos["odd"])
    masks, _, _ = decoded(out / "odd_mask.mp4", fmt="gray")
    assert len(masks) == len(frames)
    for frame, m in zip(frames, masks):
        assert set(np.unique(m)) <= {0, 255}
        assert_same_mask(m > 127, model.predict(frame)[0])


@pytest.mark.parametrize("codec,name,decoder", [("vp9", "odd_cutout.webm", "libvpx-vp9"), ("prores", "odd_cutout.mov", None)])
def test_cutout_has_a_real_alpha_channel(model, tiny, videos, tmp_path, codec, name, decoder):  # noqa: F811
    out = tmp_path / "out"
    r = run_cli(["segment", str(videos["odd"]), "-o", str(out), "--cutout", "--alpha-codec", codec] + tiny.args())
    assert r.code == 0, r.err
    frames, _, _ = decoded(videos["odd"])
    rgba, _, _ = decoded(out / name, fmt="rgba", decoder=decoder)
    assert len(rgba) == len(frames)
    for frame, got in zip(frames, rgba):
        mask = model.predict(frame)[0].mask
        alpha = got[..., 3] > 127
        assert 0 < mask.sum() < mask.size  # the test would be void with an empty or full mask
        if codec == "prores":  # alpha exact but for a few mid-grey edge pixels of this encoder (values near 128)
            firm = np.abs(got[..., 3].astype(int) - 128) > 64
            assert_same_mask(np.where(firm, alpha, mask), model.predict(frame)[0])
            assert (~firm).mean() < 0.01
        else:  # VP9 codes alpha lossily: edges may move
            assert (alpha == mask).mean() > 0.95


def test_frames_option_writes_png_frames_with_alpha(model, tiny, videos, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    r = run_cli(["segment", str(videos["vfr"]), "-o", str(out), "--cutout", "--mask", "--frames"] + tiny.args())
    assert r.code == 0, r.err
    from PIL import Image

    frames, _, _ = decoded(videos["vfr"])
    folder = out / "vfr_frames"
    assert len(list(folder.glob("*_cutout.png"))) == len(list(folder.glob("*_mask.png"))) == len(frames)
    for k in (0, len(frames) - 1):
        im = Image.open(folder / f"{k:06d}_cutout.png")
        assert im.mode == "RGBA"
        a = np.asarray(im)
        assert_same_mask(a[..., 3] > 0, model.predict(frames[k])[0])
        assert np.array_equal(a[..., :3], frames[k])
    assert leftovers(tmp_path) == []


def test_max_side_processes_frames_reduced_and_writes_full_size(model, tiny, videos, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    r = run_cli(["segment", str(videos["mp4"]), "-o", str(out), "--mask", "--max-side", "48",
                 "--report", str(tmp_path / "r.json")] + tiny.args())
    assert r.code == 0, r.err
    frames, _, _ = decoded(videos["mp4"])
    masks, _, _ = decoded(out / "clip_mask.mp4", fmt="gray")
    assert masks[0].shape == frames[0].shape[:2]
    ref = next(Engine(model, max_side=48).run([frames[5]]))
    assert ref.downscaled
    assert_same_mask(masks[5] > 127, ref.prediction)
    notes = [n["note"] for n in json.loads((tmp_path / "r.json").read_text())["notes"]]
    assert any("processed at 48×32" in n for n in notes)


def _truncated(src: Path, dst: Path, keep: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("ext,options", [("mkv", {}), ("mp4", {"movflags": "faststart"})])
def test_truncated_video_keeps_the_frames_decoded_and_reports_the_failure(model, tiny, tmp_path, ext, options):  # noqa: F811
    full = make_video(tmp_path / f"full.{ext}", 30, options=options)
    cut = _truncated(full, tmp_path / f"cut.{ext}")
    kept = []
    with pytest.raises(VideoDecodeError) as e:
        for fr in iter_video_frames(cut):
            kept.append(fr.rgb())
    n = e.value.frames
    assert n == len(kept)
    assert 0 < n < 30
    out = tmp_path / "out"
    r = run_cli(["segment", str(cut), "-o", str(out), "--mask", "--boxes", "--report", str(tmp_path / "r.json")] + tiny.args())
    assert r.code == 1
    failed = json.loads((tmp_path / "r.json").read_text())["failed"]
    assert len(failed) == 1 and failed[0]["input"] == str(cut) and f"{n} frames" in failed[0]["reason"]
    assert "\n" not in failed[0]["reason"]
    masks, _, _ = decoded(out / "cut_mask.mp4", fmt="gray")
    assert len(masks) == n == len((out / "cut_boxes.jsonl").read_text().splitlines())
    assert_same_mask(masks[-1] > 127, model.predict(kept[-1])[0])
    assert leftovers(tmp_path) == []


def test_bad_videos_get_one_line_errors_and_the_batch_goes_on(tiny, videos, tmp_path):  # noqa: F811
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.mp4").write_text("not a video at all\n")
    with av.open(str(bad / "sound.m4a"), "w") as c:
        a = c.add_stream("aac", rate=16000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for p in list(a.encode(fr)) + list(a.encode()):
            c.mux(p)
    with av.open(str(bad / "empty.avi"), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    noise_image(64, 48).save(bad / "pic.png")
    out = tmp_path / "out"
    args = [str(bad / "notes.mp4"), str(bad / "sound.m4a"), str(bad / "empty.avi"), str(videos["vfr"]), str(bad / "pic.png")]
    r = run_cli(["segment", *args, "-o", str(out), "--all", "--report", str(tmp_path / "r.json")] + tiny.args())
    assert r.code == 1
    report = json.loads((tmp_path / "r.json").read_text())
    reasons = {Path(f["input"]).name: f["reason"] for f in report["failed"]}
    assert reasons.keys() == {"notes.mp4", "sound.m4a", "empty.avi"}
    assert "no video stream" in reasons["sound.m4a"] and "audio" in reasons["sound.m4a"]
    assert "no frames" in reasons["empty.avi"]
    assert "not a video" in reasons["notes.mp4"]
    assert all("\n" not in why and "Traceback" not in why for why in reasons.values())
    assert report["ok"] == 2
    assert (out / "vfr_overlay.mp4").exists() and (out / "pic_mask.png").exists()
    assert not any(p.name.startswith(("notes", "sound", "empty")) for p in out.iterdir())
    assert leftovers(tmp_path) == []


def test_folder_scan_takes_videos_and_a_rerun_skips_them(tiny, videos, tmp_path):  # noqa: F811
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip.mkv").write_bytes(videos["vfr"].read_bytes())
    noise_image(40, 30).save(folder / "pic.jpg")
    out = folder / "out"  # the output folder inside the input folder: outputs must not become inputs
    base = ["segment", str(folder), "-r", "-o", str(out), "--mask", "--overlay", "--report", str(tmp_path / "r.json")] + tiny.args()
    assert run_cli(base).code == 0
    assert (out / "clip_mask.mp4").exists() and (out / "clip_overlay.mp4").exists() and (out / "pic_mask.png").exists()
    r = run_cli(base)
    assert r.code == 0
    assert json.loads((tmp_path / "r.json").read_text())["skipped"] == 2


def test_missing_encoder_is_a_one_line_error(tiny, videos, tmp_path, monkeypatch):  # noqa: F811
    import found.video as fv

    monkeypatch.setitem(fv.ALPHA_CODECS, "vp9", ("webm", ".webm", "no-such-encoder", "yuva420p", {}))
    r = run_cli(["segment", str(videos["vfr"]), "-o", str(tmp_path / "out"), "--cutout", "--mask",
                 "--report", str(tmp_path / "r.json")] + tiny.args())
    assert r.code == 1
    (failed,) = json.loads((tmp_path / "r.json").read_text())["failed"]
    assert "no no-such-encoder encoder" in failed["reason"]
    assert list((tmp_path / "out").iterdir()) == [] and leftovers(tmp_path) == []


def test_video_options_are_checked(tiny, videos, tmp_path):  # noqa: F811
    for opt in (["--every", "0"], ["--smooth", "0"], ["--smooth", "1.5"]):
        r = run_cli(["segment", str(videos["vfr"]), "-o", str(tmp_path / "out"), *opt] + tiny.args())
        assert r.code == 2 and "Traceback" not in r.err


def test_outputs_are_written_under_temporary_names_until_complete(model, videos, tmp_path, monkeypatch):
    from found.video.sink import FrameWriter

    seen = []
    original = FrameWriter.add

    def spy(self, fr):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        if fr.index == 10:
            raise OSError(28, "No space left on device")
        original(self, fr)

    monkeypatch.setattr(FrameWriter, "add", spy)
    outputs = VideoOutputs(tmp_path, ["mask", "overlay"], boxes=True)
    with pytest.raises(OSError), VideoReader(videos["mp4"]) as reader:
        outputs.write(reader.path, reader.info, segment_video(reader, Engine(model)), "clip")
    assert all(name.startswith(".") and name.endswith(".part") for names in seen for name in names)
    assert list(tmp_path.iterdir()) == []

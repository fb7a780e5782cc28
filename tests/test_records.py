"""One record and one renderer for every surface (docs/records.md): the same image gives the same
record keys and values in boxes.json, the video JSONL, the Parquet table, the HTTP answer and the
live answer; every output image is drawn by found.io.render; records round-trip as JSON lines and
run files (boxes.json, COCO) are assembled from records alone; io never imports the engine."""
from __future__ import annotations

import ast
import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require
from found.io.records import (INSTANCE_KEYS, RECORD_KEYS, SCHEMA_VERSION, RecordError, boxes_document, record_from_json,
                              record_to_json, result_record)
from helpers import noise_image, run_cli, tiny  # noqa: F401  (fixture)

MAX_SIDE = "64"  # the 96×80 image below is processed reduced: processed_size and the note are checked too
FLAGS = ["--precision", "fp32", "--max-side", MAX_SIDE, "--max-instances", "99"]


def shared(record: dict) -> dict:
    """The keys every surface writes, instances without their masks."""
    out = {k: record[k] for k in RECORD_KEYS}
    out["instances"] = [{k: i[k] for k in INSTANCE_KEYS} for i in record["instances"]]
    return out


@pytest.fixture()
def engine(tiny):  # noqa: F811
    from found import build_found
    from found.engine import Engine
    from found.model.instances import InstanceFilter

    model = build_found("auto", weights=str(tiny.vit), head=str(tiny.head), device="cpu", progress=False, precision="fp32")
    return Engine(model, batch_size=1, workers=0, max_side=int(MAX_SIDE), instance_filter=InstanceFilter(max_instances=99))


def lossless_video(path: Path, rgb: np.ndarray) -> Path:
    """A one-frame FFV1 video holding exactly ``rgb`` (planar RGB: decoded back bit for bit)."""
    av = require("av", "video")
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = rgb.shape[1], rgb.shape[0], "bgr0"
        for pkt in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def test_one_image_gives_the_same_record_on_every_surface(tiny, engine, tmp_path):  # noqa: F811
    pq = require("pyarrow.parquet", "ray")
    from found.ray import Item, LocalStore, ResultsTable, read_table, result_row
    from found.serve.answers import json_answer
    from found.serve.live import frame_answer

    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    noise_image(96, 80, seed=5).save(image)
    rgb = np.array(Image.open(image).convert("RGB"))
    video = lossless_video(tmp_path / "clip.mkv", rgb)
    r = run_cli(["segment", str(image), str(video), "-o", str(tmp_path / "out"), "--boxes", *FLAGS, *tiny.args()])
    assert r.code == 0, r.err
    boxes = json.loads((tmp_path / "out" / "boxes.json").read_text())
    (line,) = (tmp_path / "out" / "clip_boxes.jsonl").read_text().splitlines()
    frame = json.loads(line)

    result = next(iter(engine.run([image.read_bytes()])))
    table = ResultsTable(LocalStore(tmp_path / "ray", ["mask"]), "results.parquet")
    table.add([result_row(Item(str(image), str(image), "photo"), result)])
    table.close()
    (row,) = read_table(tmp_path / "ray" / "results.parquet").to_pylist()
    answer = json.loads(json_answer(result, {"model": 1.0}, 1))
    live = frame_answer(engine, image.read_bytes(), 1)

    (entry,) = boxes["images"]
    assert entry["file"] == row["file"] == str(image) and row["name"] == "photo.png"
    want = shared(entry)
    assert want["downscaled"] and want["processed_size"] == [64, 53] and want["instances"]
    for name, got in (("video JSONL", frame), ("Parquet", row), ("HTTP", answer), ("live", live)):
        assert list(shared(got)) == list(want), name
        assert shared(got) == want, name
    assert boxes["schema_version"] == frame["schema_version"] == row["schema_version"] == SCHEMA_VERSION
    assert answer["schema_version"] == live["schema_version"] == SCHEMA_VERSION
    assert pq.read_schema(tmp_path / "ray" / "results.parquet").metadata[b"found.schema_version"] == b"2"
    assert set(frame) - set(want) == {"schema_version", "frame", "time", "pts", "processed"}  # the video's extras
    assert set(answer) - set(want) == {"schema_version", "mask_fraction", "batch_size", "timings"}  # the server's
    assert set(live) - set(want) == {"schema_version", "frame", "mask_png", "ms"}  # the live socket's


def test_records_round_trip_as_json_lines_and_run_files_come_from_records_alone(tiny, tmp_path):  # noqa: F811
    require("pycocotools", "coco")
    from found.io.coco import coco_from_records

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i, (w, h) in enumerate([(64, 48), (96, 80)]):
        noise_image(w, h, seed=i).save(folder / f"a{i}.png")
    noise_image(40, 56, seed=7).save(folder / "sub" / "b.png")
    (folder / "bad.png").write_bytes(b"")
    out = tmp_path / "out"
    r = run_cli(["segment", str(folder), "-r", "-o", str(out), "--boxes", "--coco", str(out / "coco.json"), *FLAGS,
                 *tiny.args()])
    assert r.code == 1 and r.counts == (3, 0, 1, 0), r.err

    from found import build_found
    from found.engine import Engine
    from found.io.sources import collect_inputs
    from found.model.instances import InstanceFilter

    model = build_found("auto", weights=str(tiny.vit), head=str(tiny.head), device="cpu", progress=False, precision="fp32")
    engine = Engine(model, batch_size=8, workers=0, max_side=int(MAX_SIDE), instance_filter=InstanceFilter(max_instances=99))
    jobs, _ = collect_inputs([str(folder)], True)
    lines = [record_to_json(result_record(res, str(j.path), j.name, masks=True))
             for j, res in zip(jobs, engine.run(j.path for j in jobs)) if res.ok]
    assert all("\n" not in ln and json.loads(ln)["schema_version"] == SCHEMA_VERSION for ln in lines)
    records = [record_from_json(ln) for ln in lines]
    assert boxes_document(records, "multi", instances=True) == json.loads((out / "boxes.json").read_text())
    got, want = coco_from_records(records), json.loads((out / "coco.json").read_text())
    got["info"].pop("date_created"), want["info"].pop("date_created")
    assert got == want and [im["file_name"] for im in got["images"]] == ["a0.png", "a1.png", "sub/b.png"]
    for torn in (lines[0][: len(lines[0]) // 2], "", "[1, 2]", lines[0].replace('"schema_version":2', '"schema_version":1')):
        with pytest.raises(RecordError):
            record_from_json(torn)


def png_pixels(data: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(data)) as im:
        return im.mode, np.array(im)


def test_the_renderers_draw_every_output_of_every_surface(tiny, engine, tmp_path):  # noqa: F811
    """Files, HTTP answers and video frames hold exactly what found.io.render draws (files at Pillow's
    default PNG level, HTTP at level 1: the same pixels); the image's own alpha reaches its cut-out."""
    from found.io import render
    from found.serve.answers import PNG_LEVEL, result_png
    from found.video.probe import VideoInfo
    from found.video.reader import VideoFrame
    from found.video.segment import FrameResult
    from found.video.sink import VideoOutputs

    image = tmp_path / "rgba.png"
    rgba = np.array(noise_image(96, 80, seed=2).convert("RGBA"))
    rgba[..., 3] = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (80, 1))
    Image.fromarray(rgba, "RGBA").save(image)
    r = run_cli(["segment", str(image), "-o", str(tmp_path / "out"), "--all", *FLAGS, *tiny.args()])
    assert r.code == 0, r.err
    result = next(iter(engine.run([image.read_bytes()])))
    drawn = render.render_result(render.KINDS, result)
    info = VideoInfo(96, 80, Fraction(25), Fraction(1, 25), "ffv1", 1, 0.04, None)
    frame = VideoFrame(0, 0, 0.0, 1, _rgb=rgba[..., :3].copy(), _size=(96, 80))
    VideoOutputs(tmp_path / "video", list(render.KINDS), frames=True).write(image, info, [FrameResult(frame, result, True)], "v")
    for kind in render.KINDS:
        on_disk = (tmp_path / "out" / f"rgba_{kind}.png").read_bytes()
        assert on_disk == render.png_bytes(drawn[kind]), kind
        assert result_png(kind, result) == render.png_bytes(drawn[kind], PNG_LEVEL), kind
        (mode, pixels), (http_mode, http_pixels) = png_pixels(on_disk), png_pixels(result_png(kind, result))
        assert mode == http_mode and np.array_equal(pixels, http_pixels), kind
        video_frame = (tmp_path / "video" / "v_frames" / f"000000_{kind}.png").read_bytes()
        want = render.render(kind, result.prediction, rgba[..., :3])  # a video frame has no alpha of its own
        assert video_frame == render.png_bytes(want), kind
    cut = png_pixels((tmp_path / "out" / "rgba_cutout.png").read_bytes())[1]
    assert cut.shape == (80, 96, 4) and np.all(cut[..., 3] <= rgba[..., 3])  # never more opaque than the file


def test_io_never_imports_the_engine_or_model_running_code_at_import_time():
    package = Path(__file__).resolve().parents[1] / "found" / "io"
    forbidden = ("engine", "predictor", "runtime", "hub", "export", "serve", "video", "ray", "cli", "model.backbone",
                 "model.head", "model.background", "torch")
    bad = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: imports inside functions run on first use
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                mod = n.lstrip(".").removeprefix("found.")
                if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                    bad.append(f"{path.name}: {n}")
    assert not bad, bad

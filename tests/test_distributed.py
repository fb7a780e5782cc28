"""found.ray on a local Ray instance (2 CPUs): the same outputs as ``found segment``, a killed
actor's work redone without loss or duplicates, reruns that skip, bad inputs as error rows.

One Ray instance serves the whole module (Ray starts slowly); each run starts its own actor pool.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import require
from helpers import Tiny, noise_image, run_cli, write_tiny_checkpoint

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = require("ray", "ray")
pq = require("pyarrow.parquet", "ray")

from found.ray import SegmentActor, collect, read_table, segment_with_ray  # noqa: E402

pytestmark = pytest.mark.slow
KINDS = ["mask", "soft", "cutout", "overlay"]
BATCH, MAX_SIDE, N_IMAGES = 4, 64, 50


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Tiny:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ray_ckpt"))


def model_options(t: Tiny) -> dict:
    return {"model": "auto", "weights": str(t.vit), "head": str(t.head), "device": "cpu"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """~50 noise images of a few sizes; some over --max-side (processed reduced, written full size)."""
    d = tmp_path_factory.mktemp("ray_images")
    sizes = [(64, 48), (72, 56), (56, 64), (96, 80)]
    for i in range(N_IMAGES):
        noise_image(*sizes[i % len(sizes)], seed=i).save(d / f"img{i:02d}.png")
    return d


@pytest.fixture(scope="module")
def reference(images, tiny_model, tmp_path_factory) -> Path:
    """What the single-machine engine writes (``found segment``, same batch size and max side), with
    one torch thread like each actor (``cpus_per_worker=1``): torch's CPU kernels sum in an order
    that depends on the thread count (~1e-7), which may flip a soft-mask pixel's rounding."""
    import torch

    out = tmp_path_factory.mktemp("ray_reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = run_cli(["segment", str(images), "-o", str(out), "--all", "--batch-size", str(BATCH),
                     "--max-side", str(MAX_SIDE), "--coco", str(out / "coco.json"), *tiny_model.args()])
    finally:
        torch.set_num_threads(threads)
    assert r.code == 0, r.err
    return out


def run_ray(inputs, out, t: Tiny, **kw):
    opts = dict(workers=2, batch_size=BATCH, kinds=KINDS, max_side=MAX_SIDE, chunks_per_task=1)
    return segment_with_ray([str(i) for i in inputs], out, model_options(t), **{**opts, **kw})


def image_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".png"}


def assert_same_as_reference(out: Path, reference: Path) -> None:
    ref = image_files(reference)
    assert len(ref) == N_IMAGES * len(KINDS)
    got = image_files(out)
    assert sorted(got) == sorted(ref)
    different = [name for name in ref if got[name] != ref[name]]
    assert not different, f"{len(different)} outputs differ from found segment's, e.g. {different[:3]}"
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


@pytest.fixture(scope="module")
def first_run(local_ray, images, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray_out")
    return out, run_ray([images], out, tiny_model, coco=out / "coco.json")


def test_outputs_are_byte_identical_to_found_segment(first_run, reference):
    out, summary = first_run
    assert (summary.ok, summary.skipped, summary.failures) == (N_IMAGES, 0, [])
    assert summary.rows_received == N_IMAGES
    assert_same_as_reference(out, reference)


def test_table_has_one_row_per_input_matching_boxes_json(first_run, reference):
    out, _ = first_run
    rows = read_table(out / "results.parquet").to_pylist()
    boxes = {e["file"]: e for e in json.loads((reference / "boxes.json").read_text())["images"]}
    assert sorted(r["file"] for r in rows) == sorted(boxes)
    for r in rows:
        b = boxes[r["file"]]
        assert r["error"] is None and r["schema_version"] == 2
        assert {k: r[k] for k in b if k != "instances"} == {k: v for k, v in b.items() if k != "instances"}  # one record
        assert [{k: i[k] for k in ("box_xyxy", "box_xywh", "area", "score")} for i in r["instances"]] == b["instances"]
        assert r["output"] == Path(r["file"]).stem
    assert any(r["downscaled"] for r in rows)  # the 96×80 images went through the reduced path


def coco_without_date(path: Path) -> dict:
    doc = json.loads(path.read_text())
    doc["info"].pop("date_created")
    return doc


def test_coco_file_equals_found_segments(first_run, reference):
    out, _ = first_run
    got, want = coco_without_date(out / "coco.json"), coco_without_date(reference / "coco.json")
    assert len(got["images"]) == N_IMAGES and got["annotations"]
    assert got == want  # assembled from the table's rows at the end, by the same builder


def test_cli_ray_coco_boxes_and_instance_filters_match_a_local_run(local_ray, images, tiny_model, reference, tmp_path):
    import shutil

    import torch

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2 * BATCH):
        shutil.copy(images / f"img{i:02d}.png", folder)
    flags = ["--mask", "--boxes", "--min-area", "0.03", "--max-instances", "1", "--batch-size", str(BATCH),
             "--max-side", str(MAX_SIDE), *tiny_model.args()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each actor (see `reference`)
    try:
        local = run_cli(["segment", str(folder), "-o", str(tmp_path / "local"), "--coco", str(tmp_path / "local.json"), *flags])
    finally:
        torch.set_num_threads(threads)
    assert local.code == 0, local.err
    r = run_cli(["segment", "--ray", "--workers", "2", str(folder), "-o", str(tmp_path / "ray"),
                 "--coco", str(tmp_path / "ray.json"), *flags])
    assert r.code == 0, r.err
    got, want = coco_without_date(tmp_path / "ray.json"), coco_without_date(tmp_path / "local.json")
    assert got == want and len(got["images"]) == 2 * BATCH
    ray_boxes, local_boxes = (json.loads((tmp_path / d / "boxes.json").read_text()) for d in ("ray", "local"))
    assert ray_boxes == local_boxes and len(ray_boxes["images"]) == 2 * BATCH  # built from the table's rows
    sizes = {im["id"]: im["width"] * im["height"] for im in got["images"]}
    per_image = [sum(a["image_id"] == i for a in got["annotations"]) for i in sizes]
    assert max(per_image) == 1 and all(a["area"] >= 0.03 * sizes[a["image_id"]] for a in got["annotations"])
    unfiltered = coco_without_date(reference / "coco.json")
    names = {im["id"] for im in unfiltered["images"] if im["file_name"] in {p.name for p in folder.iterdir()}}
    assert sum(a["image_id"] in names for a in unfiltered["annotations"]) > len(got["annotations"])  # the filters dropped objects
    rows = read_table(tmp_path / "ray" / "results.parquet").to_pylist()
    assert sum(len(row["instances"]) for row in rows) == len(got["annotations"])  # the table's rows are filtered too


def test_rerun_skips_everything_and_redoes_only_missing_outputs(first_run, images, tiny_model, reference):
    out, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_ray([images], out, tiny_model)
    assert (again.ok, again.skipped, again.rows_received) == (0, N_IMAGES, 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before and p.suffix == ".png"} == \
           {k: v for k, v in before.items() if k.endswith(".png")}
    for name in ["img03_mask.png", "img17_overlay.png", "img40_soft.png"]:  # lost outputs: those inputs are redone
        (out / name).unlink()
    resumed = run_ray([images], out, tiny_model)
    assert (resumed.ok, resumed.skipped, resumed.rows_received) == (3, N_IMAGES - 3, 3)
    assert_same_as_reference(out, reference)
    assert len(read_table(out / "results.parquet")) == N_IMAGES


class KillOnce(SegmentActor):
    """An actor that kills itself (ray.kill) in the middle of a chunk, half of its outputs written,
    the first time any actor reaches its second chunk; the marker file keeps restarts from doing it again."""

    marker = ""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.writes = 0

    def write(self, result, stem) -> None:
        super().write(result, stem)
        self.writes += 1
        if self.writes == BATCH + 2:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            ray.kill(ray.get_runtime_context().current_actor, no_restart=False)
            import time

            time.sleep(60)  # never reached: the process is gone


def test_killed_actor_gives_complete_identical_results_without_duplicates(local_ray, images, tiny_model, reference,
                                                                           tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test module is not importable on workers
    KillOnce.marker = str(tmp_path / "killed")
    out = tmp_path / "out"
    summary = run_ray([images], out, tiny_model, actor_class=KillOnce)
    pid = int(Path(KillOnce.marker).read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the actor really died mid-run
    assert (summary.ok, summary.failures) == (N_IMAGES, [])
    assert summary.rows_received == N_IMAGES  # the dead task's rows were dropped, the retry's kept: no duplicates
    assert_same_as_reference(out, reference)
    rows = read_table(out / "results.parquet").to_pylist()
    assert len(rows) == len({r["file"] for r in rows}) == N_IMAGES


def test_bad_inputs_are_error_rows_and_the_cli_exits_1(local_ray, images, tiny_model, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image")
    good = (images / "img00.png").read_bytes()
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    (bad / "ok.png").write_bytes(good)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a list of paths and URIs\n{(images / 'img01.png').as_uri()}\nmissing.png\n"
                       f"{(tmp_path / 'nowhere.png').as_uri()}\n")
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    r = run_cli(["segment", "--ray", "--workers", "2", str(bad), str(listing), str(tmp_path / "no_such_folder"),
                 "-o", out.as_uri(), "--batch-size", "2", "--report", str(report), *tiny_model.args()])
    assert r.code == 1, r.err
    rows = {Path(r_["file"]).name: r_ for r_ in read_table(out / "results.parquet").to_pylist()}
    assert set(rows) == {"empty.png", "text.jpg", "truncated.png", "ok.png", "img01.png", "missing.png",
                         "nowhere.png", "no_such_folder"}
    assert (rows["ok.png"]["error"], rows["ok.png"]["width"], rows["ok.png"]["height"]) == (None, 64, 48)
    assert (rows["img01.png"]["error"], rows["img01.png"]["width"], rows["img01.png"]["height"]) == (None, 72, 56)
    assert (out / "ok_mask.png").is_file() and (out / "img01_mask.png").is_file()
    assert "empty" in rows["empty.png"]["error"]
    assert "not an image" in rows["text.jpg"]["error"]
    assert rows["truncated.png"]["error"]
    assert "no such file" in rows["missing.png"]["error"]
    assert "cannot read" in rows["nowhere.png"]["error"]
    assert "no such file or folder" in rows["no_such_folder"]["error"]
    assert json.loads(report.read_text())["ok"] == 2
    assert "6 failed" in r.err and "Traceback" not in r.err


def test_input_lists_txt_csv_parquet_and_uri_folders(images, tmp_path):
    import pyarrow as pa

    names = ["img00.png", "img01.png", "img02.png"]
    (tmp_path / "a.txt").write_text("\n".join(str(images / n) for n in names) + "\n")
    (tmp_path / "b.csv").write_text("path,label\n" + "".join(f"{images / n},x\n" for n in names))
    pq.write_table(pa.table({"path": [str(images / n) for n in names]}), tmp_path / "c.parquet")
    for lst in ("a.txt", "b.csv", "c.parquet"):
        items, failures = collect([str(tmp_path / lst)])
        assert ([Path(i.path).name for i in items], failures) == (names, [])
    items, failures = collect([images.as_uri()])  # a folder URI (file:// here, s3:// on a cluster)
    assert failures == [] and len(items) == N_IMAGES and items[0].path.startswith("file:///")
    items, failures = collect([images.as_uri() + "/img1*.png"])
    assert [i.stem for i in items] == [f"img{i}" for i in range(10, 20)]
    items, _ = collect([str(images / "img00.png"), str(tmp_path / "a.txt")])  # the same file twice: once
    assert [i.stem for i in items] == ["img00", "img01", "img02"]


def test_instances_in_a_row_are_the_predictions_objects_as_coco_rle(photos, tiny_model):
    import numpy as np

    from found import build_found
    from found.engine import Engine
    from found.io.coco import decode_rle
    from found.ray import Item, result_row

    model = build_found("auto", weights=tiny_model.vit, head=tiny_model.head, device="cpu", progress=False)
    result = next(iter(Engine(model, workers=0).run([photos["coffee"]])))
    pred = result.prediction
    row = result_row(Item("/x/coffee.png", "/x/coffee.png", "coffee"), result)
    assert (row["file"], row["name"], row["output"]) == ("/x/coffee.png", "coffee.png", "coffee")
    assert len(row["instances"]) == len(pred.instances) > 0
    for a, inst in zip(row["instances"], pred.instances):
        assert np.array_equal(decode_rle(a["segmentation"]), inst.full_mask())
        assert a["box_xywh"] == list(inst.box_xywh) and a["box_xyxy"] == list(inst.box_xyxy) and a["area"] == inst.area


def test_table_parts_saved_during_a_run_survive_a_crashed_driver(tmp_path, monkeypatch):
    import found.ray as dist
    import found.ray.table

    monkeypatch.setattr(found.ray.table, "FLUSH_ROWS", 2)
    store = dist.LocalStore(tmp_path, ["mask"])
    rows = [dist.result_row(dist.Item(f"/x/{i}.png", f"/x/{i}.png", str(i)), None, None) for i in range(3)]
    crashed = dist.ResultsTable(store, "results.parquet")
    for r in rows:
        crashed.add([r])  # two rows saved as a part, the third still in memory when the driver dies
    assert len(list((tmp_path / "results.parquet.parts").iterdir())) == 1
    resumed = dist.ResultsTable(store, "results.parquet")
    assert sorted(resumed.old_ok) == ["/x/0.png", "/x/1.png"]  # the lost row's input will be redone
    resumed.add([rows[2], {**rows[0], "error": "not an image"}])  # a newer row replaces the old one
    resumed.close()
    table = {r["file"]: r for r in read_table(tmp_path / "results.parquet").to_pylist()}
    assert sorted(table) == ["/x/0.png", "/x/1.png", "/x/2.png"] and table["/x/0.png"]["error"] == "not an image"
    assert not (tmp_path / "results.parquet.parts").exists()


def test_a_table_of_schema_version_1_is_not_resumed_from(tmp_path):
    import pyarrow as pa

    import found.ray as dist

    old = pa.table({"path": ["/x/0.png"], "output": ["0"], "box": [[0, 0, 4, 4]], "error": pa.array([None], pa.string())})
    pq.write_table(old, tmp_path / "results.parquet")
    table = dist.ResultsTable(dist.LocalStore(tmp_path, ["mask"]), "results.parquet")
    assert table.rows == {} and table.old_ok == set()  # its inputs are redone, the table rewritten in version 2


@pytest.mark.parametrize("extra, words", [(["--batch-size", "0"], "--batch-size"), (["--workers", "0"], "at least 1"),
                                          (["--model", "nope"], "nope"), (["--coco", "s3://b/c.json"], "--coco"),
                                          (["--min-score", "1.5"], "--min-score"), (["--onnx", "m.onnx"], "--onnx")])
def test_cli_ray_usage_errors_are_one_line_exit_2(tmp_path, extra, words):
    r = run_cli(["segment", str(tmp_path), "-o", str(tmp_path / "out"), "--ray", *extra])
    assert r.code == 2 and words in r.err and "Traceback" not in r.err
    assert not (tmp_path / "out").exists()

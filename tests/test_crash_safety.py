"""Crash safety of ``found segment`` (#27): a real subprocess is killed with SIGKILL at a chosen point
(the harness in tests/crash/sitecustomize.py, ``FOUND_CRASH_AT``) or after its k-th output appears,
then run again to completion. The rerun processes only the inputs without a complete record and
outputs, its outputs and run files equal an uninterrupted run's byte for byte, and no temporary
file is left anywhere."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import require
from found.io.journal import JOURNAL_FILE, read_journal
from helpers import FOUND_COMMAND, leftovers, noise_image, tiny  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
CRASH = Path(__file__).resolve().parent / "crash"
N_IMAGES = 12
SUFFIXES = ("_mask.png", "_soft.png", "_cutout.png", "_overlay.png")
TIMEOUT = 120  # seconds, for any one subprocess (a run takes a few)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """12 small images of three sizes (so batches mix sizes)."""
    require("pycocotools", "coco")
    d = tmp_path_factory.mktemp("crash_in")
    for i in range(N_IMAGES):
        noise_image(32 + 8 * (i % 3), 24 + 4 * (i % 2), seed=i).save(d / f"img{i:02d}.png")
    return d


def _env(crash: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FOUND_CRASH_AT"}
    env["PYTHONPATH"] = os.pathsep.join([str(CRASH), str(REPO)])
    if crash:
        env["FOUND_CRASH_AT"] = crash
    return env


def _command(inputs: list[Path], out: Path, tiny, extra: tuple[str, ...] = ()) -> list[str]:  # noqa: F811
    return [*FOUND_COMMAND, "segment", *map(str, inputs), "-o", str(out), "--all", "--boxes", "--coco",
            str(out / "coco.json"), "--batch-size", "4", "--report", str(out.parent / "report.json"), *tiny.args(), *extra]


def _segment(inputs: list[Path], out: Path, tiny, crash: str | None = None,  # noqa: F811
             extra: tuple[str, ...] = ()) -> tuple[int, dict | None, str]:
    """One ``found segment`` subprocess: exit status (negative: killed by that signal), report, stderr."""
    report = out.parent / "report.json"
    report.unlink(missing_ok=True)
    p = subprocess.run(_command(inputs, out, tiny, extra), env=_env(crash), capture_output=True, text=True,
                       timeout=TIMEOUT)
    return p.returncode, json.loads(report.read_text()) if report.is_file() else None, p.stderr


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every final file under ``out`` (the journal aside) → its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != JOURNAL_FILE}


def _temporaries(out: Path) -> int:
    return sum(1 for p in out.rglob(".found-tmp.*"))


def _finished(out: Path, suffixes: tuple[str, ...] = SUFFIXES) -> set[str]:
    """Inputs with a complete journal record and all their outputs: what a rerun must skip."""
    return {k for k in read_journal(out / JOURNAL_FILE).records
            if all((out / (Path(k).stem + s)).exists() for s in suffixes)}


@pytest.fixture(scope="module")
def reference(folder, tiny, tmp_path_factory) -> dict[str, bytes]:  # noqa: F811
    """The outputs and run files of an uninterrupted run."""
    out = tmp_path_factory.mktemp("crash_ref") / "out"
    code, report, err = _segment([folder], out, tiny)
    assert code == 0 and report["ok"] == N_IMAGES, err
    snap = _snapshot(out)
    assert len(snap) == 4 * N_IMAGES + 2 and leftovers(out) == []
    return snap


def _resume_and_check(folder: Path, out: Path, tiny, reference: dict[str, bytes]) -> dict:  # noqa: F811
    """Rerun after a kill; the rerun processes exactly the unfinished inputs and ends equal to the reference."""
    done, stale = _finished(out), _temporaries(out)
    code, report, err = _segment([folder], out, tiny)
    assert code == 0, err
    assert (report["ok"], report["skipped"]) == (N_IMAGES - len(done), len(done)), (report, sorted(done))
    assert report["temporaries_removed"] == stale
    assert _snapshot(out) == reference
    assert leftovers(out) == [] and _temporaries(out) == 0
    return report


@pytest.mark.parametrize("point,workers,finished", [
    ("image-write:1", "2", 0),          # before the first write
    ("image-write:6", "0", 5),          # mid-batch (batches of 4), writes in turn: exactly 5 finished
    ("image-write:7", "2", None),       # mid-batch, writing behind the model
    ("image-written:5", "0", 4),        # outputs of the 5th committed, its record not yet written
    ("group-commit:3", "0", 2),         # between two renames of the 3rd image's outputs
    ("journal-append:4", "0", 3),       # before the 4th record
    ("journal-torn:9", "0", 8),         # the 9th record torn in half
    ("replace=boxes.json:1", "2", 12),  # while the run file is written: every input done
    ("replace=coco.json:1", "0", 12),
])
def test_a_killed_run_resumes_with_only_the_missing_inputs(folder, tiny, reference, tmp_path, point, workers,  # noqa: F811
                                                            finished):
    out = tmp_path / "out"
    code, _, err = _segment([folder], out, tiny, crash=point, extra=("--workers", workers))
    assert code == -signal.SIGKILL, err
    if finished is not None:
        assert len(_finished(out)) == finished
    if point.startswith("group-commit"):
        assert _temporaries(out) > 0  # the mixed set: some outputs renamed, the others still temporary
    _resume_and_check(folder, out, tiny, reference)


def test_a_run_killed_after_its_third_output_resumes(folder, tiny, reference, tmp_path):  # noqa: F811
    """kill -9 from outside, by time: as soon as the third image's overlay exists."""
    out = tmp_path / "out"
    proc = subprocess.Popen(_command([folder], out, tiny), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if len(list(out.glob("*_overlay.png"))) >= 3:
                break
            time.sleep(0.002)
        proc.kill()
    finally:
        proc.wait(timeout=TIMEOUT)
    _resume_and_check(folder, out, tiny, reference)


def test_an_interrupted_run_still_writes_its_run_files_from_the_journal(folder, tiny, reference, tmp_path):  # noqa: F811
    """Ctrl-C: the run stops, and boxes.json / the COCO file hold exactly the finished inputs."""
    out = tmp_path / "out"
    proc = subprocess.Popen(_command([folder], out, tiny, ("--workers", "0")), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and len(list(out.glob("*_overlay.png"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    done = _finished(out)
    boxes = json.loads((out / "boxes.json").read_text())
    coco = json.loads((out / "coco.json").read_text())
    assert sorted(e["file"] for e in boxes["images"]) == sorted(done) == sorted(i["path"] for i in coco["images"])
    _resume_and_check(folder, out, tiny, reference)


def test_a_rerun_with_nothing_to_do_skips_everything_and_keeps_the_run_files(folder, tiny, reference, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert _segment([folder], out, tiny)[0] == 0
    (out / "boxes.json").unlink()  # e.g. lost with a kill while it was written
    code, report, err = _segment([folder], out, tiny)
    assert code == 0 and (report["ok"], report["skipped"]) == (0, N_IMAGES), err
    assert _snapshot(out) == reference


def test_other_settings_are_refused_and_overwrite_starts_afresh(folder, tiny, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert _segment([folder], out, tiny, crash="image-write:4")[0] == -signal.SIGKILL
    code, report, err = _segment([folder], out, tiny, extra=("--mode", "single"))
    assert code == 2 and report is None
    assert len(err.strip().splitlines()) == 1 and "--overwrite" in err and "--mode" in err and "Traceback" not in err
    code, report, err = _segment([folder], out, tiny, extra=("--mode", "single", "--overwrite"))
    assert code == 0 and (report["ok"], report["skipped"]) == (N_IMAGES, 0), err
    assert read_journal(out / JOURNAL_FILE).options["mode"] == "single"
    assert json.loads((out / "boxes.json").read_text())["mode"] == "single"


@pytest.mark.slow
def test_kill_points_chosen_by_hypothesis(folder, tiny, reference):  # noqa: F811
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=4, deadline=None, derandomize=True, database=None)
    @hypothesis.given(point=st.sampled_from(["image-write", "image-written", "group-commit", "journal-append",
                                             "journal-torn"]),
                      n=st.integers(1, N_IMAGES), workers=st.sampled_from(["0", "2"]))
    def run(point: str, n: int, workers: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            code, _, err = _segment([folder], out, tiny, crash=f"{point}:{n}", extra=("--workers", workers))
            assert code == -signal.SIGKILL, err
            _resume_and_check(folder, out, tiny, reference)

    run()


# ---------------------------------------------------------------------------- videos
def _video(path: Path, n: int, seed: int) -> Path:
    """A small lossless video: a red square moving over noise."""
    import numpy as np

    av = require("av", "video")
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv444p"
        bg = np.random.default_rng(seed).integers(0, 80, (48, 64, 3), dtype=np.uint8)
        for i in range(n):
            img = bg.copy()
            img[12:28, 2 * i: 2 * i + 20] = (230, 40, 30)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


VIDEO_SUFFIXES = ("_mask.mp4", "_soft.mp4", "_cutout.webm", "_overlay.mp4", "_boxes.jsonl")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("crash_videos")
    return [_video(d / "a.mkv", 12, 1), _video(d / "b.mkv", 12, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("point,finished", [("video-frame:18", 1),   # during the second video's frames
                                            ("group-commit:2", 1),   # between the renames of its outputs
                                            ("journal-append:2", 1)])  # committed, its record not yet written
def test_a_killed_video_run_redoes_only_the_unfinished_video(clips, tiny, tmp_path, point, finished):  # noqa: F811
    ref = tmp_path / "ref"
    code, report, err = _segment(clips, ref, tiny, extra=("--workers", "0"))
    assert code == 0 and report["ok"] == 2, err
    out = tmp_path / "out"
    code, _, err = _segment(clips, out, tiny, crash=point, extra=("--workers", "0"))
    assert code == -signal.SIGKILL, err
    assert _finished(out, VIDEO_SUFFIXES) == {str(clips[0])}
    if point.startswith("video-frame"):  # nothing of the unfinished video under a final name
        assert not [p for p in out.iterdir() if p.name.startswith("b_")]
    stale = _temporaries(out)
    code, report, err = _segment(clips, out, tiny, extra=("--workers", "0"))
    assert code == 0 and (report["ok"], report["skipped"]) == (2 - finished, finished), err
    assert report["temporaries_removed"] == stale
    assert _snapshot(out) == _snapshot(ref) and leftovers(out) == [] and _temporaries(out) == 0

"""CLI behaviour on failure: batches go on, a summary ends the run, exit codes 0/1/2, no traceback
for user errors (``--debug`` shows it), and the real ``found`` command checked in a subprocess."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import found.errors
from found.errors import FoundError
from found.hub.weights import ENV_OFFLINE, WeightsError
from found.hub.registry import DEFAULT_MODEL, MODELS
from helpers import FOUND_COMMAND, leftovers, noise_image, run_cli, tiny  # noqa: F401  (fixture)


@pytest.fixture
def batch(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Three good images and two bad ones, interleaved."""
    d = tmp_path / "in"
    d.mkdir()
    good = []
    for i in range(3):
        p = d / f"good{i}.png"
        noise_image(24 + 8 * i, 24, seed=i).save(p)
        good.append(p)
    (d / "bad0.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (d / "bad1.png").write_bytes(b"")
    return good, [d / "bad0.jpg", d / "bad1.png"]


def test_exit_codes(tmp_path: Path, tiny, batch) -> None:
    good, bad = batch
    out = str(tmp_path / "out")
    assert run_cli(["segment", *map(str, good), "-o", out, *tiny.args()]).code == 0
    assert run_cli(["segment", str(good[0]), str(bad[0]), "-o", out, "--overwrite", *tiny.args()]).code == 1
    assert run_cli(["segment", *map(str, bad), "-o", out, *tiny.args()]).code == 1
    assert run_cli(["segment", str(good[0]), "-o", out, "--bogus-flag"]).code == 2
    assert run_cli(["segment", str(good[0])]).code == 2  # -o missing
    assert run_cli(["segment", str(good[0]), "-o", out, "--batch-size", "0", *tiny.args()]).code == 2
    assert run_cli(["segment", str(good[0]), "-o", out, "--max-side", "-5", *tiny.args()]).code == 2
    assert run_cli(["segment", str(good[0]), "-o", out, "--max-side", "4", "--overwrite", *tiny.args()]).code == 2
    assert run_cli(["segment", str(good[0]), "-o", out, "--model", "nope"]).code == 2
    assert run_cli(["segment", str(good[0]), "-o", out, "--overwrite", *tiny.args(), "--device", "cuda:7"]).code == 2
    assert run_cli([]).code == 2


def test_batch_continues_and_summarises(tmp_path: Path, tiny, batch) -> None:
    good, bad = batch
    inputs = [good[0], bad[0], good[1], bad[1], good[2], tmp_path / "ghost.png"]
    r = run_cli(["segment", *map(str, inputs), "-o", str(tmp_path / "out"), "--batch-size", "2", *tiny.args()])
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert lines[0] == "found segment: 3 ok, 0 skipped (outputs exist), 3 failed"
    assert f"  failed: {tmp_path / 'ghost.png'}: no such file or folder" in lines
    assert f"  failed: {bad[0]}: not an image Pillow can read (unknown format or corrupt header)" in lines
    assert f"  failed: {bad[1]}: empty file (0 bytes)" in lines
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".found-journal.jsonl"] + [f"good{i}_mask.png" for i in range(3)]
    assert "Traceback" not in r.err


def test_failing_inference_is_isolated_to_its_image(tmp_path: Path, tiny, batch, monkeypatch) -> None:
    """A batch whose forward pass fails is retried image by image; only the culprit fails."""
    from found.predictor import Found

    good, _ = batch
    real = Found.predict

    def predict(self, images, *a, **k):
        if any(np.asarray(im).shape[1] == 32 for im in images):  # good1 is 32 px wide
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, images, *a, **k)

    monkeypatch.setattr(Found, "predict", predict)
    r = run_cli(["segment", *map(str, good), "-o", str(tmp_path / "out"), "--batch-size", "3", *tiny.args()])
    assert r.code == 1
    assert r.counts == (2, 0, 1, 0)
    assert f"failed: {good[1]}: inference failed (RuntimeError: CUDA out of memory (simulated))" in r.err
    with pytest.raises(RuntimeError, match="simulated"):  # --debug: the real error, with its traceback
        run_cli(["segment", str(good[1]), "-o", str(tmp_path / "out"), *tiny.args(), "--debug"])


def test_unexpected_error_while_writing_is_isolated(tmp_path: Path, tiny, batch, monkeypatch) -> None:
    from found.io import render

    good, _ = batch
    real = render.overlay_image
    calls = {"n": 0}

    def overlay(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("bug on an odd image")
        return real(*a, **k)

    monkeypatch.setattr(render, "overlay_image", overlay)
    r = run_cli(["segment", *map(str, good), "-o", str(tmp_path / "out"), "--mask", "--overlay", *tiny.args()])
    assert r.code == 1 and r.counts == (2, 0, 1, 0)
    assert "unexpected error while writing outputs (ValueError: bug on an odd image); rerun with --debug" in r.err
    assert not list((tmp_path / "out").glob(f"{good[1].stem}*")) and leftovers(tmp_path / "out") == []


def test_ctrl_c_mid_batch_keeps_finished_outputs(tmp_path: Path, tiny, batch, monkeypatch) -> None:
    from found.predictor import Found

    good, _ = batch
    real = Found.predict
    calls = {"n": 0}

    def predict(self, images, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, images, *a, **k)

    monkeypatch.setattr(Found, "predict", predict)
    out = tmp_path / "out"
    r = run_cli(["segment", *map(str, good), "-o", str(out), "--mask", "--boxes", "--batch-size", "1", *tiny.args()])
    assert r.code == 130
    assert r.counts == (1, 0, 0, 2)
    assert "stopped: interrupted" in r.err
    assert (out / "good0_mask.png").is_file() and leftovers(out) == []
    assert "good0.png" in (out / "boxes.json").read_text()


def test_debug_shows_the_traceback_for_user_errors(tmp_path: Path, tiny, batch) -> None:
    good, _ = batch
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    args = ["segment", str(good[0]), "-o", str(tmp_path / "out"), "--model", "auto", "--weights", str(junk), "--head", str(tiny.head)]
    r = run_cli(args)
    assert r.code == 1 and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert issubclass(WeightsError, FoundError) and WeightsError is found.errors.WeightsError  # one hierarchy
    with pytest.raises(WeightsError):
        run_cli(["--debug", *args])
    with pytest.raises(WeightsError):
        run_cli([*args, "--debug"])


def test_empty_folder_and_unmatched_glob_are_reported(tmp_path: Path, tiny) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "nested" / "sub").mkdir(parents=True)
    noise_image(16, 16).save(tmp_path / "nested" / "sub" / "a.png")
    r = run_cli(["segment", str(tmp_path / "empty"), str(tmp_path / "nested"), str(tmp_path / "*.nothing"),
                 "-o", str(tmp_path / "out"), *tiny.args()])
    assert r.code == 1
    assert f"failed: {tmp_path / 'empty'}: no images found in this folder" in r.err
    assert f"failed: {tmp_path / 'nested'}: no images found in this folder (add -r for sub-folders)" in r.err
    assert f"failed: {tmp_path / '*.nothing'}: no file matches this pattern" in r.err


# ---------------------------------------------------------------- the real command

@pytest.mark.slow
def test_real_command_has_no_traceback(tmp_path: Path, tiny, batch, images_dir: Path) -> None:
    good, bad = batch
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "th"), ENV_OFFLINE: "1"}
    p = subprocess.run([*FOUND_COMMAND, "segment", str(good[0]), *map(str, bad), str(bad[0].parent / "nope.png"),
                        "-o", str(tmp_path / "out"), *tiny.args()], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert "found segment: 1 ok, 0 skipped (outputs exist), 3 failed" in p.stderr
    # the README's main job with nothing cached and no network: one line naming the file to fetch
    # (offline, nothing is attempted; a hang would end in the subprocess timeout)
    p = subprocess.run([*FOUND_COMMAND, "segment", str(images_dir), "-o", str(tmp_path / "out2"), "--all"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and MODELS[DEFAULT_MODEL].backbone.url in lines[0] and "--weights PATH" in lines[0]


def test_subprocesses_run_the_package_under_test_not_a_found_on_path(tmp_path: Path) -> None:
    """FOUND_COMMAND (what every subprocess test runs) is this interpreter's ``-m found``: a decoy
    ``found`` first on PATH is never called, and ``python -m found`` is this checkout's package."""
    decoy = tmp_path / "bin" / "found"
    decoy.parent.mkdir()
    decoy.write_text("#!/bin/sh\necho decoy >&2\nexit 97\n")
    decoy.chmod(0o755)
    env = {**os.environ, "PATH": f"{decoy.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert shutil.which("found", path=env["PATH"]) == str(decoy)
    code = "import found, sys; print(found.__file__)"
    p = subprocess.run([*FOUND_COMMAND[:1], "-c", code], capture_output=True, text=True, env=env, timeout=120)
    import found

    assert Path(p.stdout.strip()) == Path(found.__file__)
    p = subprocess.run([*FOUND_COMMAND, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and "decoy" not in p.stderr and p.stdout.startswith("usage: found")


def test_the_found_entry_point_is_the_cli_main() -> None:
    """The installed ``found`` command (console script) runs found.cli.main:console, as ``python -m found``."""
    from importlib.metadata import entry_points

    scripts = [e.value for e in entry_points(group="console_scripts") if e.name == "found"]
    assert scripts == ["found.cli.main:console"], "found is not installed here (pip install -e .)"


def test_segment_ends_fast_with_every_output_complete_and_profilers_still_write(tmp_path: Path, tiny) -> None:
    """``found segment`` ends with os._exit once its outputs are closed: the outputs, the JSON report
    and the summary line are complete; under a profiler the normal exit runs, so the profile is written."""
    import json

    img = tmp_path / "a.png"
    noise_image(120, 90).save(img)
    p = subprocess.run([*FOUND_COMMAND, "segment", str(img), "-o", str(tmp_path / "out"), "--all", "--report",
                        str(tmp_path / "r.json"), *tiny.args()], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stderr.rstrip().endswith("found segment: 1 ok, 0 skipped (outputs exist), 0 failed")
    assert json.loads((tmp_path / "r.json").read_text())["ok"] == 1
    assert json.loads((tmp_path / "out" / "boxes.json").read_text())["images"][0]["file"].endswith("a.png")
    assert sorted(q.name for q in (tmp_path / "out").iterdir()) == [".found-journal.jsonl",
        "a_cutout.png", "a_mask.png", "a_overlay.png", "a_soft.png", "boxes.json"]
    prof = tmp_path / "prof.out"
    p = subprocess.run([*FOUND_COMMAND[:1], "-m", "cProfile", "-o", str(prof), "-m", "found", "segment", str(img),
                        "-o", str(tmp_path / "out2"), *tiny.args()], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert prof.stat().st_size > 0 and (tmp_path / "out2" / "a_mask.png").is_file()

"""The parity fixtures travel with the repository, and a missing one fails the run instead of skipping."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
from conftest import REPO, REPO_PARITY, load_parity, parity_dir

pytestmark = pytest.mark.parity

MANIFEST = json.loads((REPO_PARITY / "manifest.json").read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_parity_dir_defaults_to_the_repo_copy(monkeypatch):
    monkeypatch.delenv("FOUND_PARITY_DIR", raising=False)
    assert parity_dir() == REPO_PARITY and REPO_PARITY.is_relative_to(REPO)
    monkeypatch.setenv("FOUND_PARITY_DIR", "/elsewhere/heldout")
    assert parity_dir() == Path("/elsewhere/heldout")


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_repo_fixture_matches_the_generator_manifest(name):
    path = REPO_PARITY / name
    assert path.is_file(), f"{path} is missing from the repository"
    assert path.stat().st_size == MANIFEST["files"][name]["bytes"]
    assert _sha256(path) == MANIFEST["files"][name]["sha256"]


@pytest.mark.parametrize("name", sorted(MANIFEST["images"]))
def test_test_images_are_the_ones_the_fixtures_were_built_from(name):
    assert _sha256(REPO / "tests" / "data" / "images" / name) == MANIFEST["images"][name]["sha256"]


def test_missing_fixture_in_a_named_folder_fails_not_skips(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUND_PARITY_DIR", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="uod_cases.npz is missing"):
        load_parity("uod_cases.npz")


@pytest.mark.slow
def test_parity_tests_fail_when_their_folder_lacks_the_files(tmp_path):
    """End to end: the parity tests of a module error out (never skip) against an empty folder."""
    env = {**os.environ, "FOUND_PARITY_DIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
                        str(Path(conftest.__file__).parent / "test_parity_uod.py")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    summary = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 1, r.stdout[-2000:]
    assert "error" in summary and "skipped" not in summary, summary
    assert f"{tmp_path / 'uod_cases.npz'} is missing" in r.stdout

"""Weights: corrupt, truncated, unsafe or mismatched checkpoints; downloads that fail, are cut short or
do not match their hash; offline runs. Downloads use file:// URLs or a server on 127.0.0.1 only."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from found.hub import weights as hub
from found.hub import registry
from found.hub.build import save_head
from found.model.head import FoundHead
from found.hub.registry import ModelSpec, Weights
from helpers import TINY, noise_image, run_cli, tiny  # noqa: F401  (fixture)

TEST_MODEL = "tiny-test"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache: $TORCH_HOME/hub/checkpoints under tmp_path."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(hub.ENV_BACKBONE, raising=False)
    monkeypatch.delenv(hub.ENV_HEAD, raising=False)
    monkeypatch.delenv(hub.ENV_OFFLINE, raising=False)
    return home / "hub" / "checkpoints"


def register(monkeypatch: pytest.MonkeyPatch, backbone: Weights, head: Weights | None = None, name: str = TEST_MODEL) -> None:
    arch = registry.Arch(TINY["patch_size"], TINY["embed_dim"], TINY["depth"], TINY["num_heads"])
    monkeypatch.setitem(registry.MODELS, name, ModelSpec(name, arch, backbone, head, "test model"))


def closed_port() -> int:
    """A localhost port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "img.png"
    noise_image(24, 24).save(p)
    return p


# ---------------------------------------------------------------- local files

def _seg(image: Path, tmp_path: Path, *model: str) -> "object":
    return run_cli(["segment", str(image), "-o", str(tmp_path / "out"), "--no-progress", "--device", "cpu", *model])


def test_corrupt_truncated_and_empty_checkpoints(tmp_path: Path, tiny, image: Path) -> None:
    data = tiny.vit.read_bytes()
    cases = {
        "garbage.pth": (b"definitely not torch " * 50, "not a PyTorch checkpoint"),
        "half.pth": (data[: len(data) // 2], "not a readable checkpoint (corrupt or truncated?)"),
        "empty.pth": (b"", "empty file (0 bytes)"),
    }
    for name, (content, words) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        r = _seg(image, tmp_path, "--model", "auto", "--weights", str(p), "--head", str(tiny.head))
        assert r.code == 1, (name, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"found: error: {p}: ") and words in lines[0], (name, r.err)
    r = _seg(image, tmp_path, "--model", "auto", "--weights", str(tmp_path), "--head", str(tiny.head))
    assert r.code == 1 and f"weight file {tmp_path} is a directory" in r.err
    r = _seg(image, tmp_path, "--model", "auto", "--weights", str(tmp_path / "nope.pth"), "--head", str(tiny.head))
    assert r.code == 1 and "does not exist" in r.err and "Traceback" not in r.err


def test_wrong_architecture_lists_keys_and_shapes(tmp_path: Path, tiny, image: Path, torch_home: Path) -> None:
    # a registered ViT-S/8 with the tiny 64-d file: shapes listed, briefly
    r = _seg(image, tmp_path, "--model", "dino-vits8", "--weights", str(tiny.vit), "--coarse")
    assert r.code == 1
    line = r.err.strip()
    assert "\n" not in line and "does not fit this architecture" in line
    assert "shape: cls_token (1, 1, 64)≠(1, 1, 384)" in line
    assert "missing: blocks.2." in line and "… (120)" in line  # 2 blocks given, 12 expected: 10 × 12 tensors
    assert len(line) < 600
    # a head for another width
    other = tmp_path / "head32.pt"
    save_head(FoundHead(32), other)
    r = _seg(image, tmp_path, "--model", "auto", "--weights", str(tiny.vit), "--head", str(other))
    assert r.code == 1 and "not a FOUND head for this backbone" in r.err and "(1, 64, 1, 1)" in r.err
    # something that is not a ViT at all
    notvit = tmp_path / "notvit.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, notvit)
    r = _seg(image, tmp_path, "--model", "auto", "--weights", str(notvit), "--head", str(tiny.head))
    assert r.code == 1 and "not a DINO ViT checkpoint: missing 'patch_embed.proj.weight' (found fc.weight)" in r.err


class Payload:
    """Unpickling this would create a file: proves the code in an unsafe checkpoint never runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_needing_more_than_weights_only_is_refused(tmp_path: Path, tiny, image: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    state = torch.load(tiny.vit, weights_only=True)
    state["payload"] = Payload(marker)
    torch.save(state, evil)
    r = _seg(image, tmp_path, "--model", "auto", "--weights", str(evil), "--head", str(tiny.head))
    assert r.code == 1
    assert "refused, the file needs more than weights_only=True" in r.err and "Traceback" not in r.err
    assert not marker.exists()
    with pytest.raises(hub.WeightsError, match="refused"):
        hub.load_checkpoint(evil)


# ---------------------------------------------------------------- downloads

def test_download_from_file_url_then_offline_use(tmp_path: Path, tiny, torch_home: Path, monkeypatch, image: Path) -> None:
    register(monkeypatch, Weights(tiny.vit.as_uri(), "tiny_vit.pth", _sha(tiny.vit), "test"),
             Weights(tiny.head.as_uri(), "tiny_head.pt", _sha(tiny.head), "test"))
    r = run_cli(["download", TEST_MODEL, "--no-progress"])
    assert r.code == 0, r.err
    assert (torch_home / "tiny_vit.pth").read_bytes() == tiny.vit.read_bytes()
    assert sorted(p.name for p in torch_home.iterdir()) == ["tiny_head.pt", "tiny_vit.pth"]
    monkeypatch.setenv(hub.ENV_OFFLINE, "1")  # now fully offline: the cache is enough
    r = _seg(image, tmp_path, "--model", TEST_MODEL)
    assert r.code == 0, r.err


def test_hash_mismatch_removes_the_file_and_says_so(tmp_path: Path, tiny, torch_home: Path, monkeypatch) -> None:
    register(monkeypatch, Weights(tiny.vit.as_uri(), "tiny_vit.pth", "0" * 64, "test"))
    r = run_cli(["download", TEST_MODEL, "--no-progress"])
    assert r.code == 1
    assert f"downloaded {tiny.vit.as_uri()} has sha256 {_sha(tiny.vit)[:12]}…, expected 000000000000…" in r.err
    assert "the file was removed" in r.err and "--weights PATH" in r.err and hub.ENV_BACKBONE in r.err
    assert list(torch_home.iterdir()) == []


def test_cached_file_with_wrong_hash_is_removed(tmp_path: Path, tiny, torch_home: Path, monkeypatch) -> None:
    register(monkeypatch, Weights(tiny.vit.as_uri(), "tiny_vit.pth", _sha(tiny.vit), "test"))
    torch_home.mkdir(parents=True)
    (torch_home / "tiny_vit.pth").write_bytes(b"stale")
    r = run_cli(["download", TEST_MODEL, "--no-progress"])
    assert r.code == 1 and "did not match its sha256 and was removed" in r.err
    assert not (torch_home / "tiny_vit.pth").exists()
    r = run_cli(["download", TEST_MODEL, "--no-progress"])
    assert r.code == 0 and (torch_home / "tiny_vit.pth").is_file()


def test_unhashed_download_that_is_not_a_checkpoint_is_removed(tmp_path: Path, torch_home: Path, monkeypatch) -> None:
    page = tmp_path / "error.html"
    page.write_text("<html>403 Forbidden</html>")
    register(monkeypatch, Weights(page.as_uri(), "tiny_vit.pth", None, "test"))
    r = run_cli(["download", TEST_MODEL, "--no-progress"])
    assert r.code == 1 and "is not a usable checkpoint and was removed" in r.err
    assert list(torch_home.iterdir()) == []


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    cut_at: int | None = None

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[: self.cut_at] if self.cut_at is not None else self.body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *a) -> None:
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 that announces the whole file and sends only part of it."""
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_interrupted_download_leaves_no_partial_file(tmp_path: Path, tiny, torch_home: Path, monkeypatch, server) -> None:
    data = tiny.vit.read_bytes()
    monkeypatch.setattr(_Handler, "body", data)
    monkeypatch.setattr(_Handler, "cut_at", len(data) // 3)
    url = f"http://127.0.0.1:{server.server_address[1]}/tiny_vit.pth"
    register(monkeypatch, Weights(url, "tiny_vit.pth", _sha(tiny.vit), "test"))
    r = run_cli(["download", TEST_MODEL, "--no-progress"])
    assert r.code == 1, r.err
    assert f"cannot download {url} (download interrupted" in r.err and "Traceback" not in r.err
    assert list(torch_home.iterdir()) == []
    monkeypatch.setattr(_Handler, "cut_at", None)  # the same server, whole file: works
    r = run_cli(["download", TEST_MODEL, "--no-progress"])
    assert r.code == 0 and (torch_home / "tiny_vit.pth").read_bytes() == data


def test_ctrl_c_during_download_leaves_no_partial_file(tiny, torch_home: Path, monkeypatch) -> None:
    register(monkeypatch, Weights(tiny.vit.as_uri(), "tiny_vit.pth", _sha(tiny.vit), "test"))
    import tqdm.auto

    def interrupt(self, n=1):
        raise KeyboardInterrupt

    monkeypatch.setattr(tqdm.auto.tqdm, "update", interrupt)
    r = run_cli(["download", TEST_MODEL])
    assert r.code == 130 and "interrupted" in r.err
    assert list(torch_home.iterdir()) == []


def test_offline_main_job_fails_in_one_line_at_the_first_refused_connection(tmp_path: Path, torch_home: Path, monkeypatch,
                                                                             images_dir: Path) -> None:
    """The README's main job, `found segment tests/data/images -o out --all`: default model, nothing
    cached, network unreachable (a refused localhost port stands for it): one attempt, no retry and
    no waiting, then one line."""
    import urllib.request

    port = closed_port()
    spec = registry.MODELS[registry.DEFAULT_MODEL]
    bb = dataclasses.replace(spec.backbone, url=f"http://127.0.0.1:{port}/{spec.backbone.filename}")
    monkeypatch.setitem(registry.MODELS, registry.DEFAULT_MODEL, dataclasses.replace(spec, backbone=bb))
    attempts, real_urlopen = [], urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: attempts.append(a) or real_urlopen(*a, **k))
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail(f"waited {s} s before giving up"))
    r = run_cli(["segment", str(images_dir), "-o", str(tmp_path / "out"), "--all"])
    assert r.code == 1 and len(attempts) == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    line = lines[0]
    assert line.startswith(f"found: error: cannot download {bb.url} (")
    assert str(torch_home / bb.filename) in line and "--weights PATH" in line and hub.ENV_BACKBONE in line
    assert not torch_home.exists() or list(torch_home.iterdir()) == []


def test_offline_env_fails_at_once_with_url_path_and_flag(tmp_path: Path, torch_home: Path, monkeypatch, image: Path) -> None:
    monkeypatch.setenv(hub.ENV_OFFLINE, "1")
    spec = registry.MODELS[registry.DEFAULT_MODEL]
    r = run_cli(["segment", str(image), "-o", str(tmp_path / "out")])
    assert r.code == 1
    line = r.err.strip()
    assert "\n" not in line and spec.backbone.url in line and str(torch_home / spec.backbone.filename) in line
    assert "--weights PATH" in line and hub.ENV_BACKBONE in line and hub.ENV_OFFLINE in line
    r = run_cli(["download", "--no-progress"])
    assert r.code == 1 and spec.backbone.url in r.err


def test_download_from_file_errors(tmp_path: Path, tiny, torch_home: Path, monkeypatch) -> None:
    register(monkeypatch, Weights("http://127.0.0.1:9/x", "tiny_vit.pth", _sha(tiny.vit), "test"),
             Weights("http://127.0.0.1:9/y", "tiny_head.pt", None, "test"))
    r = run_cli(["download", TEST_MODEL, "--from-file", "backbone", str(tmp_path / "missing.pth")])
    assert r.code == 1 and "does not exist" in r.err and "Traceback" not in r.err
    r = run_cli(["download", TEST_MODEL, "--from-file", "backbone", str(tiny.head)])
    assert r.code == 1 and "does not match the published sha256" in r.err and "nothing installed" in r.err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    r = run_cli(["download", TEST_MODEL, "--from-file", "head", str(junk)])
    assert r.code == 1 and "not a PyTorch checkpoint" in r.err
    assert not torch_home.exists() or list(torch_home.iterdir()) == []
    r = run_cli(["download", TEST_MODEL, "--from-file", "backbone", str(tiny.vit), "--from-file", "head", str(tiny.head)])
    assert r.code == 0, r.err
    assert sorted(p.name for p in torch_home.iterdir()) == ["tiny_head.pt", "tiny_vit.pth"]
    r = run_cli(["download", "no-such-model"])
    assert r.code == 2 and "unknown model 'no-such-model'" in r.err


def test_corrupt_cached_file_message_says_how_to_fix(tmp_path: Path, torch_home: Path, monkeypatch, image: Path) -> None:
    register(monkeypatch, Weights("http://127.0.0.1:9/x", "tiny_vit.pth", None, "test"))
    torch_home.mkdir(parents=True)
    (torch_home / "tiny_vit.pth").write_bytes(b"PK\x03\x04 broken zip")
    r = _seg(image, tmp_path, "--model", TEST_MODEL, "--coarse")
    assert r.code == 1 and "delete it to download it again" in r.err


def test_disk_full_during_download_keeps_nothing(tiny, torch_home: Path, monkeypatch) -> None:
    import builtins
    import errno

    register(monkeypatch, Weights(tiny.vit.as_uri(), "tiny_vit.pth", _sha(tiny.vit), "test"))

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            self.f.write(b[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fake_open(file, mode="r", *a, **k):
        f = builtins.open(file, mode, *a, **k)
        return Full(f) if "w" in mode else f

    monkeypatch.setattr(hub, "open", fake_open, raising=False)
    r = run_cli(["download", TEST_MODEL, "--no-progress"])
    assert r.code == 1
    assert f"cannot save tiny_vit.pth to {torch_home} (No space left on device); nothing was kept" in r.err
    assert "TORCH_HOME" in r.err and list(torch_home.iterdir()) == []

"""Shared fixtures: the parity folder (``$FOUND_PARITY_DIR``, default the repo's ``tests/fixtures/parity``)
and test images. The suite reads nothing outside the repository, so a fresh clone tests itself."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: The public parity fixtures (set A), tracked in the repository.
REPO_PARITY = REPO / "tests" / "fixtures" / "parity"


def parity_dir() -> Path:
    """``$FOUND_PARITY_DIR`` when set (e.g. a held-out set with the same files), else the repo copy."""
    env = os.environ.get("FOUND_PARITY_DIR")
    return Path(env) if env else REPO_PARITY


def pytest_report_header(config: pytest.Config) -> str:
    """The CPU path the numbers of this run come from (see README: *Tests*)."""
    import platform

    import torch

    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        cpu = platform.processor()
    return (f"found: torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"oneDNN ISA {os.environ.get('ONEDNN_MAX_CPU_ISA', 'native')}, {torch.get_num_threads()} threads, "
            f"{platform.machine()} {cpu}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``gpu`` need a CUDA device: skipped, with the reason, where there is none."""
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (marked gpu)")


def require(module: str, extra: str):
    """Import an optional extra's module for the tests that need it. A user's partial install skips
    them; with ``FOUND_REQUIRE_EXTRAS=1`` (CI, where the ``test`` extra installs every extra) a
    missing module fails the run instead, so no test silently vanishes."""
    if os.environ.get("FOUND_REQUIRE_EXTRAS") == "1":
        try:
            return importlib.import_module(module)
        except ImportError as e:
            pytest.fail(f"{module} (found[{extra}]) cannot be imported with FOUND_REQUIRE_EXTRAS=1: {e}", pytrace=False)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install 'found[{extra}]')")


def load_parity(name: str) -> dict:
    """Load ``name`` from the parity folder; a missing file is a failure, never a skip."""
    path = parity_dir() / name
    if not path.is_file():
        pytest.fail(f"parity fixture {path} is missing (FOUND_PARITY_DIR={os.environ.get('FOUND_PARITY_DIR')!r})")
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def case_names(d: dict) -> list[str]:
    names = d["case_names"]
    return [str(n) for n in np.atleast_1d(names)] if names.dtype.kind in "UO" else list(names)


def n_cases(d: dict) -> int:
    return len({k.split("_", 1)[0] for k in d if k[0] == "c" and k.split("_", 1)[0][1:].isdigit()})


@pytest.fixture(scope="session")
def images_dir() -> Path:
    d = REPO / "tests" / "data" / "images"
    if not d.is_dir():
        pytest.fail(f"test images folder {d} is missing")
    return d


def tiny_vit():
    """The parity tiny ViT (96-d, 3 blocks, 6 heads, patch 8) with the fixture's weights."""
    import torch

    from found.model.backbone import VisionTransformer

    d = load_parity("vit_tiny.npz")
    vit = VisionTransformer(patch_size=8, embed_dim=96, depth=3, num_heads=6)
    vit.load_state_dict({k: torch.from_numpy(v) for k, v in d.items() if k != "meta_json"}, strict=True)
    return vit.eval()


def seeded_head(dim: int = 96, seed: int = 3, zero_bias: bool = True):
    """A FOUND head with seeded N(0, 0.1) weights (not an all-zero map: masks are not trivial)."""
    import torch

    from found.model.head import FoundHead

    torch.manual_seed(seed)
    h = FoundHead(dim)
    with torch.no_grad():
        h.decoder.weight.normal_(0, 0.1)
        if zero_bias:
            h.decoder.bias.zero_()
    return h


@pytest.fixture(scope="module")
def photos(images_dir) -> dict[str, np.ndarray]:
    """The bundled photos as uint8 RGB arrays, by stem."""
    from PIL import Image

    return {p.stem: np.array(Image.open(p).convert("RGB")) for p in sorted(images_dir.glob("*.png"))}


def structured_head(vit, images):
    """A head along the coarse masks' object/background key direction, so its masks follow image
    content as a trained head's do (the mean key of object patches minus that of background ones)."""
    import torch

    from found import Found, FoundHead, discover_background

    coarse = Found(vit, None, device="cpu")
    keys, objects = [], []
    for im in images:
        f = coarse.features(coarse.input_batch([im]))
        keys.append(f.keys[0])
        objects.append(discover_background(f.cls_attention, f.keys, f.grid_hw).objects.reshape(-1))
    k, y = torch.cat(keys), torch.cat(objects)
    mu_obj, mu_bkg = k[y].mean(0), k[~y].mean(0)
    w = mu_obj - mu_bkg
    head = FoundHead(k.shape[1])
    with torch.no_grad():
        head.decoder.weight.copy_(w.reshape(1, -1, 1, 1))
        head.decoder.bias.fill_(-float(w @ (mu_obj + mu_bkg)) / 2)
    return head

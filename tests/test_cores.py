"""``Found`` holds a core: the protocol, its implementations (torch, ONNX Runtime, eager baseline,
temporal smoothing), none subclassing another, and the shared device/precision helper."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from agreement import assert_masks_agree
from conftest import seeded_head, tiny_vit
from found import Found
from found.errors import FoundError
from found.runtime import device as rt_device
from found.runtime.core import Core
from found.runtime.eager import EagerCore
from found.runtime.onnx import OnnxCore
from found.runtime.smoothing import LogitsEMA, SmoothedCore
from found.runtime.torch_core import TorchCore

PACKAGE = Path(__file__).resolve().parents[1] / "found"
CORES = (TorchCore, OnnxCore, EagerCore, SmoothedCore)


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def head():
    return seeded_head(96, seed=3)


def _frames(photos, n: int = 6) -> list[np.ndarray]:
    """Consecutive 'video frames': one photo crop, brightening a little frame by frame."""
    base = photos["astronaut"][:96, :136].astype(np.int16)
    return [np.clip(base + 9 * k, 0, 255).astype(np.uint8) for k in range(n)]


# ---------------------------------------------------------------------------- composition
def test_no_class_in_found_subclasses_a_core_or_the_predictor():
    names = {c.__name__ for c in CORES} | {"Found", "FoundCore", "Core"}
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                bad += [f"{path.relative_to(PACKAGE)}: {node.name}({b})" for b in bases & names]
    assert not bad, bad
    assert all(cls.__bases__ == (object,) for cls in (*CORES, Found))


def test_found_holds_a_core_and_delegates_to_it(vit, head):
    core = TorchCore(vit, head, device="cpu", precision="fp32")
    model = Found(core)
    assert model.core is core and isinstance(core, Core)
    assert (model.backbone, model.head, model.patch_size, model.device, model.coarse, model.precision, model.tau) == \
           (core.backbone, core.head, 8, torch.device("cpu"), False, "fp32", 0.3)
    shorthand = Found(vit, head, device="cpu", precision="fp32")  # builds the same torch core
    assert isinstance(shorthand.core, TorchCore) and shorthand.core.precision == "fp32"
    with pytest.raises(TypeError, match="core"):
        Found(core, head)
    with pytest.raises(TypeError, match="core"):
        Found(object())


# ---------------------------------------------------------------------------- the cores
def test_eager_core_gives_the_torch_core_masks(vit, head, photos):
    fast = Found(TorchCore(vit, head, device="cpu", precision="fp32"))
    eager = Found(EagerCore(vit, head, device="cpu"))
    assert eager.precision == "fp32" and eager.backbone is fast.backbone and not eager.coarse
    images = [photos["coffee"][:120, :160], photos["astronaut"][:97, :61]]
    for a, b in zip(fast.predict(images, batch_size=2), eager.predict(images, batch_size=2)):
        assert_masks_agree(b.mask, a.mask, a.soft, "eager core mask")
        np.testing.assert_allclose(a.soft, b.soft, atol=1e-4, rtol=0)
    coarse_fast, coarse_eager = Found(TorchCore(vit, None, device="cpu")), Found(EagerCore(vit, None, device="cpu"))
    assert coarse_eager.coarse and coarse_eager.tau == 0.3
    x = coarse_fast.input_batch(images[:1])
    f, g = coarse_fast.features(x), coarse_eager.features(x)
    torch.testing.assert_close(f.cls_attention, g.cls_attention, atol=1e-5, rtol=0)
    torch.testing.assert_close(f.keys, g.keys, atol=5e-5, rtol=0)


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_smoothed_core_gives_the_outputs_of_the_old_monkeypatched_copy(vit, head, photos, alpha):
    model = Found(vit, head, device="cpu", precision="fp32")
    frames = _frames(photos)
    # what video.smoothed_model did before: a shallow copy whose patch_logits pass through an EMA
    ema, inner = LogitsEMA(alpha), model.patch_logits
    old = copy.copy(model)
    old.patch_logits = lambda x: ema(inner(x))
    new = Found(SmoothedCore(model.core, alpha))
    assert new.backbone is model.backbone and new.head is model.head and new.patch_size == model.patch_size
    for k in range(0, len(frames), 2):  # batches of consecutive frames, as the engine gives them
        for a, b in zip(old.predict(frames[k : k + 2], batch_size=2), new.predict(frames[k : k + 2], batch_size=2)):
            np.testing.assert_array_equal(a.soft, b.soft)
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_array_equal(a.patch_probs, b.patch_probs)
    plain = model.predict(frames[-1])[0]  # the inner model is left as it was
    np.testing.assert_array_equal(plain.soft, Found(model.core).predict(frames[-1])[0].soft)
    with pytest.raises(FoundError, match="alpha"):
        SmoothedCore(model.core, 0)


def test_video_smoothing_runs_a_smoothed_core(vit, head):
    from found.engine import Engine
    from found.video.segment import smoothed_engine, smoothed_model

    model = Found(vit, head, device="cpu")
    smooth = smoothed_model(model, 0.5)
    assert isinstance(smooth.core, SmoothedCore) and smooth.core.inner is model.core
    engine = Engine(model, batch_size=2)
    other = smoothed_engine(engine, 0.5)
    assert engine.model is model and isinstance(other.model.core, SmoothedCore)


# ---------------------------------------------------------------------------- device and precision
def test_default_device_is_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert rt_device.default_device() == torch.device("mps")
    assert rt_device.as_device(None) == torch.device("mps") and rt_device.as_device("cpu") == torch.device("cpu")
    assert rt_device.training_precision(None, torch.device("mps")) == "fp32"
    with pytest.raises(rt_device.PrecisionError, match="CPU only"):
        rt_device.check_precision("int8")  # the default device, MPS here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rt_device.default_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert rt_device.default_device() == torch.device("cpu")
    assert rt_device.check_precision("int8") == "int8"


def test_one_precision_check_for_the_library_and_the_cli(vit, monkeypatch):
    from found.cli import common
    from found.cli.main import build_parser

    with pytest.raises(rt_device.PrecisionError, match="CPU only") as e:
        TorchCore(vit, None, device="meta", precision="int8")
    assert isinstance(e.value, ValueError) and isinstance(e.value, FoundError)
    with pytest.raises(rt_device.PrecisionError, match="must be one of"):
        rt_device.check_precision("fp64", "cpu")
    calls = []
    real = rt_device.check_precision
    monkeypatch.setattr(rt_device, "check_precision", lambda *a, **k: calls.append(a) or real(*a, **k))
    args = build_parser().parse_args(["segment", "in.jpg", "-o", "out", "--precision", "int8", "--device", "cpu"])
    common.check_model_args(args)
    assert calls == [("int8", "cpu")]


def test_the_inference_and_training_paths_share_the_helper():
    import found.runtime.torch_core as torch_core
    import found.train.loop as loop
    import found.train.step as step

    assert step.autocast is rt_device.autocast and loop.as_device is rt_device.as_device
    assert loop.training_precision is rt_device.training_precision
    assert torch_core.autocast is rt_device.autocast and torch_core.resolve_precision is rt_device.resolve_precision
    train_src = "\n".join(p.read_text() for p in (PACKAGE / "train").glob("*.py"))
    assert "torch.autocast" not in train_src and 'torch.device("cuda"' not in train_src
    assert rt_device.autocast(torch.device("cpu"), "fp32").__class__.__name__ == "nullcontext"
    with rt_device.autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu")

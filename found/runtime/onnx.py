"""FOUND on ONNX Runtime: :class:`OnnxCore` runs an exported file (see :mod:`found.export.onnx`) in
place of the PyTorch backbone and head; ``Found(OnnxCore(path))`` (:func:`found.load_onnx`) does the
rest (upsampling, masks, boxes, refinement, the engine) with the same code as the torch core.

``onnxruntime`` (the ``found[onnx]`` extra) is imported when a session is opened, not before.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..errors import FoundError
from ..extras import require
from ..model.backbone import FoundFeatures
from ..model.head import coarse_logits
from .core import images_per_call, in_chunks
from ..errors import first_line
from .onnx_file import INPUT, OnnxFileError, OnnxInfo, check_file, info_from_metadata

#: Execution providers tried in this order (the CPU one is always available).
PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a one-line error naming the ``onnx`` extra."""
    return require("onnxruntime", "onnx", "the ONNX Runtime core")


def open_session(path: str | os.PathLike, device: str | torch.device | None = None,
                 threads: int | None = None) -> tuple[Any, OnnxInfo]:
    """An ``onnxruntime.InferenceSession`` on ``path`` and its :class:`OnnxInfo`.

    ``device``: ``"cpu"`` uses the CPU provider; ``"cuda"`` requires the CUDA provider; ``None``
    takes CUDA when onnxruntime offers it, else the CPU. Bad files give one :class:`OnnxFileError` line.
    """
    ort = onnxruntime()
    path = check_file(path)
    kind = None if device is None else torch.device(device).type
    if kind not in (None, "cpu", "cuda"):
        raise FoundError(f"ONNX Runtime runs on cpu or cuda, not device={device}")
    available = set(ort.get_available_providers())
    if kind == "cuda" and "CUDAExecutionProvider" not in available:
        raise FoundError("device cuda: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    providers = [p for p in PROVIDERS if p in available and (kind != "cpu" or p == "CPUExecutionProvider")]
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid models
        raise OnnxFileError(f"{path}: not a usable ONNX file ({first_line(e)})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    info = info_from_metadata(path, meta, [o.name for o in session.get_outputs()], [i.name for i in session.get_inputs()])
    return session, info


def check_expected(info: OnnxInfo, patch_size: int | None, model: str | None, head_sha256: str | None) -> None:
    """One :class:`OnnxFileError` line when the file is not what the caller asked for (None: not checked)."""
    if patch_size is not None and patch_size != info.patch_size:
        raise OnnxFileError(f"{info.path}: patch size {info.patch_size} in the file, {patch_size} requested")
    if model is not None and model != info.model:
        raise OnnxFileError(f"{info.path}: exported from model {info.model!r}, {model!r} requested")
    if head_sha256 is not None and head_sha256 != info.head_sha256:
        raise OnnxFileError(f"{info.path}: holds {'no head' if info.coarse else 'another head'} than the one requested "
                            f"(head sha256 {info.head_sha256[:12] or '-'} in the file, {head_sha256[:12]} requested)")


class OnnxCore:
    """A core whose ``features`` and ``patch_logits`` are ONNX Runtime calls on an exported file.

    ``coarse=True`` gives step-1 masks from the file's attention and keys (any file); a file
    exported without a head can only run coarse. ``expect_*`` arguments turn a mismatch between
    what the caller asked for and what the file holds into one :class:`OnnxFileError` line.
    There are no torch modules (``backbone`` and ``head`` are None): the file holds them.
    """

    backbone = None
    head = None

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        *,
        coarse: bool | None = None,
        tau: float | None = None,
        threads: int | None = None,
        expect_patch_size: int | None = None,
        expect_model: str | None = None,
        expect_head_sha256: str | None = None,
    ) -> None:
        self.session, self.info = open_session(path, device, threads)
        info = self.info
        self.path = info.path
        check_expected(info, expect_patch_size, expect_model, expect_head_sha256)
        if coarse is False and info.coarse:
            raise OnnxFileError(f"{info.path}: exported without a head (coarse only); add coarse=True or export with a head")
        self.coarse = info.coarse if coarse is None else bool(coarse)
        self.tau = info.tau if tau is None else float(tau)
        self.precision = "int8" if info.quantization.startswith("int8") else "fp32"
        self.patch_size = info.patch_size
        # outputs live where the session ran (CUDA only if torch can hold CUDA tensors too)
        cuda = self.session.get_providers()[0] == "CUDAExecutionProvider" and torch.cuda.is_available()
        self.device = torch.device("cuda") if cuda else torch.device("cpu")

    def __repr__(self) -> str:
        return f"OnnxCore({str(self.path)!r}, model={self.info.model!r}, coarse={self.coarse}, device={self.device.type})"

    def run(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        """One session call on a normalised padded batch; outputs as float32 tensors on the device."""
        p = self.patch_size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"expected a padded batch [B, 3, H, W] with H, W multiples of {p}, got {tuple(x.shape)}")
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        outs = self.session.run(names, {INPUT: arr})
        return [torch.from_numpy(np.asarray(o, dtype=np.float32)).to(self.device) for o in outs]

    def chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The batch in session calls of as many images as the torch core's (int8: one per call)."""
        return in_chunks(x, images_per_call(x, self.device, self.precision, self.patch_size))

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> FoundFeatures:
        """Last-block CLS attention and keys (float32) for a normalised, padded batch [B, 3, H, W]."""
        parts = [self.run(c, ["cls_attention", "keys"]) for c in self.chunks(x)]
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return FoundFeatures(torch.cat([a for a, _ in parts]), torch.cat([k for _, k in parts]), grid)

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Coarse ±1 logits from the features; a head's logits come from the file (``patch_logits``)."""
        if not self.coarse:
            raise NotImplementedError("an ONNX core computes head logits inside the ONNX graph: use patch_logits")
        return coarse_logits(f, self.tau)

    @torch.inference_mode()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (±1 coarse masks in coarse mode)."""
        if self.coarse:
            return self.logits_from_features(self.features(x))
        return torch.cat([self.run(c, ["logits"])[0] for c in self.chunks(x)])

"""FOUND on ONNX Runtime: :class:`OnnxFound` runs an exported file (see :mod:`found.export.onnx`)
in place of the PyTorch backbone and head; everything after the patch logits (upsampling, masks,
boxes, refinement, the engine) is :class:`found.Found`'s own code.
"""
from __future__ import annotations

import os
from types import ModuleType

import numpy as np
import torch

from ..model.background import discover_background
from ..model.backbone import FoundFeatures
from ..errors import FoundError
from ..extras import require
from ..predictor import Found
from .onnx import INPUT, OnnxFileError, _first_line, check_file, head_sha256, info_from_metadata

#: Execution providers tried in this order (the CPU one is always available).
PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def _ort() -> ModuleType:
    """The ``onnxruntime`` module, or a one-line error naming the ``onnx`` extra."""
    return require("onnxruntime", "onnx", "the ONNX Runtime core")


def open_session(path: str | os.PathLike, device: str | torch.device | None = None, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on ``path`` and its :class:`OnnxInfo`.

    ``device``: ``"cpu"`` uses the CPU provider; ``"cuda"`` requires the CUDA provider; ``None``
    takes CUDA when onnxruntime offers it, else the CPU. Bad files give one :class:`OnnxFileError` line.
    """
    ort = _ort()
    path = check_file(path)
    kind = None if device is None else torch.device(device).type
    if kind not in (None, "cpu", "cuda"):
        raise FoundError(f"ONNX Runtime runs on cpu or cuda, not {device}")
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
        raise OnnxFileError(f"{path}: not a usable ONNX file ({_first_line(e)})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    info = info_from_metadata(path, meta, [o.name for o in session.get_outputs()], [i.name for i in session.get_inputs()])
    return session, info


class OnnxFound(Found):
    """:class:`found.Found` whose tensor core (``features``, ``patch_logits``) is an ONNX Runtime session.

    ``coarse=True`` gives step-1 masks from the file's attention and keys (any file); a file
    exported without a head can only run coarse. ``expect_*`` arguments turn a mismatch between
    what the caller asked for and what the file holds into one :class:`OnnxFileError` line.
    """

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
        self._check(expect_patch_size, expect_model, expect_head_sha256)
        if coarse is False and info.coarse:
            raise OnnxFileError(f"{info.path}: exported without a head (coarse only); add coarse=True or export with a head")
        self.coarse = info.coarse if coarse is None else bool(coarse)
        self.head = None  # no torch modules: the file holds them
        self.backbone = None
        self.tau = info.tau if tau is None else float(tau)
        self.precision = "int8" if info.quantization.startswith("int8") else "fp32"
        # outputs live where the session ran (CUDA only if torch can hold CUDA tensors too)
        cuda = self.session.get_providers()[0] == "CUDAExecutionProvider" and torch.cuda.is_available()
        self.device = torch.device("cuda") if cuda else torch.device("cpu")
        self.compile_mode = None
        self._cudagraphs = False

    def _check(self, patch_size: int | None, model: str | None, head: str | None) -> None:
        info = self.info
        if patch_size is not None and patch_size != info.patch_size:
            raise OnnxFileError(f"{info.path}: patch size {info.patch_size} in the file, {patch_size} requested")
        if model is not None and model != info.model:
            raise OnnxFileError(f"{info.path}: exported from model {info.model!r}, {model!r} requested")
        if head is not None and head != info.head_sha256:
            raise OnnxFileError(f"{info.path}: holds {'no head' if info.coarse else 'another head'} than the one requested "
                                f"(head sha256 {info.head_sha256[:12] or '-'} in the file, {head[:12]} requested)")

    @property
    def patch_size(self) -> int:  # type: ignore[override]
        return self.info.patch_size

    def __repr__(self) -> str:
        return f"OnnxFound({str(self.path)!r}, model={self.info.model!r}, coarse={self.coarse}, device={self.device.type})"

    # ------------------------------------------------------------------ tensor core
    def _run(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        """One session call on a normalised padded batch; outputs as float32 tensors on the device."""
        p = self.patch_size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"expected a padded batch [B, 3, H, W] with H, W multiples of {p}, got {tuple(x.shape)}")
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        outs = self.session.run(names, {INPUT: arr})
        return [torch.from_numpy(np.asarray(o, dtype=np.float32)).to(self.device) for o in outs]

    def _chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The batch in session calls of ``Found._cpu_chunk`` images (int8: one per call)."""
        chunk = self._cpu_chunk(x)
        return [x[i : i + chunk] for i in range(0, x.shape[0], chunk)]

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> FoundFeatures:
        """Last-block CLS attention and keys (float32) for a normalised, padded batch [B, 3, H, W]."""
        parts = [self._run(c, ["cls_attention", "keys"]) for c in self._chunks(x)]
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return FoundFeatures(torch.cat([a for a, _ in parts]), torch.cat([k for _, k in parts]), grid)

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Coarse ±1 logits from the features; a head's logits come from the file (``patch_logits``)."""
        if not self.coarse:
            raise NotImplementedError("OnnxFound computes head logits inside the ONNX graph: use patch_logits")
        bkg = discover_background(f.cls_attention, f.keys, f.grid_hw, tau=self.tau)
        return (bkg.objects.float() * 2 - 1)[:, None]

    @torch.inference_mode()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (±1 coarse masks in coarse mode)."""
        if self.coarse:
            return self.logits_from_features(self.features(x))
        return torch.cat([self._run(c, ["logits"])[0] for c in self._chunks(x)])


def load_onnx(path: str | os.PathLike, device: str | torch.device | None = None, **kwargs) -> OnnxFound:
    """The FOUND predictor of an exported ONNX file (``found export onnx``); see :class:`OnnxFound`."""
    return OnnxFound(path, device, **kwargs)


def head_file_sha256(head: str | os.PathLike) -> str:
    """The :func:`found.export.onnx.head_sha256` of a head checkpoint file (to check a file's head)."""
    from ..hub.build import load_head
    from ..hub.weights import existing_file, load_checkpoint

    path = existing_file(head, "head=PATH")
    state = load_checkpoint(path)
    inner = state.get("decoder", state)
    dim = int(inner["weight"].shape[1]) if "weight" in inner else 384
    return head_sha256(load_head(head=path, in_dim=dim))


#: int8 files are accepted only with at least this mask IoU against fp32 on real photos.
MIN_INT8_IOU = 0.99


def mask_agreement(reference: Found, candidate: Found, images: list[np.ndarray]) -> dict:
    """Binary-mask agreement of ``candidate`` with ``reference`` on uint8 images, one at a time:
    mean / minimum IoU over the images and the number of differing pixels."""
    ious, differ = [], 0
    for rgb in images:
        a = reference.predict(rgb)[0].mask
        b = candidate.predict(rgb)[0].mask
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
        differ += int((a != b).sum())
    if not ious:
        raise FoundError("mask agreement needs at least one image")
    return {"images": len(ious), "mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(min(ious)),
            "mask_pixels_differing": differ}


def int8_accepted(agreement: dict, min_iou: float | None = None) -> bool:
    """The int8 acceptance rule: every image's mask IoU against fp32 is at least ``min_iou``
    (default :data:`MIN_INT8_IOU`)."""
    return agreement["mask_iou_min"] >= (MIN_INT8_IOU if min_iou is None else min_iou)

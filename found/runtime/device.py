"""Device and precision, decided once for inference and training: the default device (CUDA, then
Apple MPS, then the CPU), what ``"auto"`` means, the autocast context and the int8 rule."""
from __future__ import annotations

import contextlib

import torch

from ..errors import FoundError

#: Precisions of the inference cores (``"auto"`` resolved by :func:`resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: Precisions of the frozen backbone during training (``None`` resolved by :func:`training_precision`).
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
#: Reduced float precisions and the dtype autocast runs them in.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(FoundError, ValueError):
    """A precision that is unknown, or that cannot run on the device asked for (a usage error)."""


def mps_available() -> bool:
    """Whether this torch build and machine offer Apple's Metal (MPS) device."""
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def default_device() -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def as_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device`, or :func:`default_device` when None."""
    return torch.device(device) if device is not None else default_device()


def check_precision(precision: str, device: str | torch.device | None = None, choices: tuple[str, ...] = PRECISIONS) -> str:
    """``precision`` if it is one of ``choices`` and runs on ``device`` (None: the default device);
    else a one-line :class:`PrecisionError` naming the field: int8 runs on the CPU only."""
    if precision not in choices:
        raise PrecisionError(f"precision must be one of {', '.join(choices)}, got {precision!r}")
    if precision == "int8" and as_device(device).type != "cpu":
        raise PrecisionError(f"precision 'int8' runs on the CPU only (device {as_device(device)}); "
                             "use bf16 or fp16 on a GPU")
    return precision


def resolve_precision(precision: str, device: torch.device, coarse: bool = False) -> str:
    """``"auto"`` → the fastest precision that keeps the float32 masks: ``"bf16"`` for a trained
    head on a CPU that multiplies bfloat16 in hardware (oneDNN present), else ``"fp32"``. Step-1
    (``coarse``) masks stay fp32: their seed is an argmin and their threshold hard, so bf16 rounding
    can move a whole mask (IoU 0.95 against fp32 measured on a bundled photo). Others are kept."""
    if precision != "auto":
        return precision
    from ..model.backbone import cpu

    native = device.type == "cpu" and cpu.available() and cpu.native_bf16()
    return "bf16" if native and not coarse else "fp32"


def training_precision(precision: str | None, device: torch.device) -> str:
    """The frozen backbone's precision in training: ``None`` → bf16 autocast on CUDA (fp16 where
    bf16 is unsupported), fp32 elsewhere (CPU, MPS); a given one is checked."""
    if precision is None:
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return check_precision(precision, device, TRAIN_PRECISIONS)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for bf16/fp16 on ``device``; nothing for fp32 and int8."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def no_tf32(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """fp32 on CUDA stays fp32: cuDNN would otherwise run the patch embedding in TF32."""
    if precision != "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    c = torch.backends.cudnn
    return c.flags(enabled=c.enabled, benchmark=c.benchmark, deterministic=c.deterministic, allow_tf32=False)

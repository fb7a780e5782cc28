"""Whether the solver may use its numpy/scipy fast paths on a tensor.

On CPU tensors the solver runs :mod:`found.refine.cpu` (numpy and scipy, a fraction of torch's
per-call cost on these small arrays) and the colour maths use numpy; other devices always run the
torch code. Tests set ``NUMPY_FAST_PATHS = False`` to run the device-agnostic torch path on CPU.
"""
from __future__ import annotations

import torch

NUMPY_FAST_PATHS = True


def numpy_ok(t: torch.Tensor) -> bool:
    """True when ``t`` is on the CPU and the numpy fast paths are enabled."""
    return NUMPY_FAST_PATHS and t.device.type == "cpu"

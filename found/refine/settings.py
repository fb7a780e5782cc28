"""The bilateral solver's settings: one frozen, validated value read by every module of
:mod:`found.refine` (a leaf: it imports nothing from the package, so colour maths, grids and both
solvers can depend on it without a loop).

The defaults are FOUND's (``bilateral_solver.py`` / ``misc.apply_bilateral_solver``).
``backend`` chooses the implementation: ``"auto"`` runs the numpy/scipy solver on CPU tensors
and the torch solver elsewhere; ``"torch"`` runs the device-agnostic torch code everywhere (what a
GPU runs, e.g. to test it on CPU); ``"numpy"`` insists on the numpy solver (CPU tensors only).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["BACKENDS", "RefineSettings", "as_settings"]

Backend = Literal["auto", "torch", "numpy"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "numpy")
DTYPES = (torch.float64, torch.float32)


@dataclass(frozen=True)
class RefineSettings:
    """Solver parameters (validated on construction; ints become floats where floats are meant)."""

    sigma_spatial: float = 16.0  # grid cell size in pixels
    sigma_luma: float = 16.0  # grid cell size in luma (Y) levels
    sigma_chroma: float = 8.0  # grid cell size in chroma (U, V) levels
    lam: float = 256.0  # smoothness weight λ
    max_iter: int = 25  # conjugate-gradient iterations at most
    tol: float = 1e-5  # CG stops when ‖r‖ < tol·‖b‖ (scipy's rule)
    confidence: float = 0.999  # per-pixel confidence of the target
    a_diag_min: float = 1e-5  # floor of A's diagonal in the Jacobi preconditioner
    bistochastize_iters: int = 10  # bistochastisation iterations
    dtype: torch.dtype = torch.float64  # CG precision: float64 reproduces the authors to ~1e-14
    backend: Backend = "auto"  # "auto" | "torch" | "numpy" (see the module docstring)

    def __post_init__(self) -> None:
        for name in ("sigma_spatial", "sigma_luma", "sigma_chroma", "confidence", "lam", "a_diag_min"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        object.__setattr__(self, "tol", _real(self.tol, "tol", lambda v: v >= 0, "a non-negative number"))
        for name in ("max_iter", "bistochastize_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {self.dtype}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {self.backend!r}")

    @property
    def sigmas(self) -> tuple[float, float, float]:
        """``(sigma_spatial, sigma_luma, sigma_chroma)``."""
        return (self.sigma_spatial, self.sigma_luma, self.sigma_chroma)

    def replace(self, **changes: Any) -> "RefineSettings":
        """A copy with some fields changed (validated); unknown names raise TypeError."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown refine setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def check_device(self, device: torch.device | str) -> None:
        """Raise a one-line ValueError when the backend cannot run on ``device``."""
        device = torch.device(device)
        if self.backend == "numpy" and device.type != "cpu":
            raise ValueError(f"backend='numpy' solves CPU tensors only, got tensors on {device}: "
                             "use backend='auto' or 'torch'")

    def uses_numpy(self, device: torch.device | str) -> bool:
        """Whether work on ``device`` runs the numpy/scipy code (after :meth:`check_device`)."""
        self.check_device(device)
        return self.backend != "torch" and torch.device(device).type == "cpu"


def as_settings(settings: RefineSettings | None) -> RefineSettings:
    """``settings``, or the defaults for None; anything else is a TypeError."""
    if settings is None:
        return RefineSettings()
    if not isinstance(settings, RefineSettings):
        raise TypeError(f"settings must be a RefineSettings, got {type(settings).__name__}")
    return settings


def _real(v: Any, name: str, ok: Any, what: str) -> float:
    """``float(v)`` if ``v`` is a finite real number (not a bool) that passes ``ok``, else ValueError."""
    if isinstance(v, bool) or not (isinstance(v, numbers.Real) and math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be {what}, got {v!r}")
    return float(v)


def _positive(name: str, v: Any) -> float:
    return _real(v, name, lambda x: x > 0, "a positive number")

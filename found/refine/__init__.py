"""Bilateral-solver refinement as in FOUND (Siméoni et al., CVPR 2023), batched: torch on any
device, numpy/scipy on CPU.

* :class:`RefineSettings` — the solver's parameters and backend ("auto", "torch", "numpy");
* :func:`bilateral_solve` — soft solver outputs for a batch of images of any sizes (CPU or CUDA);
* :func:`postprocess` / :func:`mask_iou` — the authors' component selection and accept IoU;
* :func:`refine_masks` — inference: refine full-resolution masks, accept if IoU > 0.5;
* :func:`pseudo_labels` — training: refined patch-level pseudo-labels for a batch.

See ``docs/refinement.md`` for the algorithm, the reference's quirks and the parity tolerances.
"""
from .colour import rgb_to_yuv
from .postprocess import KEEP_MODES, mask_iou, postprocess
from .refinement import IOU_THRESHOLD, RefineResult, pseudo_labels, refine_masks
from .settings import RefineSettings
from .solver import SolveOutput, bilateral_solve, clear_caches, solve_batch

__all__ = [
    "IOU_THRESHOLD",
    "KEEP_MODES",
    "RefineResult",
    "RefineSettings",
    "SolveOutput",
    "bilateral_solve",
    "clear_caches",
    "mask_iou",
    "postprocess",
    "pseudo_labels",
    "refine_masks",
    "rgb_to_yuv",
    "solve_batch",
]

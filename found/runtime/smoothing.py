"""Temporal smoothing as a wrapper core: :class:`SmoothedCore` averages another core's patch logits
over consecutive frames (an addition to the paper, for videos: ``found segment --smooth``)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import FoundError
from ..model.backbone import FoundFeatures, VisionTransformer
from .core import Core


class LogitsEMA:
    """Exponential moving average of patch logits over consecutive frames (an addition to the paper):
    ``s_k = alpha * l_k + (1 - alpha) * s_(k-1)``; ``alpha=1`` is no smoothing. It restarts when
    the frame size changes."""

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise FoundError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.state: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits of a batch of consecutive frames, each averaged with the state before it."""
        out = logits.clone()
        for i in range(out.shape[0]):
            if self.state is not None and self.state.shape == out[i].shape:
                out[i] = self.alpha * out[i] + (1 - self.alpha) * self.state
            self.state = out[i].clone()
        return out


class SmoothedCore:
    """``inner`` (any :class:`~found.runtime.core.Core`, same weights) whose ``patch_logits`` pass
    through a fresh :class:`LogitsEMA`: ``Found(SmoothedCore(model.core, alpha)).predict`` thresholds
    the smoothed logits. Batches must come in frame order (the engine keeps input order, and a
    video's frames share one padded size). ``features`` and ``logits_from_features`` are the inner
    core's, unsmoothed (they hold no state)."""

    def __init__(self, inner: Core, alpha: float) -> None:
        self.inner = inner
        self.ema = LogitsEMA(alpha)

    def __repr__(self) -> str:
        return f"SmoothedCore({self.inner!r}, alpha={self.ema.alpha})"

    @property
    def patch_size(self) -> int:
        """Pixels per patch cell (the inner core's)."""
        return self.inner.patch_size

    @property
    def device(self) -> torch.device:
        """Where the inner core's tensors live."""
        return self.inner.device

    @property
    def coarse(self) -> bool:
        """Whether the inner core's logits are ±1 step-1 masks."""
        return self.inner.coarse

    @property
    def precision(self) -> str:
        """The inner core's precision."""
        return self.inner.precision

    @property
    def tau(self) -> float:
        """The inner core's background threshold τ."""
        return self.inner.tau

    @property
    def backbone(self) -> VisionTransformer | None:
        """The inner core's torch backbone (None for an ONNX file)."""
        return self.inner.backbone

    @property
    def head(self) -> nn.Module | None:
        """The inner core's torch head (None for an ONNX file)."""
        return self.inner.head

    def features(self, x: torch.Tensor) -> FoundFeatures:
        """The inner core's features (not smoothed)."""
        return self.inner.features(x)

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """The inner core's logits of these features (not smoothed: no frame order is implied)."""
        return self.inner.logits_from_features(f)

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The inner core's logits of this batch of consecutive frames, averaged over the frames so far."""
        return self.ema(self.inner.patch_logits(x))

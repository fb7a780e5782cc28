"""Step 2 of FOUND: the 1×1 convolution that maps patch keys to an object logit."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FoundFeatures
from .background import DEFAULT_TAU, discover_background
from .masks import upsample_logits


class FoundHead(nn.Module):
    """``Conv2d(D, 1, 1)`` on the key map [B, D, h, w] → logits [B, 1, h, w] (385 parameters for ViT-S)."""

    #: Logits are real-valued: probabilities by sigmoid, pixels by bilinear upsampling.
    coarse = False

    def __init__(self, in_dim: int = 384) -> None:
        super().__init__()
        self.decoder = nn.Conv2d(in_dim, 1, kernel_size=1)

    def from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Object logits [B, 1, h, w] (float32) from the backbone's FOUND features."""
        return self(f.key_map()).float()

    @property
    def in_dim(self) -> int:
        """Channels of the key map the head takes (the backbone's embedding width)."""
        return self.decoder.in_channels

    def forward(self, key_map: torch.Tensor) -> torch.Tensor:
        """Object logits [B, 1, h, w] of a key map [B, D, h, w]."""
        return self.decoder(key_map)

    def state_for_saving(self) -> dict:
        """The authors' file format: ``{"decoder": {"weight": [1,D,1,1], "bias": [1]}}`` on CPU
        (files: :func:`found.hub.build.save_head` / :func:`found.hub.build.read_head`)."""
        return {"decoder": {k: v.detach().cpu().clone() for k, v in self.decoder.state_dict().items()}}

    def load_state(self, state: dict) -> None:
        """Load the authors' format (or a plain ``{"weight", "bias"}`` dict), checking shapes."""
        if "decoder" in state and isinstance(state["decoder"], dict):
            state = state["decoder"]
        state = {k.removeprefix("decoder."): v for k, v in state.items()}
        missing = {"weight", "bias"} - set(state)
        if missing:
            raise ValueError(f"head checkpoint lacks {sorted(missing)} (keys: {sorted(state)[:5]})")
        w, b = state["weight"], state["bias"]
        if tuple(w.shape) != (1, self.in_dim, 1, 1) or tuple(b.shape) != (1,):
            raise ValueError(
                f"head checkpoint has weight {tuple(w.shape)} / bias {tuple(b.shape)}, "
                f"expected (1, {self.in_dim}, 1, 1) / (1,) for this backbone"
            )
        self.decoder.load_state_dict({"weight": w.float(), "bias": b.float()})


class CoarseHead(nn.Module):
    """Step 1 alone as a head: background discovery gives logits +1 (object) / -1 (background).

    It has no parameters; with it the predictor, retrieval and the benchmark run the one
    features → logits → soft path whether or not a trained head is used.
    """

    #: Logits are ±1: probabilities are the binary mask itself, pixels by nearest upsampling.
    coarse = True

    def __init__(self, tau: float = DEFAULT_TAU) -> None:
        super().__init__()
        self.tau = tau

    def from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Coarse logits [B, 1, h, w]: +1 where background discovery finds the object, -1 elsewhere."""
        return coarse_logits(f, self.tau)


def coarse_logits(f: FoundFeatures, tau: float) -> torch.Tensor:
    """Step 1 as logits [B, 1, h, w] (float32): +1 object / -1 background, by background discovery with ``tau``."""
    bkg = discover_background(f.cls_attention, f.keys, f.grid_hw, tau=tau)
    return (bkg.objects.float() * 2 - 1)[:, None]


def probabilities(logits: torch.Tensor, coarse: bool) -> torch.Tensor:
    """Patch-level object probability: sigmoid of a head's logits, or the coarse binary mask."""
    return logits.gt(0).float() if coarse else torch.sigmoid(logits)


def soft_masks(logits: torch.Tensor, patch: int, image_hw: tuple[int, int], coarse: bool) -> torch.Tensor:
    """Pixel-level object probability [B, H, W]: bilinear ×patch of the logits then sigmoid (the
    authors' inference), or nearest ×patch of a coarse mask; cropped to ``image_hw``."""
    if coarse:
        return F.interpolate(logits.gt(0).float(), scale_factor=patch, mode="nearest")[:, 0, : image_hw[0], : image_hw[1]]
    return torch.sigmoid(upsample_logits(logits, patch, image_hw))[:, 0]

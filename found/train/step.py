"""One iteration of FOUND's self-training, as a function of (head, optimizer, features, images).

It restates the loop body of the authors' ``main_found_train.py``::

    preds_mask    = sigmoid(logits) > 0.5
    preds_mask_bs = bilateral(images, preds_mask)              # refined own prediction
    loss = w_bs_loss · BCE(logits, preds_mask_bs)               # every iteration
    if n_iter < stop_bkg_loss: loss += BCE(logits, bilateral(images, coarse object mask))
    else:                      loss += w_self_loss · BCE(logits, preds_mask)
    loss.backward(); optimizer.step(); scheduler.step()

All losses are BCE-with-logits averaged over every patch of the batch (feature-grid resolution).
The solver always keeps all components but the largest label (``keep="all"``: the authors' code
passes ``get_all_cc=True`` in both calls) and falls back to the input mask when IoU ≤ 0.5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..model.background import discover_background
from ..model.backbone import FoundFeatures
from ..errors import FoundError
from ..model.head import FoundHead
from ..runtime.device import autocast
from .config import TrainConfig

#: ``refine(images [B,3,H,W] in [0,1], patch_masks [B,h,w], patch=, keep=) -> (labels [B,h,w] bool, accepted [B] bool)``
Refiner = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]


def default_refiner() -> Refiner:
    """The batched bilateral solver of :mod:`found.refine` (FOUND's ``batch_apply_bilateral_solver``)."""
    try:
        from ..refine import pseudo_labels
    except ImportError as e:
        raise FoundError(f"training needs the bilateral solver (found.refine.pseudo_labels), which is not available: {e}") from None
    return pseudo_labels


def crop_to_patch(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Crop [.., H, W] right/bottom to multiples of ``patch`` (the training path crops, never pads)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % patch, : w - w % patch]


def extract_features(backbone: torch.nn.Module, x: torch.Tensor, precision: str = "fp32") -> FoundFeatures:
    """Frozen-backbone features of a normalised batch (cropped to the patch grid), in float32.

    Runs under ``torch.no_grad`` and, for bf16/fp16, under autocast (:func:`found.runtime.device.autocast`);
    attention and keys are cast back to float32 so the head, the losses and background discovery
    stay in full precision.
    """
    x = crop_to_patch(x, backbone.patch_size)
    with torch.no_grad(), autocast(x.device, precision):
        f = backbone.found_features(x)
    return FoundFeatures(cls_attention=f.cls_attention.float(), keys=f.keys.float(), grid_hw=f.grid_hw)


@dataclass
class StepResult:
    """What one iteration computed (tensors detached; floats already on the host)."""

    n_iter: int
    lr: float  # learning rate used by this step
    loss: float
    loss_refined_pred: float  # w_bs_loss · BCE(logits, refined own prediction)
    loss_coarse: float | None  # BCE(logits, refined coarse mask), iterations < stop_bkg_loss
    loss_self: float | None  # w_self_loss · BCE(logits, own prediction), later iterations
    logits: torch.Tensor  # [B, 1, h, w]
    pred_binary: torch.Tensor  # [B, h, w] bool
    pred_refined: torch.Tensor  # [B, h, w] bool
    pred_refined_accepted: torch.Tensor  # [B] bool
    coarse_object: torch.Tensor | None = None  # [B, h, w] bool
    coarse_refined: torch.Tensor | None = None  # [B, h, w] bool
    coarse_refined_accepted: torch.Tensor | None = None  # [B] bool

    @property
    def pseudo_label(self) -> torch.Tensor:
        """The solver-refined target shown in sample grids: coarse early, own prediction later."""
        return self.coarse_refined if self.coarse_refined is not None else self.pred_refined


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over all patches, flattened as the authors do ([B·h·w, 1])."""
    flat = logits.permute(0, 2, 3, 1).reshape(-1, 1)
    return F.binary_cross_entropy_with_logits(flat, target.reshape(-1).float()[:, None])


def step_loss(
    head: FoundHead,
    features: FoundFeatures,
    images: torch.Tensor,
    n_iter: int,
    cfg: TrainConfig,
    refine: Refiner | None = None,
    patch: int = 8,
) -> tuple[torch.Tensor, dict]:
    """The iteration's total loss (with graph) and its parts; no optimizer involved.

    ``images`` [B, 3, H, W] in [0, 1] are what the solver sees (the uncropped crops, as the authors'
    ``input_nonorm``); ``features`` come from the cropped, normalised input.
    """
    refine = refine or default_refiner()
    logits = head(features.key_map())
    with torch.no_grad():
        pred_binary = (torch.sigmoid(logits.detach()) > 0.5)[:, 0]
        pred_refined, pred_acc = refine(images, pred_binary.float(), patch=patch, keep=cfg.keep)
        pred_refined = pred_refined.to(logits.device).bool()
    loss_bs = cfg.w_bs_loss * _bce(logits, pred_refined)
    parts: dict = dict(logits=logits.detach(), pred_binary=pred_binary, pred_refined=pred_refined,
                       pred_refined_accepted=pred_acc.to(logits.device).bool(), loss_refined_pred=loss_bs.detach())
    if n_iter < cfg.stop_bkg_loss:
        with torch.no_grad():
            bkg = discover_background(features.cls_attention, features.keys, features.grid_hw, tau=cfg.bkg_th, reweight=cfg.reweight)
            coarse = bkg.objects
            coarse_refined, coarse_acc = refine(images, coarse.float(), patch=patch, keep=cfg.keep)
            coarse_refined = coarse_refined.to(logits.device).bool()
        loss_coarse = _bce(logits, coarse_refined)
        loss = loss_bs + loss_coarse
        parts.update(coarse_object=coarse, coarse_refined=coarse_refined,
                     coarse_refined_accepted=coarse_acc.to(logits.device).bool(), loss_coarse=loss_coarse.detach())
    else:
        loss_self = cfg.w_self_loss * _bce(logits, pred_binary)
        loss = loss_bs + loss_self
        parts["loss_self"] = loss_self.detach()
    return loss, parts


def train_step(
    head: FoundHead,
    optimizer: torch.optim.Optimizer,
    features: FoundFeatures,
    images: torch.Tensor,
    n_iter: int,
    cfg: TrainConfig,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    refine: Refiner | None = None,
    patch: int = 8,
) -> StepResult:
    """One optimisation step of the head on one batch (zero_grad, loss, backward, step, lr step)."""
    optimizer.zero_grad(set_to_none=True)
    loss, parts = step_loss(head, features, images, n_iter, cfg, refine=refine, patch=patch)
    loss.backward()
    lr = float(optimizer.param_groups[0]["lr"])
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    # one host transfer for all logged scalars
    nan = torch.tensor(math.nan, device=loss.device)
    scalars = torch.stack([loss.detach(), parts.pop("loss_refined_pred"), parts.pop("loss_coarse", nan),
                           parts.pop("loss_self", nan)]).double().cpu().tolist()
    total, bs, coarse, self_ = scalars
    return StepResult(
        n_iter=n_iter, lr=lr, loss=total, loss_refined_pred=bs,
        loss_coarse=None if math.isnan(coarse) else coarse,
        loss_self=None if math.isnan(self_) else self_,
        **parts,
    )

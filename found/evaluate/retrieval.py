"""Unsupervised semantic-segmentation retrieval on PASCAL VOC 2012 (FOUND's Table 3, MaskContrast's protocol).

MaskContrast (Van Gansbeke et al., ICCV 2021; ``segmentation/retrieval.py`` and
``utils/retrieval_utils.py``) evaluates an unsupervised saliency + embedding model this way:

1. images and labels resized to 512×512 (image bicubic, label nearest);
2. per image, one prototype = Σ_pixels embedding(x) · s(x)·[s(x) > 0.5], L2-normalised, where s is
   the saliency map and the embedding is bilinearly upsampled to the image;
3. memory bank from VOC12 ``train``: each image whose salient region exists and contains a
   labelled class gets the prototype and the **majority class** of the GT pixels inside its
   salient region (0 = background and 255 = ignore excluded; ties → larger class index);
4. each ``val`` image gets the class of its nearest prototype (cosine) on its salient pixels,
   background elsewhere;
5. IoU per class from TP/FP/FN summed over the whole val set, pixels labelled 255 ignored.
   21 classes: mean over all 21 (background included). 7 classes: the 13 other classes are
   mapped to 255 (ignored) in train and val labels, and the mean is over the 7 kept object classes
   (aeroplane, bottle, bus, car, cat, cow, person), background excluded.

FOUND (Sec. 4.3) applies it per **object**: "Given an object mask, we compute a per-object feature
vector averaged over the corresponding pixels", in train and val, and each val object takes the
label of its nearest train object. Its three setups are options here:

* ``objects="single"``: the whole binary mask ``s > 0.5`` is one object (MaskContrast's unit);
* ``objects="multi"``: each 4-connected component of the mask (scipy's default cross, as
  everywhere in :mod:`found.model.masks` and the bilateral post-processing) is an object; components
  smaller than 1 % of the (resized) image are discarded (their pixels are background in val);
* ``refine=True``: the binary mask is first refined with the bilateral solver on the resized image
  (:func:`found.refine.refine_masks`, ``keep="single"`` / ``"all"``), the result used only if its
  IoU with the input mask is > 0.5 (the authors' rule; otherwise the input mask is kept as is).

Pooling: ``"mean"`` = plain average of the upsampled features over the object's pixels (the paper's
text, default); ``"soft"`` = Σ over the object's pixels of feature · s(x) (MaskContrast's saliency
weighting; for ``objects="single"`` without refinement exactly the weight s·[s > 0.5] above). Both
are L2-normalised and compared by cosine similarity.

With FOUND, s = FOUND's object probability (sigmoid of the bilinearly upsampled head logits) and the
embedding = DINO patch features of the last block (the keys FOUND's head reads; ``tokens`` = the
final LayerNorm outputs). The sum over upsampled pixels is computed exactly, without materialising
the upsampled features, as Fᵀ·(Bᵀ w) with B the bilinear upsampling operator (:func:`bilinear_adjoint`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import FoundError
from ..model.preprocess import prepare
from .datasets import VOC_CLASSES

#: MaskContrast's 7-class setting ignores these 13 classes (``retrieval_..._unsupervised_saliency.yml``).
IGNORED_FOR_7 = (
    "bicycle", "bird", "boat", "chair", "diningtable", "dog", "horse", "motorbike", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
KEPT_7 = tuple(c for c in VOC_CLASSES[1:] if c not in IGNORED_FOR_7)
CLASS_SETS = ("21", "7")
IGNORE = 255
SALIENCY_THRESHOLD = 0.5
OBJECT_MODES = ("single", "multi")
POOLINGS = ("mean", "soft")
#: FOUND's multi-object setting discards components smaller than 1 % of the image.
MIN_OBJECT_FRACTION = 0.01


# ---------------------------------------------------------------------------- resizing
def resize_image_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] → [size, size, 3], bicubic (A = −0.75, half-pixel centres, no antialias:
    OpenCV's INTER_CUBIC convention, which MaskContrast uses), rounded and clipped."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    r = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)
    return r[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_label_nearest(label: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Class map → [H, W] with OpenCV's INTER_NEAREST rule: source index floor(dst · in/out)."""
    h, w = label.shape
    rows = np.minimum(np.floor(np.arange(hw[0]) * (h / hw[0])).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(hw[1]) * (w / hw[1])).astype(np.int64), w - 1)
    return label[rows[:, None], cols[None, :]]


def ignore_classes(label: np.ndarray, class_set: str) -> np.ndarray:
    """Map the classes left out of ``class_set`` to 255 (MaskContrast's ``ignore_classes``)."""
    if class_set == "21":
        return label
    out = label.copy()
    for name in IGNORED_FOR_7:
        out[label == VOC_CLASSES.index(name)] = IGNORE
    return out


# ---------------------------------------------------------------------------- prototypes
def _linear_basis(n: int, patch: int, out: int) -> torch.Tensor:
    """[n, out]: row i = 1-D linear ×patch upsampling (align_corners=False) of the unit vector e_i, cropped."""
    eye = torch.eye(n, dtype=torch.float64)[:, None, :]
    return F.interpolate(eye, scale_factor=patch, mode="linear", align_corners=False)[:, 0, :out]


def bilinear_adjoint(weights: torch.Tensor, grid_hw: tuple[int, int], patch: int) -> torch.Tensor:
    """Bᵀw [..., h, w] for B = bilinear ×patch upsampling cropped to ``weights``' size [..., H, W]:
    Σ_x up(f)(x)·w(x) = Σ_p f_p·(Bᵀw)_p for any patch map f (bilinear is separable). Leading
    dimensions (several weight maps) are batched."""
    h, w = grid_hw
    H, W = weights.shape[-2:]
    ah = _linear_basis(h, patch, H)  # [h, H]
    aw = _linear_basis(w, patch, W)  # [w, W]
    return ah @ weights.to(torch.float64) @ aw.T


def object_weights(objects: Sequence[np.ndarray] | np.ndarray, soft: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Pixel weights [K, H, W] (float64) of K object masks: ``mean`` → 1/|object| on the object
    (plain average), ``soft`` → s(x) on the object (saliency-weighted sum), 0 elsewhere."""
    if pooling not in POOLINGS:
        raise FoundError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    H, W = soft.shape
    if len(objects) == 0:
        return torch.zeros((0, H, W), dtype=torch.float64)
    m = torch.from_numpy(np.stack([np.asarray(o, dtype=bool) for o in objects])).to(torch.float64)
    if pooling == "soft":
        return m * soft.to(torch.float64)
    return m / m.sum((1, 2), keepdim=True).clamp(min=1)


def pooled_prototypes(features: torch.Tensor, grid_hw: tuple[int, int], weights: torch.Tensor, patch: int) -> torch.Tensor:
    """[K, D] L2-normalised Σ_x up(features)(x)·w_k(x) for weight maps ``weights`` [K, H, W];
    ``features`` [N, D] (row-major patch grid). A zero weight map gives a zero vector."""
    if weights.shape[0] == 0:
        return torch.zeros((0, features.shape[1]), dtype=torch.float32)
    g = bilinear_adjoint(weights, grid_hw, patch).reshape(weights.shape[0], -1)  # [K, N]
    proto = g @ features.to(torch.float64)
    return F.normalize(proto, dim=1).to(torch.float32)


def split_objects(binary: np.ndarray, objects: str = "single", min_fraction: float = MIN_OBJECT_FRACTION) -> list[np.ndarray]:
    """The objects of a binary mask [H, W]: ``single`` → the whole mask (none if empty);
    ``multi`` → its 4-connected components in label (raster) order, without those smaller than
    ``min_fraction`` of the H·W pixels (a component of exactly 1 % is kept)."""
    binary = np.asarray(binary, dtype=bool)
    if objects not in OBJECT_MODES:
        raise FoundError(f"objects must be one of {', '.join(OBJECT_MODES)}, got {objects!r}")
    if not binary.any():
        return []
    if objects == "single":
        return [binary]
    labeled, n = ndimage.label(binary)  # 4-connectivity, as found.model.masks and the bilateral post-processing
    counts = np.bincount(labeled.ravel(), minlength=n + 1)
    min_pixels = min_fraction * binary.size
    return [labeled == k for k in range(1, n + 1) if counts[k] >= min_pixels]


def refine_binary(image: np.ndarray, binary: np.ndarray, objects: str = "single") -> tuple[np.ndarray, bool]:
    """Bilateral-solver refinement of a binary mask on its (resized) uint8 image, the authors' way:
    ``keep="single"`` for single objects, ``"all"`` for multi; the solver's mask is used only if its
    IoU with ``binary`` is > 0.5, else ``binary`` is returned unchanged. Returns (mask, accepted)."""
    try:
        from ..refine import refine_masks
    except ImportError:  # pragma: no cover - optional component
        raise FoundError("--refine needs the bilateral solver (found.refine), which this installation lacks") from None
    binary = np.asarray(binary, dtype=bool)
    r = refine_masks([image], [binary.astype(np.float32)], keep="all" if objects == "multi" else "single")[0]
    return (np.asarray(r.binary, dtype=bool) if r.accepted else binary), bool(r.accepted)


def majority_class(label: np.ndarray, salient: np.ndarray) -> int | None:
    """Most frequent class (not 0, not 255) under the salient mask; ties → the larger class index;
    None if nothing is salient or only background/ignored pixels are."""
    if not salient.any():
        return None
    counts = np.bincount(label[salient].ravel(), minlength=256)
    counts[0] = 0
    counts[IGNORE] = 0
    if counts.max() == 0:
        return None
    best = counts.max()
    return int(np.nonzero(counts == best)[0].max())


class SemsegMeter:
    """TP/FP/FN per class over all pixels whose label is not 255 (MaskContrast's ``SemsegMeter``)."""

    def __init__(self, n_classes: int = 21) -> None:
        self.n = n_classes
        self.tp = np.zeros(n_classes, dtype=np.int64)
        self.fp = np.zeros(n_classes, dtype=np.int64)
        self.fn = np.zeros(n_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image's confusions; pixels labelled 255 are ignored, classes outside the table count as errors."""
        valid = gt != IGNORE
        p, g = pred[valid].astype(np.int64), gt[valid].astype(np.int64)
        inside = (p < self.n) & (g < self.n)
        conf = np.bincount(g[inside] * self.n + p[inside], minlength=self.n * self.n).reshape(self.n, self.n)
        tp = np.diag(conf)
        self.tp += tp
        self.fp += conf.sum(0) - tp + np.bincount(p[~inside & (p < self.n)], minlength=self.n)
        self.fn += conf.sum(1) - tp + np.bincount(g[~inside & (g < self.n)], minlength=self.n)

    def jaccards(self) -> np.ndarray:
        """IoU per class, TP / (TP + FP + FN), over every image so far (0 for a class never seen)."""
        return self.tp / np.maximum((self.tp + self.fp + self.fn).astype(np.float64), 1e-8)


def mean_iou(jac: np.ndarray, class_set: str) -> float:
    """21: mean over the 21 classes; 7: mean over the 7 kept object classes (background excluded)."""
    if class_set == "21":
        return float(np.mean(jac))
    return float(np.mean([jac[VOC_CLASSES.index(c)] for c in KEPT_7]))


# ---------------------------------------------------------------------------- model
@torch.inference_mode()
def forward_saliency_and_features(model, image: np.ndarray, features: str = "keys") -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """FOUND's soft map [H, W] and the patch features [N, D] (CPU, float32) for one uint8 image."""
    p = model.patch_size
    x = prepare(image, p).to(model.device)
    f = model.features(x)
    H, W = image.shape[:2]
    soft = model.soft_from_logits(model.logits_from_features(f), (H, W))[0]
    if features == "keys":
        feats = f.keys[0]
    elif features == "tokens":
        feats = model.backbone.forward_tokens(x)[0, model.backbone.num_prefix_tokens:].float()
    else:
        raise FoundError(f"--features must be 'keys' or 'tokens', got {features!r}")
    return soft.cpu(), feats.cpu(), f.grid_hw


@dataclass
class RetrievalResult:
    """A retrieval run's settings, mIoU and per-class IoU per class set, and the counts behind them."""

    class_sets: tuple[str, ...]
    objects: str = "single"
    pooling: str = "mean"
    refine: bool = False
    size: int = 512
    features: str = "keys"
    miou: dict[str, float] = field(default_factory=dict)
    jaccards: dict[str, dict[str, float]] = field(default_factory=dict)
    memory_bank_size: dict[str, int] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    n_train_objects: int = 0
    n_val_objects: int = 0
    n_val_without_salient: int = 0
    n_val_without_object: int = 0
    n_refined_train: int = 0
    n_refined_val: int = 0

    def settings(self) -> dict:
        """The protocol's settings of this run (objects, pooling, solver, thresholds) as reported."""
        return {
            "objects": self.objects,
            "pooling": self.pooling,
            "refine": self.refine,
            "size": self.size,
            "features": self.features,
            "saliency_threshold": SALIENCY_THRESHOLD,
            "min_object_fraction": MIN_OBJECT_FRACTION if self.objects == "multi" else None,
            "connectivity": 4 if self.objects == "multi" else None,
            "refine_keep": ("all" if self.objects == "multi" else "single") if self.refine else None,
            "refine_iou_threshold": 0.5 if self.refine else None,
        }

    def summary(self) -> dict:
        """Settings, mIoU (fraction and percent), per-class IoU and counts (``results.json``)."""
        out = {
            **self.settings(),
            "miou": self.miou,
            "miou_percent": {k: 100 * v for k, v in self.miou.items()},
            "per_class_iou": self.jaccards,
            "memory_bank_size": self.memory_bank_size,
            "n_train_images": self.n_train,
            "n_val_images": self.n_val,
            "n_train_objects": self.n_train_objects,
            "n_val_objects": self.n_val_objects,
            "n_val_without_salient_pixel": self.n_val_without_salient,
            "n_val_without_object": self.n_val_without_object,
        }
        if self.refine:
            out["n_refined_train_images"] = self.n_refined_train
            out["n_refined_val_images"] = self.n_refined_val
        return out


class ImageObjects(NamedTuple):
    """One image as the retrieval sees it: its mask, objects and their prototypes, and its label."""

    binary: np.ndarray  # [size, size] bool: FOUND's mask (refined when asked)
    objects: list[np.ndarray]  # the object masks split from it
    prototypes: torch.Tensor  # [K, D] L2-normalised, one per object
    label: np.ndarray  # [size, size] class map
    refined: bool  # the bilateral refinement was accepted


def _check_options(model, class_sets: Sequence[str], objects: str, pooling: str, size: int) -> None:
    """Refuse unknown class sets, object modes or poolings and a size off the patch grid, before any work."""
    for cs in class_sets:
        if cs not in CLASS_SETS:
            raise FoundError(f"unknown class set {cs!r}; choose from {', '.join(CLASS_SETS)}")
    if objects not in OBJECT_MODES:
        raise FoundError(f"objects must be one of {', '.join(OBJECT_MODES)}, got {objects!r}")
    if pooling not in POOLINGS:
        raise FoundError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if size % model.patch_size:
        raise FoundError(f"--size must be a multiple of the patch size {model.patch_size}")


def image_objects(model, sample, size: int, features: str, objects: str, pooling: str, refine: bool) -> ImageObjects:
    """Read one ``SegmentationSample``, resize it as MaskContrast, and pool FOUND's features over its objects."""
    from .datasets import read_label, read_rgb

    img = read_rgb(sample.image)
    lab = read_label(sample.label)
    if lab.shape != img.shape[:2]:  # MaskContrast resizes the label to the image first
        lab = resize_label_nearest(lab, img.shape[:2])
    img = resize_image_bicubic(img, size)
    lab = resize_label_nearest(lab, (size, size))
    soft, feats, grid = forward_saliency_and_features(model, img, features)
    binary = (soft > SALIENCY_THRESHOLD).numpy()
    accepted = False
    if refine and binary.any():  # an empty mask is never refined (the authors' IoU rule rejects it)
        binary, accepted = refine_binary(img, binary, objects)
    objs = split_objects(binary, objects)
    protos = pooled_prototypes(feats, grid, object_weights(objs, soft, pooling), model.patch_size)
    return ImageObjects(binary, objs, protos, lab, accepted)


def _memory_bank(load: Callable[[object], ImageObjects], train: Sequence, res: RetrievalResult,
                 progress: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per class set, the train objects' prototypes [M, D] and majority classes [M] (objects without one left out)."""
    from tqdm.auto import tqdm

    class_sets = res.class_sets
    banks: dict[str, tuple[list[torch.Tensor], list[int]]] = {cs: ([], []) for cs in class_sets}
    for s in tqdm(train, desc="retrieval: memory bank (train)", disable=not progress, unit="img"):
        _, objs, protos, lab, accepted = load(s)
        res.n_train_objects += len(objs)
        res.n_refined_train += int(accepted)
        for cs in class_sets:
            lab_cs = ignore_classes(lab, cs)
            for obj, proto in zip(objs, protos):
                c = majority_class(lab_cs, obj)
                if c is not None:
                    banks[cs][0].append(proto)
                    banks[cs][1].append(c)
    mem = {}
    for cs in class_sets:
        protos, labels = banks[cs]
        if not protos:
            raise FoundError(f"empty memory bank for {cs} classes: no train object lies mainly on a labelled class")
        mem[cs] = (torch.stack(protos), torch.tensor(labels, dtype=torch.int64))
        res.memory_bank_size[cs] = len(labels)
    return mem


def retrieve(objects: Sequence[np.ndarray], prototypes: torch.Tensor, shape: tuple[int, ...], bank: torch.Tensor,
             labels: torch.Tensor) -> np.ndarray:
    """Class map of one val image: each object takes its nearest (cosine) bank prototype's class, background elsewhere."""
    pred = np.zeros(shape, dtype=np.int64)
    if objects:
        nearest = torch.argmax(prototypes @ bank.T, dim=1)  # [K]
        for obj, k in zip(objects, nearest.tolist()):
            pred[obj] = int(labels[k])
    return pred


def _score_val(load: Callable[[object], ImageObjects], val: Sequence, mem: dict[str, tuple[torch.Tensor, torch.Tensor]],
               res: RetrievalResult, progress: bool) -> dict[str, SemsegMeter]:
    """Retrieve every val image's classes and accumulate TP/FP/FN per class set (the val counts go into ``res``)."""
    from tqdm.auto import tqdm

    meters = {cs: SemsegMeter(len(VOC_CLASSES)) for cs in res.class_sets}
    for s in tqdm(val, desc="retrieval: val", disable=not progress, unit="img"):
        binary, objs, protos, lab, accepted = load(s)
        res.n_val_objects += len(objs)
        res.n_refined_val += int(accepted)
        res.n_val_without_salient += int(not binary.any())
        res.n_val_without_object += int(not objs)
        for cs in res.class_sets:
            bank, labels = mem[cs]
            meters[cs].update(retrieve(objs, protos, lab.shape, bank, labels), ignore_classes(lab, cs))
    return meters


def _report(res: RetrievalResult, meters: dict[str, SemsegMeter]) -> None:
    """Fill ``res`` with each class set's mIoU and per-class IoU (its own classes only)."""
    for cs in res.class_sets:
        jac = meters[cs].jaccards()
        res.miou[cs] = mean_iou(jac, cs)
        names = VOC_CLASSES if cs == "21" else KEPT_7
        res.jaccards[cs] = {n: float(jac[VOC_CLASSES.index(n)]) for n in names}


def evaluate_retrieval(
    model,
    train: Sequence,
    val: Sequence,
    size: int = 512,
    features: str = "keys",
    class_sets: Sequence[str] = CLASS_SETS,
    progress: bool = True,
    objects: str = "single",
    pooling: str = "mean",
    refine: bool = False,
) -> RetrievalResult:
    """FOUND's Table-3 retrieval (MaskContrast's protocol, per object); ``train``/``val`` are
    ``SegmentationSample`` lists. ``objects``/``pooling``/``refine``: see the module docstring.
    ``memory_bank_size`` counts train **objects** with a labelled majority class."""
    _check_options(model, class_sets, objects, pooling, size)
    res = RetrievalResult(tuple(class_sets), objects=objects, pooling=pooling, refine=bool(refine), size=size,
                          features=features, n_train=len(train), n_val=len(val))
    load = partial(image_objects, model, size=size, features=features, objects=objects, pooling=pooling, refine=refine)
    mem = _memory_bank(load, train, res, progress)
    _report(res, _score_val(load, val, mem, res, progress))
    return res

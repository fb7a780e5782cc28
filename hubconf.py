"""torch.hub entry points: ``torch.hub.load("<owner>/found", "found_vits8")``."""
dependencies = ["torch", "numpy", "scipy", "PIL"]

from found.hub.build import build_found, load_backbone  # noqa: E402


def found_vits8(**kwargs):
    """FOUND with DINO ViT-S/8 (300 epochs) and the authors' head: the paper's model."""
    return build_found("found-vits8", **kwargs)


def found_coarse_vits8(**kwargs):
    """Training-free FOUND step 1 (background discovery) on DINO ViT-S/8 (300 epochs)."""
    return build_found("found-vits8", coarse=True, **kwargs)


def dino_vits8(**kwargs):
    """DINO ViT-S/8 backbone (800 epochs)."""
    return load_backbone("dino-vits8", **kwargs)


def dino_vits16(**kwargs):
    """DINO ViT-S/16 backbone."""
    return load_backbone("dino-vits16", **kwargs)


def dino_vitb8(**kwargs):
    """DINO ViT-B/8 backbone."""
    return load_backbone("dino-vitb8", **kwargs)


def dino_vitb16(**kwargs):
    """DINO ViT-B/16 backbone."""
    return load_backbone("dino-vitb16", **kwargs)


def found_coarse_dinov2_vits14(**kwargs):
    """FOUND step 1 on DINOv2 ViT-S/14 (experimental; no published head)."""
    return build_found("dinov2-vits14", coarse=True, **kwargs)


def found_coarse_dinov2_vits14_reg(**kwargs):
    """FOUND step 1 on DINOv2 ViT-S/14 with 4 registers (experimental; no published head)."""
    return build_found("dinov2-vits14-reg", coarse=True, **kwargs)

"""The networks the benchmarks run: DINO ViT-S/8's compute with random weights, registered backbones, real
weights from files, and the eager float32 baseline they are compared with."""
from __future__ import annotations

import torch

from ..errors import FoundError
from ..hub.registry import DEFAULT_MODEL
from ..model.backbone import VisionTransformer
from ..model.head import FoundHead
from ..predictor import Found
from ..runtime.eager import EagerCore
from ..runtime.torch_core import TorchCore

WEIGHTS_NOTE = (
    "weights: random ViT-S/8 (patch 8, 384-d, 12 blocks, 6 heads) + random head: same compute as "
    "DINO ViT-S/8, masks not meaningful"
)

#: (backbone, head) every benchmark uses; None = a random ViT-S/8 and head (see ``--weights``).
Nets = tuple[VisionTransformer, FoundHead] | None


def vit_s8(seed: int = 0) -> VisionTransformer:
    """DINO ViT-S/8's architecture with seeded random weights."""
    torch.manual_seed(seed)
    return VisionTransformer(patch_size=8, embed_dim=384, depth=12, num_heads=6).eval()


def random_head(dim: int = 384, seed: int = 1) -> FoundHead:
    """A FOUND head on ``dim``-d features with seeded random weights."""
    torch.manual_seed(seed)
    return FoundHead(dim).eval()


def default_nets(nets: Nets = None) -> tuple[VisionTransformer, FoundHead]:
    """``nets``, or a random ViT-S/8 and head when None."""
    return nets if nets is not None else (vit_s8(), random_head())


def registry_backbone(name: str, seed: int = 0) -> VisionTransformer:
    """A registered model's architecture (DINO or DINOv2) with seeded random weights: the same compute."""
    from ..hub.build import build_vit
    from ..hub.registry import get_model_spec

    try:
        arch = get_model_spec(name).arch
    except KeyError as e:
        raise FoundError(f"--backbones: {e.args[0]}") from None
    torch.manual_seed(seed)
    return build_vit(arch).eval().requires_grad_(False)


def load_nets(weights: str | None, head: str | None, num_heads: int | None = None) -> tuple[Nets, str]:
    """(backbone, head) from a backbone checkpoint and a head file (None: random ViT-S/8 and head), and the note printed."""
    if not weights and not head:
        return None, WEIGHTS_NOTE
    from ..hub.build import load_backbone, load_head

    vit = load_backbone("auto", weights, num_heads=num_heads) if weights else vit_s8()
    dim = vit.embed_dim
    if head is None and dim != 384:
        raise FoundError(f"the backbone is {dim}-d: the published head is for 384-d ViT-S/8; give --head PATH")
    fhead = load_head(head=head, in_dim=dim)
    what = f"backbone {weights}" if weights else "random ViT-S/8 backbone"
    return (vit, fhead.eval()), f"weights: {what} + head {head or 'published (' + DEFAULT_MODEL + ')'}"


def baseline_and_fast(device: torch.device, precisions: list[str], compile_mode: bool | str,
                      nets: Nets = None) -> tuple[Found, dict[str, Found]]:
    """The eager fp32 baseline (``Found(EagerCore(...))``) and one fast model per precision
    (``Found(TorchCore(...))``), sharing one backbone and head (``nets``)."""
    vit, head = default_nets(nets)
    compile_arg = compile_mode if device.type == "cuda" else False
    base = Found(EagerCore(vit, head, device=device))
    return base, {p: Found(TorchCore(vit, head, device=device, precision=p, compile=compile_arg)) for p in precisions}


def default_cpu_precisions() -> list[str]:
    """fp32, bf16 where the CPU has bfloat16 units (``--precision auto`` picks it there), int8."""
    from ..model.backbone import cpu

    return ["fp32", "bf16", "int8"] if cpu.available() and cpu.native_bf16() else ["fp32", "int8"]


def default_precisions(device: torch.device) -> list[str]:
    """The fast-path precisions ``found bench`` measures on ``device`` by default."""
    return ["fp32", "bf16"] if device.type == "cuda" else default_cpu_precisions()


def baseline_fits(device: torch.device, batch: int, hw: tuple[int, int], patch: int = 8, heads: int = 6) -> bool:
    """Whether the eager baseline's N×N attention maps (≈3 live copies) fit in half the free GPU memory."""
    if device.type != "cuda":
        return True
    n = (hw[0] // patch) * (hw[1] // patch) + 1
    need = 3 * batch * heads * n * n * 4
    free, _ = torch.cuda.mem_get_info(device)
    return need < free / 2

"""The model registry names every paper backbone, and local checkpoints load strictly."""
import pytest
import torch

from found import build_found, get_model_spec, list_models
from found.model.backbone import VisionTransformer
from found.hub.build import build_vit, load_backbone
from found.model.head import CoarseHead
from found.hub.weights import WeightsError, infer_arch
from found.hub.registry import DEFAULT_MODEL


def test_registry_has_the_papers_backbones_and_the_default_has_the_published_head():
    assert DEFAULT_MODEL == "found-vits8"
    spec = get_model_spec(DEFAULT_MODEL)
    assert spec.backbone.url.endswith("dino_deitsmall8_300ep_pretrain.pth")
    assert spec.head is not None and len(spec.head.sha256) == 64
    archs = {(get_model_spec(m).arch.embed_dim, get_model_spec(m).arch.patch_size) for m in list_models()}
    assert {(384, 8), (384, 16), (768, 8), (768, 16)} <= archs


def test_aliases_resolve_and_unknown_names_list_known_ones():
    assert get_model_spec("default").name == DEFAULT_MODEL
    with pytest.raises(KeyError, match="found-vits8"):
        get_model_spec("vit_huge")


@pytest.mark.parametrize("name", ["found-vits8", "dino-vitb16"])
def test_registered_architectures_match_dino_parameter_counts(name):
    vit = build_vit(get_model_spec(name).arch)
    n = sum(p.numel() for p in vit.parameters())
    expected = {"found-vits8": 21_670_272, "dino-vitb16": 85_798_656}[name]
    assert n == expected


def test_auto_model_reads_size_off_checkpoint_and_loads_strictly(tmp_path):
    torch.manual_seed(0)
    vit = VisionTransformer(patch_size=8, embed_dim=64, depth=2, num_heads=2)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}}, tmp_path / "ckpt.pth")
    loaded = load_backbone("auto", tmp_path / "ckpt.pth", num_heads=2)
    arch = infer_arch(loaded.state_dict(), 2)
    assert (arch.patch_size, arch.embed_dim, arch.depth, arch.num_heads) == (8, 64, 2, 2)
    for k, v in vit.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_registered_model_refuses_a_checkpoint_of_another_size(tmp_path):
    vit = VisionTransformer(patch_size=8, embed_dim=64, depth=2, num_heads=2)
    torch.save(vit.state_dict(), tmp_path / "small.pth")
    with pytest.raises(WeightsError, match="does not fit this architecture"):
        load_backbone("found-vits8", tmp_path / "small.pth")


def test_coarse_model_needs_no_head(tmp_path):
    vit = VisionTransformer(patch_size=8, embed_dim=64, depth=2, num_heads=2)
    torch.save(vit.state_dict(), tmp_path / "small.pth")
    model = build_found("auto", weights=tmp_path / "small.pth", coarse=True, device="cpu")
    assert model.coarse and isinstance(model.head, CoarseHead)
    with pytest.raises(WeightsError, match="no published FOUND head"):
        build_found("auto", weights=tmp_path / "small.pth", device="cpu")

"""DINOv2 checkpoints load in every layout: registry entries, torch.hub files, transformers folders."""
import shutil

import numpy as np
import pytest
import torch

from conftest import require
from dinov2_support import REPO_DINOV2, load_cases, model_state
from found.hub import weights as hub
from found.hub.build import load_backbone
from found.hub.registry import get_model_spec


@pytest.mark.parametrize("size,dim,heads,depth", [("s", 384, 6, 12), ("b", 768, 12, 12), ("l", 1024, 16, 24), ("g", 1536, 24, 40)])
@pytest.mark.parametrize("reg", [False, True])
def test_registry_has_official_dinov2_urls_with_and_without_registers(size, dim, heads, depth, reg):
    spec = get_model_spec(f"dinov2-vit{size}14{'-reg' if reg else ''}")
    stem = f"dinov2_vit{size}14{'_reg4' if reg else ''}"
    assert spec.backbone.url == f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{size}14/{stem}_pretrain.pth"
    a = spec.arch
    assert (a.family, a.patch_size, a.embed_dim, a.num_heads, a.depth, a.img_size) == ("dinov2", 14, dim, heads, depth, 518)
    assert a.num_register_tokens == (4 if reg else 0)
    assert a.ffn == ("swiglu" if size == "g" else "mlp")
    assert get_model_spec(f"dinov2_vit{size}14{'_reg' if reg else ''}") is spec  # torch.hub names as aliases


def test_missing_dinov2_file_offline_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(hub.ENV_OFFLINE, "1")
    with pytest.raises(hub.WeightsError) as e:
        load_backbone("dinov2-vits14-reg", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "dinov2_vits14_reg4_pretrain.pth" in msg and "weights=PATH" in msg


def test_dinov2_hub_file_loads_with_model_auto(tmp_path):
    d = load_cases(REPO_DINOV2 / "dinov2_tiny_reg4_cases.npz")
    path = tmp_path / "dinov2_tiny_reg4.pth"
    torch.save(model_state(d), path)
    vit = load_backbone("auto", path, num_heads=6)
    assert (vit.patch_size, vit.num_register_tokens, vit.interpolate_antialias, vit.interpolate_offset) == (14, 4, True, 0.0)
    c0 = {k[3:]: v for k, v in d.items() if k.startswith("c1_")}
    with torch.inference_mode():
        f = vit.found_features(torch.from_numpy(c0["x"]))
    np.testing.assert_allclose(f.cls_attention[0].numpy(), c0["cls_attention"], atol=1e-5, rtol=0)


def _check_against_cases(vit):
    d = load_cases(REPO_DINOV2 / "dinov2_tiny_reg4_cases.npz")
    for i in range(3):
        c = {k[len(f"c{i}_"):]: v for k, v in d.items() if k.startswith(f"c{i}_")}
        with torch.inference_mode():
            f = vit.found_features(torch.from_numpy(c["x"]))
            tokens = vit.forward_tokens(torch.from_numpy(c["x"]))[0]
        np.testing.assert_allclose(f.cls_attention[0].numpy(), c["cls_attention"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(f.keys[0].numpy(), c["keys"], atol=5e-5, rtol=0)
        np.testing.assert_allclose(tokens.numpy(), c["last_tokens"], atol=5e-5, rtol=0)


def test_transformers_safetensors_folder_loads_with_model_auto():
    require("safetensors", "hf")
    vit = load_backbone("auto", REPO_DINOV2 / "hf_tiny_reg4")  # heads from config.json
    assert (vit.num_heads, vit.num_register_tokens, vit.interpolate_antialias) == (6, 4, True)
    _check_against_cases(vit)


def test_transformers_bin_file_loads_too(tmp_path):
    require("safetensors", "hf")
    from found.hub.hf import load_safetensors

    state = load_safetensors(REPO_DINOV2 / "hf_tiny_reg4" / "model.safetensors")
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(REPO_DINOV2 / "hf_tiny_reg4" / "config.json", folder)
    torch.save({f"dinov2.{k}": v for k, v in state.items()}, folder / "pytorch_model.bin")  # prefixed, as in a derived model
    _check_against_cases(load_backbone("auto", folder / "pytorch_model.bin"))
    _check_against_cases(load_backbone("auto", folder))


def test_transformers_v5_attention_names_convert_to_qkv():
    require("safetensors", "hf")
    from found.hub.hf import convert_hf_state, load_safetensors

    state = load_safetensors(REPO_DINOV2 / "hf_tiny_reg4" / "model.safetensors")
    renamed = {k.replace("attention.attention.query", "attention.q_proj").replace("attention.attention.key", "attention.k_proj")
               .replace("attention.attention.value", "attention.v_proj").replace("attention.output.dense", "attention.o_proj"): v
               for k, v in state.items()}
    a, b = convert_hf_state(state), convert_hf_state(renamed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_registry_model_accepts_a_transformers_folder_as_weights():
    require("safetensors", "hf")
    with pytest.raises(hub.WeightsError, match="does not fit"):  # a registered ViT-S/14-reg, tiny weights
        load_backbone("dinov2-vits14-reg", REPO_DINOV2 / "hf_tiny_reg4")


@pytest.mark.parametrize("name,params", [("dinov2-vits14-reg", 385), ("dinov2-vitb14", 769), ("dinov2-vitl14-reg", 1025)])
def test_found_head_is_a_1x1_conv_over_the_key_dimension(name, params):
    from found.hub.build import build_vit
    from found.model.head import FoundHead

    with torch.device("meta"):
        vit = build_vit(get_model_spec(name).arch)
    assert sum(p.numel() for p in FoundHead(vit.embed_dim).parameters()) == params


def test_registered_dinov2_reg_loads_from_the_cache_and_matches_official(monkeypatch, tmp_path):
    """The full-size ViT-S/14-reg4 fixture, installed under the official file name: `--model dinov2-vits14-reg`."""
    from found.cli.main import main

    d = load_cases(REPO_DINOV2 / "dinov2_vits14_reg4_cases.npz")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(hub.ENV_OFFLINE, "1")
    src = tmp_path / "fetched_by_hand.pth"
    torch.save(model_state(d), src)
    assert main(["download", "dinov2-vits14-reg", "--from-file", "backbone", str(src)]) == 0
    assert (hub.cache_dir() / "dinov2_vits14_reg4_pretrain.pth").is_file()
    vit = load_backbone("dinov2-vits14-reg", progress=False)
    c = {k[3:]: v for k, v in d.items() if k.startswith("c0_")}
    with torch.inference_mode():
        f = vit.found_features(torch.from_numpy(c["x"]))
    np.testing.assert_allclose(f.cls_attention[0].numpy(), c["cls_attention"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(f.keys[0].numpy(), c["keys"], atol=5e-5, rtol=0)


def test_block_chunked_dinov2_checkpoint_keys_are_flattened(tmp_path):
    d = load_cases(REPO_DINOV2 / "dinov2_tiny_cases.npz")
    state = model_state(d)
    # block_chunks=2 over 3 blocks: chunk 0 holds blocks 0-1, chunk 1 holds block 2 (global indices kept)
    chunked = {(k.replace(f"blocks.{i}.", f"blocks.{i // 2}.{i}.", 1) if k.startswith("blocks.") else k): v
               for k, v in state.items() for i in [int(k.split(".")[1]) if k.startswith("blocks.") else -1]}
    assert "blocks.1.2.norm1.weight" in chunked
    torch.save({"teacher": {f"backbone.{k}": v for k, v in chunked.items()}}, tmp_path / "chunked.pth")
    vit = load_backbone("auto", tmp_path / "chunked.pth", num_heads=6)
    assert len(vit.blocks) == 3 and vit.num_register_tokens == 0 and vit.interpolate_offset == 0.1


def _to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys → transformers' legacy hub names (as convert_dinov2_to_hf.py writes them)."""
    top = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token", "pos_embed": "embeddings.position_embeddings",
           "register_tokens": "embeddings.register_tokens", "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias", "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    out = {}
    for k, v in state.items():
        if k in top:
            out[top[k]] = v
            continue
        _, i, rest = k.split(".", 2)
        p = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                out[p + f"attention.attention.{name}.{kind}"] = part
            continue
        rest = (rest.replace("attn.proj.", "attention.output.dense.").replace("ls1.gamma", "layer_scale1.lambda1")
                .replace("ls2.gamma", "layer_scale2.lambda1").replace("mlp.w12.", "mlp.weights_in.").replace("mlp.w3.", "mlp.weights_out."))
        out[p + rest] = v
    return out


def test_transformers_dinov2_without_registers_gets_the_official_interpolation(tmp_path):
    """A Dinov2Model-layout file of the official non-register tiny model reproduces the official cases
    (offset 0.1), also on the interpolated grids where transformers' own Dinov2Model differs."""
    import json

    d = load_cases(REPO_DINOV2 / "dinov2_tiny_cases.npz")
    folder = tmp_path / "hf"
    folder.mkdir()
    torch.save(_to_transformers(model_state(d)), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "num_attention_heads": 6, "hidden_size": 96}))
    vit = load_backbone("auto", folder)
    assert (vit.num_register_tokens, vit.interpolate_antialias, vit.interpolate_offset) == (0, False, 0.1)
    for i in range(3):
        c = {k[len(f"c{i}_"):]: v for k, v in d.items() if k.startswith(f"c{i}_")}
        with torch.inference_mode():
            f = vit.found_features(torch.from_numpy(c["x"]))
        np.testing.assert_allclose(f.cls_attention[0].numpy(), c["cls_attention"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(f.keys[0].numpy(), c["keys"], atol=5e-5, rtol=0)


def test_transformers_swiglu_names_convert():
    from found.model.backbone import DinoV2VisionTransformer
    from found.hub.hf import convert_hf_state

    vit = DinoV2VisionTransformer(embed_dim=48, depth=2, num_heads=3, img_size=56, ffn="swiglu")
    sd = vit.state_dict()
    back = convert_hf_state(_to_transformers(sd))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)

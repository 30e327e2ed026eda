"""PixArt-Σ original checkpoints: the Σ training code's ``.pth`` layout both ways, KV compression included.

The Σ layout is written here by hand (``PixArtMS`` keys of the Σ code's ``diffusion/model/nets``), not with the
library's key map: a diffusers model's weights under the original names, plus hand-made KV compression weights
(``blocks.N.attn.sr`` (D, 1, R, R) and ``blocks.N.attn.norm``), a 300-row null caption and the position table of
Σ's 256 px model (interpolation scale 0.5, in the original's numpy float64). The oracle: diffusers'
``PixArtTransformer2DModel`` on the same weights, with the compressed blocks' self-attention replaced by the Σ code's
compressed attention written out (:func:`test_kv_compression.sigma_attention`).
"""

from __future__ import annotations

import json

import pytest
import torch
from test_conversion import (
    CAPTION,
    DIM,
    HEADS,
    make_diffusers_pixart,
    original_position_table,
    pixart_output,
    randomize,
)
from test_kv_compression import sigma_attention
from tolerances import FORWARD

from diffusers_pixart import PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel
from diffusers_pixart.cli import main as cli
from diffusers_pixart.models import conversion
from diffusers_pixart.tiny import make_components

SAMPLE_SIZE, SIGMA_256_SCALE, NULL_TOKENS = 16, 0.5, 300


def sigma_original(reference, kv_layers=(1,), factor: int = 2, seed: int = 3) -> dict[str, torch.Tensor]:
    """The Σ code's state dict of ``reference`` (a diffusers model without micro-conditions), by hand, with random
    KV compression weights in the blocks ``kv_layers``, a (300, C) null caption and a scale-0.5 position table."""
    sd, g = reference.state_dict(), torch.Generator().manual_seed(seed)
    names = {
        "x_embedder.proj": "pos_embed.proj",
        "t_embedder.mlp.0": "adaln_single.emb.timestep_embedder.linear_1",
        "t_embedder.mlp.2": "adaln_single.emb.timestep_embedder.linear_2",
        "t_block.1": "adaln_single.linear",
        "y_embedder.y_proj.fc1": "caption_projection.linear_1",
        "y_embedder.y_proj.fc2": "caption_projection.linear_2",
        "final_layer.linear": "proj_out",
    }
    out = {f"{o}.{p}": sd[f"{d}.{p}"] for o, d in names.items() for p in ("weight", "bias")}
    out["final_layer.scale_shift_table"] = sd["scale_shift_table"]
    for i in range(reference.config.num_layers):
        b, o = f"transformer_blocks.{i}", f"blocks.{i}"
        out[f"{o}.scale_shift_table"] = sd[f"{b}.scale_shift_table"]
        for p in ("weight", "bias"):
            out[f"{o}.attn.qkv.{p}"] = torch.cat([sd[f"{b}.attn1.to_{x}.{p}"] for x in "qkv"])
            out[f"{o}.attn.proj.{p}"] = sd[f"{b}.attn1.to_out.0.{p}"]
            out[f"{o}.cross_attn.q_linear.{p}"] = sd[f"{b}.attn2.to_q.{p}"]
            out[f"{o}.cross_attn.kv_linear.{p}"] = torch.cat([sd[f"{b}.attn2.to_{x}.{p}"] for x in "kv"])
            out[f"{o}.cross_attn.proj.{p}"] = sd[f"{b}.attn2.to_out.0.{p}"]
            out[f"{o}.mlp.fc1.{p}"] = sd[f"{b}.ff.net.0.proj.{p}"]
            out[f"{o}.mlp.fc2.{p}"] = sd[f"{b}.ff.net.2.{p}"]
        if i in kv_layers:
            out[f"{o}.attn.sr.weight"] = torch.randn(DIM, 1, factor, factor, generator=g) * 0.3 + 1 / factor**2
            out[f"{o}.attn.sr.bias"] = torch.randn(DIM, generator=g) * 0.1
            out[f"{o}.attn.norm.weight"] = 1 + torch.randn(DIM, generator=g) * 0.1
            out[f"{o}.attn.norm.bias"] = torch.randn(DIM, generator=g) * 0.1
    grid = SAMPLE_SIZE // 2
    out["pos_embed"] = original_position_table(DIM, grid, SIGMA_256_SCALE, base_size=grid)
    out["y_embedder.y_embedding"] = torch.randn(NULL_TOKENS, CAPTION, generator=g) / CAPTION**0.5
    return {k: v.clone() for k, v in out.items()}


class SigmaAttention:
    """A diffusers attention processor running the Σ code's compressed self-attention on a fixed grid."""

    def __init__(self, original: dict[str, torch.Tensor], block: int, grid: tuple[int, int]):
        prefix = f"blocks.{block}.attn."
        self.sr = {k[len(prefix) :]: v for k, v in original.items() if k.startswith(prefix) and "qkv" not in k}
        self.grid = grid

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return sigma_attention(attn, hidden_states, self.grid, self.sr)


def sigma_oracle(reference, original, kv_layers, grid):
    for i in kv_layers:
        reference.transformer_blocks[i].attn1.set_processor(SigmaAttention(original, i, grid))
    return reference


def reference_model(seed: int = 21):
    return make_diffusers_pixart(seed, micro=False, sample_size=SAMPLE_SIZE, interpolation_scale=SIGMA_256_SCALE)


def test_sigma_checkpoint_loads_with_its_kv_compression_and_computes_what_the_sigma_code_does():
    reference = reference_model()
    original = sigma_original(reference)
    model = PixArtTransformer2DModel.from_original({"state_dict": original}, num_attention_heads=HEADS)
    config = model.config
    assert (config.kv_compress_factor, config.kv_compress_layers, config.kv_compress_sampling) == (2, [1], "conv")
    assert config.interpolation_scale == SIGMA_256_SCALE and not model.use_additional_conditions
    assert torch.equal(model.null_caption, original["y_embedder.y_embedding"])  # all 300 rows kept
    assert torch.equal(model.transformer_blocks[1].attn1.kv_compress.conv.weight, original["blocks.1.attn.sr.weight"])

    torch.manual_seed(4)
    latents, caption, t = torch.randn(2, 4, 16, 12), torch.randn(2, 9, CAPTION), torch.tensor([5, 900])
    mask = torch.tensor([[1] * 4 + [0] * 5, [1] * 9])
    oracle = sigma_oracle(reference, original, [1], grid=(8, 6))
    expected = pixart_output(oracle, latents, caption, t, mask)
    assert (pixart_output(model, latents, caption, t, mask) - expected).abs().max() <= FORWARD


def test_sigma_round_trip_writes_the_sigma_layout_back():
    reference = reference_model()
    original = sigma_original(reference, kv_layers=(0, 1), factor=2)
    exported = PixArtTransformer2DModel.from_original(original, num_attention_heads=HEADS).to_original()
    assert exported.keys() == original.keys()
    for key, value in original.items():
        atol = 1e-5 if key == "pos_embed" else 0  # the original's table is float64 rounded, ours float32
        torch.testing.assert_close(exported[key], value, rtol=0, atol=atol, msg=key)
    assert exported["y_embedder.y_embedding"].shape == (NULL_TOKENS, CAPTION)


def test_kv_variants_and_errors():
    reference = reference_model()
    original = sigma_original(reference)
    no_norm = {k: v for k, v in original.items() if ".attn.norm." not in k}  # our conv without the LayerNorm
    model = PixArtTransformer2DModel.from_original(no_norm, num_attention_heads=HEADS)
    assert model.config.kv_compress_sampling == "conv_no_norm" and model.to_original().keys() == no_norm.keys()

    # Σ's weightless "uniform" sampling: the file cannot tell it, the overrides do.
    plain = {k: v for k, v in no_norm.items() if ".attn.sr." not in k}
    kv = dict(kv_compress_factor=2, kv_compress_layers=[1], kv_compress_sampling="uniform")
    uniform = PixArtTransformer2DModel.from_original(plain, num_attention_heads=HEADS, **kv)
    assert {k: uniform.config[k] for k in kv} == kv
    assert PixArtTransformer2DModel.from_original(plain, num_attention_heads=HEADS).config.kv_compress_factor == 1
    with pytest.raises(ValueError, match=r"8 missing: blocks\.0\.attn\.norm\.bias.*blocks\.1\.attn\.sr\.weight"):
        PixArtTransformer2DModel.from_original(plain, num_attention_heads=HEADS, kv_compress_factor=2)
    with pytest.raises(ValueError, match="contradict the checkpoint: kv_compress_factor=4"):
        PixArtTransformer2DModel.from_original(original, num_attention_heads=HEADS, kv_compress_factor=4)

    mixed = {**sigma_original(reference, kv_layers=(0,), factor=4), **sigma_original(reference, kv_layers=(1,))}
    with pytest.raises(ValueError, match=r"factors \[2, 4\]"):
        PixArtTransformer2DModel.from_original(mixed, num_attention_heads=HEADS)
    qk_norm = dict(original, **{"blocks.0.attn.q_norm.weight": torch.ones(DIM)})
    with pytest.raises(ValueError, match="qk_norm"):
        PixArtTransformer2DModel.from_original(qk_norm, num_attention_heads=HEADS)


@pytest.mark.parametrize(
    "name, sample_size",
    [
        ("PixArt-Sigma-XL-2-256x256.pth", 32),
        ("PixArt-Sigma-XL-2-512-MS.pth", 64),
        ("PixArt-Sigma-XL-2-1024-MS.pth", 128),
        ("PixArt-Sigma-XL-2-2K-MS.pth", 256),
        ("epoch_1_step_500.pth", None),
    ],
)
def test_sample_size_from_sigma_file_names(name, sample_size):
    assert conversion._sample_size_from_name(name) == sample_size


def test_cli_converts_a_sigma_checkpoint_to_a_sigma_pipeline_and_back(tmp_path, capsys):
    reference = reference_model()
    original = sigma_original(reference)
    path = tmp_path / "PixArt-Sigma-XL-2-128x128.pth"
    torch.save({"state_dict": original}, path)
    # Components whose model_index.json names the α pipeline (as the Hub's pixart_sigma_sdxlvae_T5_diffusers may):
    # the checkpoint's 300-row null caption and KV compression make the pipeline Σ's.
    components = tmp_path / "components"
    PixArtAlphaPipeline(**make_components(caption_channels=CAPTION)).save_pretrained(components)

    out = tmp_path / "pipeline"
    args = ["convert", "original", str(path), str(out), "--num-heads", str(HEADS)]
    assert cli([*args, "--pipeline", "--components", str(components)]) == 0
    assert "KV compression 2x (conv) in blocks [1]" in capsys.readouterr().out
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "PixArtSigmaPipeline"
    pipe = PixArtSigmaPipeline.from_pretrained(out)
    assert pipe.transformer.config.kv_compress_layers == [1]
    assert torch.equal(conversion.load_null_caption(out / "transformer"), original["y_embedder.y_embedding"])

    back = tmp_path / "back.pth"
    assert cli(["convert", "to-original", str(out), str(back)]) == 0
    exported = torch.load(back, weights_only=True)["state_dict"]
    assert exported.keys() == original.keys()
    for key in ("blocks.1.attn.sr.weight", "blocks.1.attn.norm.bias", "y_embedder.y_embedding"):
        assert torch.equal(exported[key], original[key]), key


def test_a_compressed_model_is_blocked_from_plain_diffusers(tmp_path):
    from diffusers_pixart.hub import plain_diffusers_blockers

    components = make_components()
    components["transformer"].enable_kv_compression(2, [1])
    randomize(components["transformer"].transformer_blocks[1].attn1.kv_compress, seed=2)
    PixArtSigmaPipeline(**components).save_pretrained(tmp_path)
    assert any("KV token compression" in reason for reason in plain_diffusers_blockers(tmp_path))

"""Checkpoint conversion: the official PixArt layout both ways, and the DiT re-parameterization of section 2.3.

Oracles: diffusers' ``PixArtTransformer2DModel`` and ``DiTTransformer2DModel`` run on the same weights. The original
layouts are written here by hand (not with the library's key map), so a round trip cannot be trivially consistent.
"""

from __future__ import annotations

import json
import pickle
import uuid

import numpy as np
import pytest
import torch
from diffusers import DiTTransformer2DModel
from diffusers import PixArtTransformer2DModel as DiffusersPixArt
from safetensors.torch import save_file
from tolerances import FORWARD

from diffusers_pixart import PixArtTransformer2DModel
from diffusers_pixart.cli import main as cli
from diffusers_pixart.models import conversion

DIM, HEADS, LAYERS, CAPTION = 24, 2, 3, 16


def randomize(model: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Non-zero random weights everywhere (also in zero-initialised layers), so every path changes the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * std)
    return model.eval()


def make_dit(seed: int = 0, tied: bool = False) -> DiTTransformer2DModel:
    """A tiny diffusers DiT; ``tied`` gives every block block 0's timestep/class embedder, as the original has one."""
    dit = DiTTransformer2DModel(
        num_attention_heads=HEADS,
        attention_head_dim=DIM // HEADS,
        in_channels=4,
        out_channels=8,
        num_layers=LAYERS,
        sample_size=8,
        num_embeds_ada_norm=10,
        norm_eps=1e-6,
    )
    randomize(dit, seed, std=0.2)
    if tied:
        for block in dit.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    return dit


def dit_without_class(dit: DiTTransformer2DModel, original_frequencies: bool = False) -> DiTTransformer2DModel:
    """The oracle: the DiT with its class embedding removed (``c + t`` becomes ``t``).

    ``original_frequencies`` sets the timestep sinusoid to the facebookresearch code's (diffusers' DiT divides the
    frequency exponent by 127 instead of 128).
    """
    for block in dit.transformer_blocks:
        block.norm1.emb.class_embedder.forward = lambda labels, force_drop_ids=None: torch.zeros(len(labels), DIM)
        if original_frequencies:
            block.norm1.emb.time_proj.downscale_freq_shift = 0
    return dit


def dit_to_original(dit: DiTTransformer2DModel) -> dict[str, torch.Tensor]:
    """The facebookresearch layout of a (tied) diffusers DiT, written out by hand."""
    sd = dit.state_dict()
    emb = "transformer_blocks.0.norm1.emb"
    out = {
        "x_embedder.proj.weight": sd["pos_embed.proj.weight"],
        "x_embedder.proj.bias": sd["pos_embed.proj.bias"],
        "t_embedder.mlp.0.weight": sd[f"{emb}.timestep_embedder.linear_1.weight"],
        "t_embedder.mlp.0.bias": sd[f"{emb}.timestep_embedder.linear_1.bias"],
        "t_embedder.mlp.2.weight": sd[f"{emb}.timestep_embedder.linear_2.weight"],
        "t_embedder.mlp.2.bias": sd[f"{emb}.timestep_embedder.linear_2.bias"],
        "y_embedder.embedding_table.weight": sd[f"{emb}.class_embedder.embedding_table.weight"],
        "final_layer.adaLN_modulation.1.weight": sd["proj_out_1.weight"],
        "final_layer.adaLN_modulation.1.bias": sd["proj_out_1.bias"],
        "final_layer.linear.weight": sd["proj_out_2.weight"],
        "final_layer.linear.bias": sd["proj_out_2.bias"],
        "pos_embed": dit.pos_embed.pos_embed.clone(),
    }
    for i in range(LAYERS):
        b = f"transformer_blocks.{i}"
        for p in ("weight", "bias"):
            qkv = [sd[f"{b}.attn1.to_{x}.{p}"] for x in "qkv"]
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(qkv)
            out[f"blocks.{i}.attn.proj.{p}"] = sd[f"{b}.attn1.to_out.0.{p}"]
            out[f"blocks.{i}.mlp.fc1.{p}"] = sd[f"{b}.ff.net.0.proj.{p}"]
            out[f"blocks.{i}.mlp.fc2.{p}"] = sd[f"{b}.ff.net.2.{p}"]
            out[f"blocks.{i}.adaLN_modulation.1.{p}"] = sd[f"{b}.norm1.linear.{p}"]
    return {k: v.clone() for k, v in out.items()}


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return ((output - reference).norm() / reference.norm()).item()


@torch.no_grad()
def pixart_output(model, latents, caption, timestep, mask=None, added=None) -> torch.Tensor:
    return model(
        latents,
        encoder_hidden_states=caption,
        timestep=timestep,
        encoder_attention_mask=mask,
        added_cond_kwargs=added,
    ).sample


# ---------------------------------------------------------------------------------------------------------------------
# DiT -> PixArt (re-parameterization)
# ---------------------------------------------------------------------------------------------------------------------


def test_from_dit_equals_dit_without_class_at_t500_for_any_caption():
    dit = make_dit(seed=0)  # every block has its own timestep embedder: E(i) must absorb each
    model = PixArtTransformer2DModel.from_dit(dit, caption_channels=CAPTION)
    oracle = dit_without_class(dit)
    torch.manual_seed(1)
    latents, t500 = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    with torch.no_grad():
        reference = oracle(latents, timestep=t500, class_labels=torch.tensor([3, 7])).sample
    for caption, mask in ((torch.randn(2, 5, CAPTION), None), (torch.randn(2, 9, CAPTION) * 5, torch.ones(2, 9))):
        assert relative_error(pixart_output(model, latents, caption, t500), reference) <= 1e-4
        assert relative_error(pixart_output(model, latents, caption, t500, mask), reference) <= 1e-4

    # Away from t*, the global MLP no longer matches every block: the equality is a property of t*.
    with torch.no_grad():
        reference_t100 = oracle(latents, timestep=torch.tensor([100, 100]), class_labels=torch.tensor([3, 7])).sample
    caption = torch.randn(2, 5, CAPTION)
    assert relative_error(pixart_output(model, latents, caption, torch.tensor([100, 100])), reference_t100) > 1e-2

    # The documented choices, checked directly.
    mean_linear = torch.stack([b.norm1.linear.weight for b in dit.transformer_blocks]).mean(0)
    torch.testing.assert_close(model.adaln_single.linear.weight, mean_linear)
    for block in model.transformer_blocks:
        assert torch.count_nonzero(block.attn2.to_out[0].weight) == 0 and torch.count_nonzero(block.attn2.to_q.weight)
        assert torch.count_nonzero(block.attn2.to_q.bias) == 0
    proj = model.caption_projection.linear_1.weight
    assert torch.count_nonzero(model.caption_projection.linear_1.bias) == 0 and 0.01 < proj.std() < 0.03


def test_from_dit_with_another_timestep_matches_there():
    dit = make_dit(seed=2)
    model = PixArtTransformer2DModel.from_dit(dit, reparam_timestep=250, caption_channels=CAPTION)
    oracle = dit_without_class(dit)
    latents, t = torch.randn(1, 4, 8, 8), torch.tensor([250])
    with torch.no_grad():
        reference = oracle(latents, timestep=t, class_labels=torch.tensor([0])).sample
    assert relative_error(pixart_output(model, latents, torch.randn(1, 4, CAPTION), t), reference) <= 1e-4


def test_from_dit_original_pt_file_runs_the_original_dit(tmp_path):
    dit = make_dit(seed=3, tied=True)
    path = tmp_path / "DiT-tiny.pt"
    torch.save(dit_to_original(dit), path)
    from_file = PixArtTransformer2DModel.from_dit(path, caption_channels=CAPTION, num_attention_heads=HEADS)
    from_model = PixArtTransformer2DModel.from_dit(dit, caption_channels=CAPTION)

    # Same weights wherever the re-parameterization is not involved (also the randomly initialised new parts differ).
    ours, theirs = from_file.state_dict(), from_model.state_dict()
    for key in ours:
        if ".attn2." not in key and "caption_projection" not in key and "scale_shift_table" not in key:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)

    # The original DiT's timestep sinusoid is diffusers' with downscale_freq_shift=0: that is the oracle here.
    oracle = dit_without_class(dit, original_frequencies=True)
    latents, t500 = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    with torch.no_grad():
        reference = oracle(latents, timestep=t500, class_labels=torch.tensor([1, 2])).sample
    assert relative_error(pixart_output(from_file, latents, torch.randn(2, 3, CAPTION), t500), reference) <= 1e-4

    # A training checkpoint {"model", "ema"} takes the EMA weights by default.
    torch.save({"model": {k: v * 0 for k, v in dit_to_original(dit).items()}, "ema": dit_to_original(dit)}, path)
    from_training = PixArtTransformer2DModel.from_dit(path, caption_channels=CAPTION, num_attention_heads=HEADS)
    torch.testing.assert_close(from_training.proj_out.weight, from_model.proj_out.weight)


def test_from_dit_rejects_contradicting_overrides_and_wrong_files(tmp_path):
    dit = make_dit(seed=4)
    with pytest.raises(ValueError, match="num_layers=5"):
        PixArtTransformer2DModel.from_dit(dit, caption_channels=CAPTION, num_layers=5)
    with pytest.raises(ValueError, match="Unknown config arguments"):
        PixArtTransformer2DModel.from_dit(dit, caption_channels=CAPTION, depth=5)
    state_dict = dit_to_original(make_dit(seed=4, tied=True))
    del state_dict["blocks.1.mlp.fc2.bias"]
    torch.save(state_dict, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"1 missing: blocks\.1\.mlp\.fc2\.bias"):
        PixArtTransformer2DModel.from_dit(tmp_path / "broken.pt", num_attention_heads=HEADS)
    state_dict = dit_to_original(make_dit(seed=4, tied=True))
    with pytest.raises(ValueError, match="pass num_attention_heads"):
        PixArtTransformer2DModel.from_dit(state_dict_file(tmp_path / "ok.pt", state_dict))


def state_dict_file(path, state_dict):
    torch.save(state_dict, path)
    return path


def test_parameter_counts_of_xl2():
    """XL/2 built on the meta device: the paper's adaLN vs adaLN-single comparison, measured."""
    with torch.device("meta"):
        pixart_1024 = PixArtTransformer2DModel(caption_channels=4096)
        pixart_256 = PixArtTransformer2DModel(caption_channels=4096, sample_size=32)
        dit = DiTTransformer2DModel(out_channels=8)  # DiT-XL/2 defaults: 28 x 1152, 16 heads, patch 2
    assert sum(p.numel() for p in pixart_1024.parameters()) == 611_349_152  # the official count (facts.md)
    dit_count = conversion.dit_parameter_count(dit)
    # The DiT paper's 675,129,632 also counts the fixed sin-cos table, a frozen nn.Parameter there (256 x 1152).
    assert dit_count + 256 * 1152 == 675_129_632
    counts = conversion.parameter_counts(pixart_256)
    # Independently: the DiT without its class table, plus cross-attention and the caption projection.
    blocks = pixart_256.transformer_blocks
    added = sum(p.numel() for b in blocks for p in b.attn2.parameters())
    added += sum(p.numel() for p in pixart_256.caption_projection.parameters())
    class_table = dit.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight.numel()
    assert counts["adaln"] == dit_count - class_table + added
    assert counts["adaln_single"] == sum(p.numel() for p in pixart_256.parameters())
    assert counts == {"adaln_single": 610_856_096, "adaln": 828_494_240}
    assert conversion.parameter_counts(pixart_1024)["adaln"] == 828_987_296
    per_block_adaln = 28 * (1152 * 6 * 1152 + 6 * 1152) + 1152 * 2 * 1152 + 2 * 1152
    assert 0.27 < per_block_adaln / counts["adaln"] < 0.28  # the paper's "27% of the parameters"


# ---------------------------------------------------------------------------------------------------------------------
# Official PixArt layout
# ---------------------------------------------------------------------------------------------------------------------


def make_diffusers_pixart(
    seed: int, micro: bool, sample_size: int = 16, interpolation_scale: float | None = None
) -> DiffusersPixArt:
    model = DiffusersPixArt(
        num_attention_heads=HEADS,
        attention_head_dim=DIM // HEADS,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=DIM,
        caption_channels=CAPTION,
        sample_size=sample_size,
        use_additional_conditions=micro,
        interpolation_scale=interpolation_scale,
    )
    return randomize(model, seed)


def original_of(reference: DiffusersPixArt, null_caption: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    ours = PixArtTransformer2DModel(**{k: v for k, v in reference.config.items() if not k.startswith("_")})
    ours.load_state_dict(reference.state_dict())
    return ours.to_original(null_caption=null_caption)


@pytest.mark.parametrize("micro", [False, True])
def test_original_round_trip_matches_diffusers(micro):
    reference = make_diffusers_pixart(seed=5, micro=micro)
    original = original_of(reference)
    model = PixArtTransformer2DModel.from_original({"state_dict": original}, num_attention_heads=HEADS)
    assert model.config.sample_size == 16 and model.use_additional_conditions == micro  # from pos_embed and keys
    assert model.config.caption_channels == CAPTION and model.config.num_layers == 2
    torch.manual_seed(6)
    latents, caption, t = torch.randn(2, 4, 16, 12), torch.randn(2, 7, CAPTION), torch.tensor([1, 999])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    added = {"resolution": torch.tensor([[128.0, 96.0], [96.0, 128.0]]), "aspect_ratio": torch.tensor([[0.75], [1.3]])}
    added = added if micro else None
    expected = pixart_output(reference, latents, caption, t, mask, added)
    assert (pixart_output(model, latents, caption, t, mask, added) - expected).abs().max() <= FORWARD


def test_original_key_mapping_by_hand():
    reference = make_diffusers_pixart(seed=7, micro=True)
    original = original_of(reference)
    block = reference.transformer_blocks[1]
    qkv = original["blocks.1.attn.qkv.weight"]
    assert qkv.shape == (3 * DIM, DIM)
    assert torch.equal(qkv[:DIM], block.attn1.to_q.weight) and torch.equal(qkv[DIM : 2 * DIM], block.attn1.to_k.weight)
    assert torch.equal(qkv[2 * DIM :], block.attn1.to_v.weight)
    assert torch.equal(original["blocks.1.attn.qkv.bias"][DIM : 2 * DIM], block.attn1.to_k.bias)
    kv = original["blocks.1.cross_attn.kv_linear.weight"]
    assert torch.equal(kv[:DIM], block.attn2.to_k.weight) and torch.equal(kv[DIM:], block.attn2.to_v.weight)
    assert torch.equal(original["blocks.1.cross_attn.q_linear.weight"], block.attn2.to_q.weight)
    assert torch.equal(original["blocks.1.mlp.fc1.weight"], block.ff.net[0].proj.weight)
    assert torch.equal(original["t_block.1.weight"], reference.adaln_single.linear.weight)
    assert torch.equal(original["t_embedder.mlp.2.bias"], reference.adaln_single.emb.timestep_embedder.linear_2.bias)
    assert torch.equal(
        original["csize_embedder.mlp.0.weight"], reference.adaln_single.emb.resolution_embedder.linear_1.weight
    )
    assert torch.equal(
        original["ar_embedder.mlp.2.weight"], reference.adaln_single.emb.aspect_ratio_embedder.linear_2.weight
    )
    assert torch.equal(original["y_embedder.y_proj.fc2.weight"], reference.caption_projection.linear_2.weight)
    assert torch.equal(original["final_layer.scale_shift_table"], reference.scale_shift_table)
    assert torch.equal(original["final_layer.linear.weight"], reference.proj_out.weight)
    assert original["pos_embed"].shape == (1, 64, DIM)  # (16 / 2)^2 positions


def test_from_original_file_ema_null_caption_and_sample_size_from_name(tmp_path):
    raw, averaged = make_diffusers_pixart(seed=8, micro=False), make_diffusers_pixart(seed=9, micro=False)
    null_caption = torch.randn(120, CAPTION)
    checkpoint = {"state_dict": original_of(raw, null_caption), "state_dict_ema": original_of(averaged, null_caption)}
    for state_dict in checkpoint.values():
        del state_dict["pos_embed"]
    path = tmp_path / "PixArt-XL-2-128x128.pth"  # 128 px -> sample size 16
    torch.save(checkpoint, path)

    model = PixArtTransformer2DModel.from_original(path, num_attention_heads=HEADS)
    assert model.config.sample_size == 16
    assert torch.equal(model.proj_out.weight, averaged.proj_out.weight)  # EMA by default
    assert torch.equal(model.null_caption, null_caption)
    raw_model = PixArtTransformer2DModel.from_original(path, ema=False, num_attention_heads=HEADS)
    assert torch.equal(raw_model.proj_out.weight, raw.proj_out.weight)
    # Exported again, the null caption goes back where the original code reads it.
    assert torch.equal(model.to_original()["y_embedder.y_embedding"], null_caption)

    nameless = tmp_path / "weights.pth"
    torch.save(checkpoint, nameless)
    with pytest.raises(ValueError, match="pass sample_size"):
        PixArtTransformer2DModel.from_original(nameless, num_attention_heads=HEADS)
    assert PixArtTransformer2DModel.from_original(nameless, 16, num_attention_heads=HEADS).config.sample_size == 16

    # safetensors holds a plain state dict.
    save_file(checkpoint["state_dict"], tmp_path / "PixArt-XL-2-128x128.safetensors")
    loaded = PixArtTransformer2DModel.from_original(tmp_path / "PixArt-XL-2-128x128.safetensors", num_attention_heads=2)
    assert torch.equal(loaded.proj_out.weight, raw.proj_out.weight)
    with pytest.raises(ValueError, match="EMA weights were asked for"):
        PixArtTransformer2DModel.from_original(tmp_path / "PixArt-XL-2-128x128.safetensors", ema=True)


def original_position_table(dim: int, grid: int, lewei_scale: float, base_size: int) -> torch.Tensor:
    """The official code's ``get_2d_sincos_pos_embed`` (PixArt.py), in numpy float64 as it computes it: (1, N, D)."""

    def one_axis(positions: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
        out = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.arange(grid, dtype=np.float32) / (grid / base_size) / lewei_scale
    grid_w, grid_h = np.meshgrid(coords, coords)  # w first, as the original
    table = np.concatenate([one_axis(grid_w), one_axis(grid_h)], axis=1)
    return torch.from_numpy(table).float().unsqueeze(0)


@pytest.mark.parametrize("lewei_scale", [2, 1.5])
def test_from_original_reads_the_interpolation_scale_of_the_saved_position_table(lewei_scale):
    # A checkpoint trained with lewei_scale 2 at a 16-latent sample size (8x8 grid): diffusers' default would be 1.
    reference = make_diffusers_pixart(seed=12, micro=False, interpolation_scale=lewei_scale)
    original = original_of(reference)
    original["pos_embed"] = original_position_table(DIM, 8, lewei_scale, base_size=8)
    model = PixArtTransformer2DModel.from_original(original, num_attention_heads=HEADS)
    assert model.config.interpolation_scale == lewei_scale
    torch.manual_seed(13)
    latents, caption, t = torch.randn(2, 4, 16, 16), torch.randn(2, 5, CAPTION), torch.tensor([3, 700])
    expected = pixart_output(reference, latents, caption, t)
    assert (pixart_output(model, latents, caption, t) - expected).abs().max() <= FORWARD  # float32 summation order

    with pytest.raises(ValueError, match=rf"interpolation_scale=1 \(the checkpoint has {lewei_scale}\)"):
        PixArtTransformer2DModel.from_original(original, num_attention_heads=HEADS, interpolation_scale=1)
    # Without a table the scale is diffusers' default for the sample size.
    del original["pos_embed"]
    assert (
        PixArtTransformer2DModel.from_original(original, 16, num_attention_heads=HEADS).pos_embed.interpolation_scale
        == 1
    )


def test_from_original_rejects_a_position_table_that_is_not_sin_cos():
    original = original_of(make_diffusers_pixart(seed=14, micro=False))
    original["pos_embed"] = original["pos_embed"] + 0.01 * torch.randn_like(original["pos_embed"])
    with pytest.raises(ValueError, match="not the sin-cos table of its 8x8 grid"):
        PixArtTransformer2DModel.from_original(original, num_attention_heads=HEADS)


class Payload:
    """An arbitrary object in a pickle: loading it would run code, so ``weights_only`` refuses it."""


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    original = original_of(make_diffusers_pixart(seed=10, micro=False))
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        PixArtTransformer2DModel.from_original(text)

    full = tmp_path / "full.pth"
    torch.save({"state_dict": original}, full)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        PixArtTransformer2DModel.from_original(truncated)
    broken_safetensors = tmp_path / "broken.safetensors"
    broken_safetensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a readable safetensors checkpoint"):
        PixArtTransformer2DModel.from_original(broken_safetensors)

    unsafe = tmp_path / "unsafe.pth"
    with open(unsafe, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f, protocol=2)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        PixArtTransformer2DModel.from_original(unsafe)

    # Another architecture: a DiT state dict names what is missing.
    with pytest.raises(ValueError, match=r"lacks .*t_block\.1\.weight"):
        PixArtTransformer2DModel.from_original(dit_to_original(make_dit(tied=True)))
    partial = dict(original)
    del partial["blocks.1.cross_attn.kv_linear.weight"]
    partial["blocks.1.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"1 missing: blocks\.1\.cross_attn\.kv_linear\.weight") as info:
        PixArtTransformer2DModel.from_original(partial, num_attention_heads=HEADS)
    assert "1 unexpected: blocks.1.extra.weight" in str(info.value)
    wrong_shape = dict(original, **{"blocks.0.attn.proj.weight": torch.zeros(DIM, DIM + 1)})
    with pytest.raises(ValueError, match="does not fit the architecture"):
        PixArtTransformer2DModel.from_original(wrong_shape, num_attention_heads=HEADS)
    with pytest.raises(ValueError, match="contradict the checkpoint: num_layers=4"):
        PixArtTransformer2DModel.from_original(original, num_attention_heads=HEADS, num_layers=4)
    with pytest.raises(FileNotFoundError):
        PixArtTransformer2DModel.from_original(tmp_path / "absent.pth")


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def test_cli_convert_original_and_back(tmp_path, capsys):
    reference = make_diffusers_pixart(seed=11, micro=True)
    null_caption = torch.randn(6, CAPTION)
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": original_of(reference, null_caption)}, path)
    out = tmp_path / "converted"
    assert cli(["convert", "original", str(path), str(out), "--num-heads", str(HEADS)]) == 0
    model = PixArtTransformer2DModel.from_pretrained(out)
    assert torch.equal(conversion.load_null_caption(out), null_caption)
    latents, caption = torch.randn(1, 4, 16, 16), torch.randn(1, 3, CAPTION)
    added = {"resolution": torch.tensor([[128.0, 128.0]]), "aspect_ratio": torch.tensor([[1.0]])}
    expected = pixart_output(reference, latents, caption, torch.tensor([10]), added=added)
    assert (pixart_output(model, latents, caption, torch.tensor([10]), added=added) - expected).abs().max() <= FORWARD

    assert cli(["convert", "original", str(path), str(out), "--num-heads", str(HEADS)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err

    back = tmp_path / "back.pth"
    assert cli(["convert", "to-original", str(out), str(back)]) == 0
    exported = torch.load(back, weights_only=True)["state_dict"]
    for key, value in original_of(reference, null_caption).items():
        torch.testing.assert_close(exported[key], value, rtol=0, atol=0, msg=key)


def test_cli_convert_dit_folder_and_pipeline(tmp_path, capsys):
    from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
    from diffusers_pixart.tiny import make_pipeline

    dit = make_dit(seed=12)
    dit.save_pretrained(tmp_path / "dit" / "transformer")  # a pipeline-style folder: the DiT is in transformer/
    components = tmp_path / "components"
    pipe = make_pipeline()
    pipe.save_pretrained(components)
    caption_channels = pipe.text_encoder.config.d_model

    out = tmp_path / "stage1"
    argv = ["convert", "dit", str(tmp_path / "dit"), str(out), "--caption-channels", str(caption_channels)]
    assert cli([*argv, "--pipeline", "--components", str(components)]) == 0
    printed = capsys.readouterr().out
    assert f"DiT: {conversion.dit_parameter_count(dit):,} parameters" in printed
    converted = PixArtAlphaPipeline.from_pretrained(out)
    assert json.loads((out / "model_index.json").read_text())["transformer"][0].startswith("diffusers_pixart")
    expected = PixArtTransformer2DModel.from_dit(dit, caption_channels=caption_channels)
    for key, value in expected.state_dict().items():
        if ".attn2.to_" in key and "to_out" not in key or "caption_projection" in key:
            continue  # random initialisation
        torch.testing.assert_close(converted.transformer.state_dict()[key], value, msg=key)

    assert cli(["convert", "dit", str(tmp_path / "dit"), str(tmp_path / "x"), "--pipeline"]) == 2
    assert "--pipeline needs --components" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_from_dit_hub_ids(hub, tmp_path):
    """A Hub pipeline repo (DiT in transformer/, like facebook/DiT-XL-2-256) and a transformer-only repo."""
    from huggingface_hub import HfApi

    dit = make_dit(seed=13)
    api = HfApi(token="hf_alice_write")
    pipeline_dir, transformer_dir = tmp_path / "pipeline", tmp_path / "transformer_only"
    dit.save_pretrained(pipeline_dir / "transformer")
    (pipeline_dir / "model_index.json").write_text(
        json.dumps({"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"]})
    )
    dit.save_pretrained(transformer_dir)
    expected = PixArtTransformer2DModel.from_dit(dit, caption_channels=CAPTION).scale_shift_table
    for folder in (pipeline_dir, transformer_dir):
        repo_id = api.create_repo(f"dit-{folder.name}-{uuid.uuid4().hex[:8]}").repo_id
        api.upload_folder(folder_path=folder, repo_id=repo_id)
        model = PixArtTransformer2DModel.from_dit(repo_id, caption_channels=CAPTION)
        torch.testing.assert_close(model.scale_shift_table, expected, rtol=0, atol=0)

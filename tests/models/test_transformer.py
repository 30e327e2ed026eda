"""PixArtTransformer2DModel against diffusers' PixArtTransformer2DModel as the oracle."""

from __future__ import annotations

import inspect
import json

import diffusers
import pytest
import torch
from tolerances import FORWARD

from diffusers_pixart import PixArtTransformer2DModel
from diffusers_pixart.tiny import make_transformer


def oracle_of(model: PixArtTransformer2DModel) -> diffusers.PixArtTransformer2DModel:
    """diffusers' model with the same config and weights (strict load)."""
    oracle = diffusers.PixArtTransformer2DModel.from_config(model.config).eval()
    oracle.load_state_dict(model.state_dict(), strict=True)
    return oracle


def inputs(batch=2, height=16, width=16, caption_len=7, caption_channels=32, padded=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, caption_len, dtype=torch.long)
    if padded:
        mask[1:, caption_len // 2 :] = 0
    return dict(
        hidden_states=torch.randn(batch, 4, height, width, generator=g),
        encoder_hidden_states=torch.randn(batch, caption_len, caption_channels, generator=g),
        timestep=torch.tensor([999, 17, 500, 0][:batch]),
        encoder_attention_mask=mask,
        added_cond_kwargs={
            "resolution": torch.tensor([[height * 8.0, width * 8.0]]).repeat(batch, 1),
            "aspect_ratio": torch.tensor([[height / width]]).repeat(batch, 1),
        },
    )


@pytest.mark.parametrize(
    "overrides, size",
    [
        ({}, (16, 16)),  # square at the training grid
        ({}, (12, 20)),  # non-square: position table recomputed
        ({"use_additional_conditions": True, "sample_size": 128}, (16, 24)),  # micro-conditions, interpolation 2
        ({"interpolation_scale": 2}, (16, 16)),
        ({"interpolation_scale": 1, "sample_size": 128, "use_additional_conditions": False}, (8, 8)),
        ({"caption_channels": None, "cross_attention_dim": 32}, (16, 16)),  # no caption projection
    ],
)
def test_forward_matches_diffusers(overrides, size):
    model = make_transformer(**overrides)
    caption_channels = model.config.caption_channels or model.config.cross_attention_dim
    kwargs = inputs(height=size[0], width=size[1], caption_channels=caption_channels)
    with torch.no_grad():
        ours = model(**kwargs).sample
        theirs = oracle_of(model)(**kwargs).sample
    assert ours.shape == (2, 8, *size)
    assert (ours - theirs).abs().max().item() <= FORWARD


def test_padding_changes_output_and_bias_mask_is_accepted():
    model = make_transformer()
    kwargs = inputs()
    with torch.no_grad():
        masked = model(**kwargs).sample
        unmasked = model(**{**kwargs, "encoder_attention_mask": None}).sample
        as_bias = model(
            **{**kwargs, "encoder_attention_mask": model.mask_to_bias(kwargs["encoder_attention_mask"], torch.float32)}
        ).sample
    # the first row has no padding: the same values, though with a mask attention may run another kernel
    torch.testing.assert_close(masked[0], unmasked[0], rtol=0, atol=FORWARD)
    assert not torch.allclose(masked[1], unmasked[1])
    assert torch.equal(masked, as_bias)


def test_config_keys_and_defaults_match_diffusers():
    ours = inspect.signature(PixArtTransformer2DModel.__init__).parameters
    theirs = inspect.signature(diffusers.PixArtTransformer2DModel.__init__).parameters
    kv_compression = ["kv_compress_factor", "kv_compress_layers", "kv_compress_sampling"]  # PixArt-Σ's, off by default
    guidance = ["guidance_embedding"]  # a consistency student's guidance-scale embedding, off by default
    assert list(ours) == list(theirs) + kv_compression + guidance
    assert {k: ours[k].default for k in theirs} == {k: p.default for k, p in theirs.items()}
    assert ours["kv_compress_factor"].default == 1 and ours["guidance_embedding"].default is False


def test_xl2_parameter_count_and_fallbacks():
    with torch.device("meta"):
        model = PixArtTransformer2DModel(caption_channels=4096)
        small = PixArtTransformer2DModel(caption_channels=4096, sample_size=64)
    assert sum(p.numel() for p in model.parameters()) == 611_349_152
    assert model.use_additional_conditions and model.pos_embed.interpolation_scale == 2
    assert not small.use_additional_conditions and small.pos_embed.interpolation_scale == 1


def test_state_dict_keys_match_diffusers():
    model = make_transformer(use_additional_conditions=True, sample_size=128)
    oracle = diffusers.PixArtTransformer2DModel.from_config(model.config)
    assert set(model.state_dict()) == set(oracle.state_dict())
    assert not any("pos_embed.pos_embed" in k for k in model.state_dict())


def test_legacy_official_config_loads_strictly(tmp_path):
    """A folder shaped like PixArt-alpha/PixArt-XL-2-1024-MS/transformer (legacy class name and keys)."""
    model = make_transformer(sample_size=128, use_additional_conditions=True)
    oracle_of(model).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(
        _class_name="Transformer2DModel",
        double_self_attention=False,
        num_vector_embeds=None,
        only_cross_attention=False,
        use_linear_projection=False,
    )
    del config["interpolation_scale"], config["use_additional_conditions"]
    (tmp_path / "config.json").write_text(json.dumps(config))

    loaded, info = PixArtTransformer2DModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, PixArtTransformer2DModel)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    assert loaded.use_additional_conditions and loaded.pos_embed.interpolation_scale == 2
    kwargs = inputs(height=16, width=24)
    with torch.no_grad():
        assert torch.equal(loaded(**kwargs).sample, model(**kwargs).sample)


def test_saved_folder_loads_in_diffusers_and_back(tmp_path):
    model = make_transformer()
    model.save_pretrained(tmp_path / "ours")
    theirs, info = diffusers.PixArtTransformer2DModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    theirs.save_pretrained(tmp_path / "theirs")
    back = PixArtTransformer2DModel.from_pretrained(tmp_path / "theirs")
    kwargs = inputs()
    with torch.no_grad():
        expected = model(**kwargs).sample
        assert (theirs(**kwargs).sample - expected).abs().max() <= FORWARD
        assert torch.equal(back(**kwargs).sample, expected)


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = make_transformer().train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(**inputs()).sample.square().mean().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=FORWARD, atol=FORWARD / 10, msg=name)


def test_half_precision_forward_at_1024px_activations_is_finite():
    """A 128x128 latent (a 1024px image, 4096 tokens) through fp16 weights, or bf16 where CPU lacks fp16 kernels."""
    model = make_transformer(sample_size=128, use_additional_conditions=True)
    kwargs = inputs(batch=1, height=128, width=128)
    for dtype in (torch.float16, torch.bfloat16):
        try:
            half = make_transformer(sample_size=128, use_additional_conditions=True).to(dtype)
            cast = {
                k: v.to(dtype) if torch.is_floating_point(v) else v
                for k, v in kwargs.items()
                if k != "added_cond_kwargs"
            }
            cast["added_cond_kwargs"] = {k: v.to(dtype) for k, v in kwargs["added_cond_kwargs"].items()}
            with torch.no_grad():
                out = half(**cast).sample
            break
        except RuntimeError:  # no kernel for this dtype on this CPU
            continue
    assert out.dtype in (torch.float16, torch.bfloat16)
    assert torch.isfinite(out).all()
    with torch.no_grad():
        reference = model(**kwargs).sample
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_bad_inputs_raise_clear_errors():
    model = make_transformer(sample_size=128, use_additional_conditions=True)
    kwargs = inputs()
    with pytest.raises(ValueError, match="added_cond_kwargs"):
        model(**{**kwargs, "added_cond_kwargs": None})
    with pytest.raises(ValueError, match="patch size"):
        model(**{**kwargs, "hidden_states": torch.randn(2, 4, 15, 16)})
    with pytest.raises(ValueError, match="divisible by 3"):
        PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, use_additional_conditions=True)
    with pytest.raises(ValueError, match="ada_norm_single"):
        PixArtTransformer2DModel(norm_type="ada_norm_zero")

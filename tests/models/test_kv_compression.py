"""PixArt-Σ's KV token compression in PixArtTransformer2DModel.

Oracles: the Σ training code's compressed attention written out directly (depthwise strided convolution and LayerNorm
on keys and values, then softmax attention), average pooling for the "Conv Avg Init", and the uncompressed model where
the output must not change (attention on keys and values constant over each window, compression off). Then the
model's other features with compression on: the caption cache, regional compilation, LoRA, gradient checkpointing,
fused projections, saving and loading.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from test_transformer import inputs
from tolerances import FORWARD

from diffusers_pixart import PixArtTransformer2DModel
from diffusers_pixart.hub import LORA_PREFIX, LORA_WEIGHT_NAME, save_lora_weights
from diffusers_pixart.models.attention import KVCompression, caption_cache
from diffusers_pixart.tiny import make_transformer

#: Σ's 2K/4K configs compress the deep half of the blocks 2 x 2; the tiny model has two blocks: the second.
SIGMA_LIKE = dict(kv_compress_factor=2, kv_compress_layers=[1])


def forward(model: PixArtTransformer2DModel, **overrides) -> torch.Tensor:
    with torch.no_grad():
        return model(**{**inputs(height=12, width=20), **overrides}).sample


def sigma_attention(attn, x: torch.Tensor, grid: tuple[int, int], sr: dict[str, torch.Tensor]) -> torch.Tensor:
    """The Σ code's ``AttentionKVCompress`` with ``sampling="conv"``, evaluated directly: ``attn``'s projections and
    the compression weights ``sr`` (``sr.weight`` (D, 1, R, R), ``sr.bias``, ``norm.weight``, ``norm.bias``)."""
    (h, w), dim, factor = grid, x.shape[-1], sr["sr.weight"].shape[-1]
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)

    def down(t: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N / R^2, D)
        t = t.reshape(t.shape[0], h, w, dim).permute(0, 3, 1, 2)
        t = F.conv2d(t, sr["sr.weight"], sr["sr.bias"], stride=factor, groups=dim)
        return F.layer_norm(t.flatten(2).transpose(1, 2), (dim,), sr["norm.weight"], sr["norm.bias"], 1e-5)

    k, v = down(k), down(v)
    q, k, v = (t.unflatten(-1, (attn.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, h, S, d)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return attn.to_out[0]((weights @ v).transpose(1, 2).flatten(2))


def window_constant(batch: int, grid: tuple[int, int], factor: int, dim: int) -> torch.Tensor:
    """Tokens (B, H * W, D) equal within each ``factor`` x ``factor`` window of the grid."""
    coarse = torch.randn(batch, grid[0] // factor, grid[1] // factor, dim, generator=torch.Generator().manual_seed(3))
    return coarse.repeat_interleave(factor, 1).repeat_interleave(factor, 2).flatten(1, 2)


# ------------------------------------------------------------------------------------------ the operator
def test_off_by_default_so_every_checkpoint_loads_unchanged():
    model = make_transformer()
    assert model.config.kv_compress_factor == 1
    assert not any("kv_compress" in key for key in model.state_dict())
    assert all(getattr(block.attn1, "kv_compress", None) is None for block in model.transformer_blocks)


def test_compressed_attention_is_the_sigma_code_s():
    model = make_transformer(**SIGMA_LIKE)  # every weight random, the convolution and LayerNorm too
    attn, grid = model.transformer_blocks[1].attn1, (6, 10)
    compress = attn.kv_compress
    sr = {"sr.weight": compress.conv.weight, "sr.bias": compress.conv.bias}
    sr.update({"norm.weight": compress.norm.weight, "norm.bias": compress.norm.bias})
    x = torch.randn(2, 60, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, grid_size=grid), sigma_attention(attn, x, grid, sr), rtol=0, atol=FORWARD)


def test_conv_starts_as_the_window_mean_and_uniform_takes_the_first_token():
    tokens = torch.randn(2, 6 * 8, 16)
    grid = tokens.transpose(1, 2).reshape(2, 16, 6, 8)
    with torch.no_grad():
        mean = KVCompression(16, 2, "conv_no_norm")(tokens, (6, 8))
        normed = KVCompression(16, 2, "conv")(tokens, (6, 8))
    expected = F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(mean, expected, rtol=0, atol=FORWARD)
    torch.testing.assert_close(normed, F.layer_norm(expected, (16,)), rtol=0, atol=FORWARD)
    assert torch.equal(KVCompression(16, 2, "uniform")(tokens, (6, 8)), grid[:, :, ::2, ::2].flatten(2).transpose(1, 2))
    assert not list(KVCompression(16, 2, "uniform").parameters())


@pytest.mark.parametrize("sampling", ["conv_no_norm", "uniform"])
def test_output_unchanged_where_keys_and_values_are_constant_over_windows(sampling):
    """Each window's R^2 equal keys get R^2 equal softmax weights: one compressed key of the same logit and value
    takes their total weight. So the average-initialised convolution (and uniform sampling) change nothing there."""
    plain = make_transformer()
    compressed = make_transformer()
    compressed.enable_kv_compression(2, sampling=sampling)
    x = window_constant(2, (6, 10), 2, 24)
    for block, reference in zip(compressed.transformer_blocks, plain.transformer_blocks):
        with torch.no_grad():
            out = block.attn1(x, grid_size=(6, 10))
            torch.testing.assert_close(out, reference.attn1(x), rtol=0, atol=FORWARD)
            # and on general tokens compression does change the output
            y = torch.randn_like(x)
            assert (block.attn1(y, grid_size=(6, 10)) - reference.attn1(y)).abs().max() > 1e-3


def test_sigma_s_layernorm_changes_the_start():
    """With the Σ code's LayerNorm (``"conv"``) the compressed keys are normalised, so even window-constant tokens
    give another output at initialisation: the exact start needs ``"conv_no_norm"`` or ``"uniform"``."""
    plain, compressed = make_transformer(), make_transformer()
    compressed.enable_kv_compression(2)
    x = window_constant(1, (6, 10), 2, 24)
    with torch.no_grad():
        difference = compressed.transformer_blocks[0].attn1(x, grid_size=(6, 10)) - plain.transformer_blocks[0].attn1(x)
    assert difference.abs().max() > 1e-3


def test_grids_not_divisible_by_the_factor_run_as_in_sigma():
    for sampling, kept in (("conv", 2 * 3), ("uniform", 3 * 3)):
        tokens = torch.randn(1, 5 * 6, 8)
        assert KVCompression(8, 2, sampling)(tokens, (5, 6)).shape == (1, kept, 8)
        model = make_transformer(kv_compress_factor=2, kv_compress_sampling=sampling)
        assert forward(model, **inputs(height=10, width=12)).shape == (2, 8, 10, 12)


def test_bad_settings_raise_naming_them():
    with pytest.raises(ValueError, match="sampling 'pool'"):
        make_transformer(kv_compress_factor=2, kv_compress_sampling="pool")
    with pytest.raises(ValueError, match="kv_compress_layers"):
        make_transformer(kv_compress_factor=2, kv_compress_layers=[0, 2])
    with pytest.raises(ValueError, match="factor must be an integer"):
        KVCompression(8, 1.5)
    with pytest.raises(ValueError, match="factor >= 2"):
        make_transformer().enable_kv_compression(1)
    with pytest.raises(ValueError, match="grid_size"):
        make_transformer(**SIGMA_LIKE).transformer_blocks[1].attn1(torch.randn(1, 16, 24))


# ------------------------------------------------------------------------------------------ with the model's features
def test_enable_saves_loads_and_matches_a_model_built_with_it(tmp_path):
    built = make_transformer(**SIGMA_LIKE)
    enabled = make_transformer()
    enabled.enable_kv_compression(2, [1])
    enabled.load_state_dict(built.state_dict())
    assert {k: enabled.config[k] for k in SIGMA_LIKE} == SIGMA_LIKE
    assert torch.equal(forward(enabled), forward(built))
    enabled.save_pretrained(tmp_path)
    loaded = PixArtTransformer2DModel.from_pretrained(tmp_path)
    assert torch.equal(forward(loaded), forward(built))
    assert (forward(built) - forward(make_transformer())).abs().max() > 1e-3  # compression is in use


def test_caption_cache_and_fused_projections_keep_the_output():
    model = make_transformer(**SIGMA_LIKE)
    expected = forward(model)
    with caption_cache():
        assert torch.equal(forward(model), expected) and torch.equal(forward(model), expected)
    with caption_cache(drop_padding=True):
        torch.testing.assert_close(forward(model), expected, rtol=0, atol=FORWARD)
    model.fuse_qkv_projections()
    torch.testing.assert_close(forward(model), expected, rtol=0, atol=FORWARD)


def test_regional_compilation_has_no_graph_break():
    """``compile_repeated_blocks(fullgraph=True)``: blocks with and without compression each trace whole (the eager
    backend: what is checked is the tracing, not a compiler)."""
    model = make_transformer(**SIGMA_LIKE)
    expected = forward(model)
    model.compile_repeated_blocks(fullgraph=True, backend="eager")
    torch.testing.assert_close(forward(model), expected, rtol=0, atol=FORWARD)


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = make_transformer(**SIGMA_LIKE).train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(**inputs(height=12, width=20)).sample.square().mean().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert any("kv_compress.conv" in name for name in plain) and plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=FORWARD, atol=FORWARD / 10, msg=name)


def test_lora_trains_saves_and_loads_on_a_compressed_model(tmp_path):
    model = make_transformer(**SIGMA_LIKE)
    base = forward(model)
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.1)
    adapted = forward(model)
    assert (adapted - base).abs().max() > 1e-3
    model.train()
    model(**inputs(height=12, width=20)).sample.square().mean().backward()
    assert model.transformer_blocks[1].attn1.to_k.lora_A["default"].weight.grad.abs().sum() > 0
    save_lora_weights(model, tmp_path)
    fresh = make_transformer(**SIGMA_LIKE)
    fresh.load_lora_adapter(tmp_path, weight_name=LORA_WEIGHT_NAME, prefix=LORA_PREFIX)
    assert torch.equal(forward(fresh.eval()), adapted)

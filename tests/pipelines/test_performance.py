"""The optimized paths give the plain paths' results: caption cache, padding drop, fused projections, compile.

No timing here (see ``benchmarks/``): each test compares an optimized computation with the plain one or with
diffusers' model, and checks the bookkeeping (what is computed once, what is recomputed).
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from tolerances import FORWARD, IMAGES

from diffusers_pixart import PixArtAlphaPipeline
from diffusers_pixart.models.attention import (
    PixArtAttnProcessor,
    active_caption_cache,
    caption_cache,
    drop_padding,
    scaled_dot_product_attention,
)
from diffusers_pixart.tiny import make_components, make_transformer

PROMPTS = ["a red circle above a blue square", "two green stars on the left"]


def model_inputs(batch=2, caption_len=9, seed=0, mask=None):
    g = torch.Generator().manual_seed(seed)
    if mask is None:
        mask = torch.ones(batch, caption_len, dtype=torch.long)
        mask[0, 3:] = 0  # row 0: 3 tokens; row 1: 6 tokens; columns 6.. are padding in every row
        mask[1, 6:] = 0
    return dict(
        hidden_states=torch.randn(batch, 4, 16, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, caption_len, 32, generator=g),
        timestep=torch.tensor([999, 17][:batch]),
        encoder_attention_mask=mask,
    )


class CallCounter:
    """Counts forward calls and input rows of modules (forward pre-hooks)."""

    def __init__(self, *modules: torch.nn.Module):
        self.calls, self.rows = 0, 0
        self.handles = [module.register_forward_pre_hook(self.hook) for module in modules]

    def hook(self, module, args):
        self.calls += 1
        self.rows += args[0].shape[0]


def test_drop_padding_keeps_only_columns_used_by_some_row():
    caption = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    mask = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 0, 0, 0]])
    kept, kept_mask = drop_padding(caption, mask)
    assert torch.equal(kept, caption[:, :3]) and torch.equal(kept_mask, mask[:, :3])
    # No padding left: no mask at all (unmasked SDPA).
    assert drop_padding(caption, torch.ones(2, 5))[1] is None
    # A row with no token at all: diffusers spreads its attention over the padding, so nothing may be dropped.
    empty_row = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert drop_padding(caption, empty_row)[0] is caption
    bias = torch.zeros(2, 1, 5)
    assert drop_padding(caption, bias)[1] is bias and drop_padding(caption, None) == (caption, None)


def test_caption_work_runs_once_per_caption_and_is_exact():
    model = make_transformer()
    kwargs = model_inputs()
    with torch.no_grad():
        plain = model(**kwargs).sample
        projection = CallCounter(model.caption_projection)
        keys = CallCounter(*(block.attn2.to_k for block in model.transformer_blocks))
        with caption_cache():
            steps = [model(**{**kwargs, "timestep": t}).sample for t in (torch.tensor([999, 17]),) * 3]
            assert projection.calls == 1 and keys.calls == len(model.transformer_blocks)
            # A new caption tensor (e.g. replaced by a step-end callback) is projected again ...
            model(**{**kwargs, "encoder_hidden_states": kwargs["encoder_hidden_states"].clone()})
            assert projection.calls == 2
            # ... and so is one edited in place.
            kwargs["encoder_hidden_states"].mul_(1.0)
            model(**kwargs)
            assert projection.calls == 3
    for sample in steps:
        assert torch.equal(sample, plain)


def test_cache_stores_nothing_with_gradients_and_nothing_outside_the_context():
    model = make_transformer().train()
    counter = CallCounter(model.caption_projection)
    kwargs = model_inputs()
    with caption_cache() as cache:
        for _ in range(2):
            model(**kwargs).sample.square().mean().backward()
        assert counter.calls == 2 and not cache._entries
        assert model.caption_projection.linear_1.weight.grad is not None
    assert active_caption_cache() is None


def test_dropping_padding_matches_diffusers():
    model = make_transformer()
    oracle = diffusers.PixArtTransformer2DModel.from_config(model.config).eval()
    oracle.load_state_dict(model.state_dict(), strict=True)
    all_valid = torch.ones(2, 9, dtype=torch.long)
    for kwargs in (model_inputs(), model_inputs(mask=all_valid)):
        with torch.no_grad():
            expected = oracle(**kwargs).sample
            with caption_cache(drop_padding=True):
                with caption_cache() as inner:  # the pipeline's own context inherits the setting
                    assert inner.drop_padding
                    dropped = model(**kwargs).sample
        assert (dropped - expected).abs().max() <= FORWARD


def test_fused_projections_are_exact_and_removable():
    model = make_transformer()
    kwargs = model_inputs()
    keys = set(model.state_dict())
    with torch.no_grad():
        plain = model(**kwargs).sample
        model.fuse_qkv_projections()
        assert {"transformer_blocks.0.attn1.to_qkv.weight", "transformer_blocks.0.attn2.to_kv.weight"} <= set(
            model.state_dict()
        )
        fused_calls = CallCounter(*(block.attn1.to_qkv for block in model.transformer_blocks))
        unfused_calls = CallCounter(*(block.attn1.to_q for block in model.transformer_blocks))
        fused = model(**kwargs).sample
        assert fused_calls.calls == len(model.transformer_blocks) and unfused_calls.calls == 0
        model.unfuse_qkv_projections()
        assert set(model.state_dict()) == keys
        assert torch.equal(model(**kwargs).sample, plain)
    assert (fused - plain).abs().max() <= FORWARD


def test_fused_projections_never_bypass_an_adapter_or_training():
    kwargs = model_inputs()
    config = LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v"])
    reference = make_transformer()
    reference.add_adapter(config)
    fused = make_transformer()
    fused.fuse_qkv_projections()
    fused.add_adapter(config)
    fused.load_state_dict(reference.state_dict(), strict=False)
    with torch.no_grad():
        expected = reference(**kwargs).sample
        assert (fused(**kwargs).sample - expected).abs().max() <= FORWARD
    # With gradients on, the real q/k/v weights are used (and trained), not the frozen fused copies.
    plain = make_transformer().train()
    plain.fuse_qkv_projections()
    plain(**kwargs).sample.sum().backward()
    block = plain.transformer_blocks[0]
    assert block.attn1.to_q.weight.grad is not None and block.attn1.to_qkv.weight.grad is None


def test_processor_rejects_a_mask_it_cannot_broadcast():
    model = make_transformer()
    attn = model.transformer_blocks[0].attn2
    assert isinstance(attn.processor, PixArtAttnProcessor)
    with pytest.raises(ValueError, match="attention mask"):
        attn(torch.randn(1, 4, 24), encoder_hidden_states=torch.randn(1, 3, 24), attention_mask=torch.zeros(1, 3))


def test_optimized_pipeline_matches_diffusers_and_encodes_each_text_once():
    components = make_components()
    ours = PixArtAlphaPipeline(**components)
    transformer = diffusers.PixArtTransformer2DModel.from_config(components["transformer"].config).eval()
    transformer.load_state_dict(components["transformer"].state_dict(), strict=True)
    theirs = diffusers.PixArtAlphaPipeline(**{**components, "transformer": transformer})
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    call = dict(num_inference_steps=3, output_type="np")
    expected = theirs(prompts, generator=torch.Generator().manual_seed(0), **call).images
    encoder_rows = CallCounter(ours.text_encoder)
    ours.transformer.fuse_qkv_projections()
    with caption_cache(drop_padding=True):
        images = ours(prompts, generator=torch.Generator().manual_seed(0), **call).images
    assert encoder_rows.rows == 3  # two distinct prompts and one negative "", instead of 3 + 3
    assert np.abs(images - expected).max() <= IMAGES


def test_compile_fullgraph_through_the_pipeline_matches_eager():
    """The only torch.compile test (inductor on CPU, ~30-60 s on 2 cores): a transformer compiled with
    ``fullgraph=True`` runs inside the pipeline (whose caption cache it then skips) without a graph break, and gives
    the eager pipeline's images."""
    pipe = PixArtAlphaPipeline(**make_components())
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=2, height=256, width=256, output_type="np")
    expected = pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0), **call).images
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=True)
    images = pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0), **call).images
    assert np.abs(images - expected).max() <= IMAGES


def test_regional_compile_keeps_the_caption_cache():
    """diffusers' ``compile_repeated_blocks(fullgraph=True)`` compiles our blocks only: the images are the eager
    ones (padding dropped on both sides), and the caption projection, which stays eager, still runs once per
    generation instead of once per step."""
    pipe = PixArtAlphaPipeline(**make_components())
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=3, height=256, width=256, output_type="np")
    with caption_cache(drop_padding=True):
        expected = pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0), **call).images
    pipe.transformer.compile_repeated_blocks(fullgraph=True)
    projections = CallCounter(pipe.transformer.caption_projection)
    with caption_cache(drop_padding=True):
        images = pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0), **call).images
    assert projections.calls == 1
    assert np.abs(images - expected).max() <= IMAGES


def test_residual_stream_is_contiguous_in_half_precision():
    """The patch embedding returns contiguous tokens: a transposed layout there would run through every block
    (elementwise ops keep it) and make each LayerNorm and Linear copy its input (30% slower on an H100)."""
    model = make_transformer(num_layers=1).to(torch.bfloat16)
    tokens = model.pos_embed(torch.randn(2, 4, 16, 16, dtype=torch.bfloat16))
    assert tokens.is_contiguous() and tokens.dtype == torch.bfloat16


def test_attention_runs_in_float32_under_cpu_autocast():
    """Mixed-precision training on CPU: the attention product runs in float32 (the bf16 CPU kernels' backward is
    about 2x slower), exactly as float32 attention; outside autocast it keeps the inputs' dtype."""
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 2, 16, 8, generator=g).to(torch.bfloat16) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 16, dtype=torch.bfloat16)
    mask[0, ..., 10:] = -10000.0
    reference = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=mask.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = scaled_dot_product_attention(query, key, value, mask)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, reference)
    assert scaled_dot_product_attention(query, key, value, mask).dtype == torch.bfloat16


def test_mixed_precision_training_step_matches_float32():
    """A forward and backward under CPU bf16 autocast (accelerate's --mixed_precision bf16) give the float32 output
    and gradients within bf16 rounding, through the masked cross-attention and the float32 attention product."""
    model = make_transformer()
    inputs = model_inputs()

    def output_and_grads(autocast: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(**inputs).sample
        out.float().square().mean().backward()
        return out.float().detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out32, grads32 = output_and_grads(False)
    out16, grads16 = output_and_grads(True)
    assert (out16 - out32).abs().max() < 0.05 * out32.abs().max()
    for name, grad in grads32.items():
        assert torch.isfinite(grads16[name]).all(), name
        assert (grads16[name] - grad).norm() <= 0.05 * grad.norm() + 1e-6, name

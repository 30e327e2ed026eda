"""The pipeline's low-memory mode: int8 T5, the text encoder dropped before the transformer runs, tiled VAE decode.

Tolerances. Without int8 the mode runs the same float32 operations as the default pipeline: images agree to float32
rounding (1e-6). With int8, torchao rounds every weight to within half a quantization step, 1/255 of the largest
weight of its row (asserted below); through the tiny 2-layer T5 that moved the caption embeddings by at most 1.3% of
their largest value and the images (0..1) by at most 0.0015 (seeds 0-2, 4 steps). The tests allow four times the
measured: 5% and 0.006.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_pixart.cli import main
from diffusers_pixart.pipelines.low_memory import is_int8, quantize_text_encoder
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.tiny import make_pipeline, make_text_encoder

PROMPT = "a red circle above a blue square"
INT8_EMBEDS_TOLERANCE = 0.05  # of the embeddings' largest value
INT8_IMAGE_TOLERANCE = 0.006


def generate(pipe: PixArtAlphaPipeline, prompt: str = PROMPT, **kwargs) -> np.ndarray:
    """Four seeded steps, as a (B, H, W, 3) array in 0..1."""
    generator = torch.Generator().manual_seed(0)
    return pipe(prompt, num_inference_steps=4, generator=generator, output_type="np", **kwargs).images


def loader_of(pipe: PixArtAlphaPipeline, loaded: list | None = None):
    """A loader of the tiny pipeline's text encoder (same seed, same weights); weak references to what it loaded go
    to ``loaded``."""
    vocab_size, width = len(pipe.tokenizer), pipe.text_encoder.config.d_model

    def load():
        encoder = make_text_encoder(vocab_size, d_model=width)
        if loaded is not None:
            loaded.append(weakref.ref(encoder))
        return encoder

    return load


@pytest.fixture
def pipe() -> PixArtAlphaPipeline:
    pipe = make_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_int8_rounds_each_weight_within_half_a_step() -> None:
    encoder = make_text_encoder(100)
    weights = {name: m.weight.detach().clone() for name, m in encoder.named_modules() if isinstance(m, torch.nn.Linear)}
    quantize_text_encoder(encoder)
    assert is_int8(encoder)
    for name, module in encoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            row_max = weights[name].abs().amax(dim=1, keepdim=True)
            error = (module.weight.dequantize() - weights[name]).abs()
            # half a step of 1/127.5 of the row's largest weight, plus float32 rounding of the scale (x128 levels)
            assert torch.all(error <= row_max * (1 / 255 + 128 * torch.finfo(torch.float32).eps))


def test_without_int8_the_images_are_the_default_ones(pipe: PixArtAlphaPipeline) -> None:
    reference = generate(pipe)
    pipe.enable_low_memory(text_encoder_loader=loader_of(pipe), int8_text_encoder=False)
    np.testing.assert_allclose(generate(pipe), reference, atol=1e-6)
    np.testing.assert_allclose(generate(pipe), reference, atol=1e-6)  # with the reloaded encoder


def test_int8_images_within_the_quantization_bound(pipe: PixArtAlphaPipeline) -> None:
    reference = generate(pipe)
    embeds, mask, _, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    pipe.enable_low_memory(text_encoder_loader=loader_of(pipe))
    assert is_int8(pipe.text_encoder)
    int8_embeds, _, _, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    keep = mask.bool()
    assert (int8_embeds - embeds)[keep].abs().max() <= INT8_EMBEDS_TOLERANCE * embeds[keep].abs().max()
    assert 0 < np.abs(generate(pipe) - reference).max() <= INT8_IMAGE_TOLERANCE


def test_text_encoder_is_gone_before_the_transformer_runs(pipe: PixArtAlphaPipeline) -> None:
    encoder_refs = [weakref.ref(pipe.text_encoder)]
    pipe.enable_low_memory(text_encoder_loader=loader_of(pipe, encoder_refs))
    seen = []

    def check(module: torch.nn.Module, args: tuple) -> None:
        gc.collect()
        seen.append((pipe.text_encoder is None, all(ref() is None for ref in encoder_refs)))

    pipe.transformer.register_forward_pre_hook(check)  # after the mode's own hook, so it runs after it
    generate(pipe)
    assert pipe.text_encoder is None and len(encoder_refs) == 1
    first = generate(pipe, "a green star")  # a new prompt: the encoder is loaded again, then dropped again
    assert pipe.text_encoder is None and len(encoder_refs) == 2
    assert len(seen) == 8 and all(gone and dead for gone, dead in seen)
    np.testing.assert_allclose(generate(pipe, "a green star"), first, atol=1e-6)


def test_prompt_embeds_never_load_the_encoder(pipe: PixArtAlphaPipeline) -> None:
    embeds, mask, negative, negative_mask = pipe.encode_prompt(PROMPT)
    loaded: list = []
    pipe.enable_low_memory(text_encoder_loader=loader_of(pipe, loaded), int8_text_encoder=False)
    kwargs = dict(
        prompt_attention_mask=mask, negative_prompt_embeds=negative, negative_prompt_attention_mask=negative_mask
    )
    for _ in range(2):
        images = pipe(
            prompt_embeds=embeds, negative_prompt=None, num_inference_steps=2, output_type="np", **kwargs
        ).images
    assert loaded == [] and pipe.text_encoder is None and images.shape == (1, 256, 256, 3)


def test_large_images_decode_in_tiles(pipe: PixArtAlphaPipeline, monkeypatch) -> None:
    reference = generate(pipe, height=256, width=256)
    pipe.enable_low_memory(text_encoder_loader=loader_of(pipe), int8_text_encoder=False, vae_tile_size=128)
    tiled = []
    original = pipe.vae.tiled_decode
    monkeypatch.setattr(pipe.vae, "tiled_decode", lambda *a, **k: tiled.append(1) or original(*a, **k))
    images = generate(pipe, height=256, width=256)
    assert tiled and images.shape == reference.shape
    assert pipe.vae.tile_latent_min_size == 128 // pipe.vae_scale_factor
    tiled.clear()
    generate(pipe, height=128, width=128, use_resolution_binning=False)  # not larger than a tile: decoded whole
    assert not tiled


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "text_encoder_loader"),
        ({"drop_text_encoder": False, "vae_tile_size": 0}, "vae_tile_size"),
    ],
)
def test_bad_options_are_refused(pipe: PixArtAlphaPipeline, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pipe.enable_low_memory(**kwargs)


def test_enabling_twice_is_refused(pipe: PixArtAlphaPipeline) -> None:
    pipe.enable_low_memory(drop_text_encoder=False)
    with pytest.raises(ValueError, match="already enabled"):
        pipe.enable_low_memory(drop_text_encoder=False)


def test_from_pretrained_low_memory(pipe: PixArtAlphaPipeline, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path)
    reference = generate(pipe)
    loaded = PixArtAlphaPipeline.from_pretrained(tmp_path, low_memory=True)
    loaded.set_progress_bar_config(disable=True)
    assert is_int8(loaded.text_encoder)
    first = generate(loaded)
    assert loaded.text_encoder is None
    assert np.abs(first - reference).max() <= INT8_IMAGE_TOLERANCE
    again = generate(loaded, "a green star")  # reloaded from the folder, int8 again
    assert loaded.text_encoder is None and np.abs(again - first).max() > 0
    np.testing.assert_allclose(generate(loaded), first, atol=1e-6)


def test_cli_low_memory(tmp_path: Path, capsys) -> None:
    make_pipeline(seed=3).save_pretrained(tmp_path / "model")
    args = ["generate", "a blue star", "--model", str(tmp_path / "model"), "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "default.png")]) == 0
    assert main([*args, "--out", str(tmp_path / "low.png"), "--low-memory"]) == 0
    default, low = (
        np.asarray(Image.open(tmp_path / f"{name}.png"), dtype=np.float32) / 255 for name in ("default", "low")
    )
    assert np.abs(low - default).max() <= INT8_IMAGE_TOLERANCE + 1 / 255  # plus one level of 8-bit rounding

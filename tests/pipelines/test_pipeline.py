"""PixArtAlphaPipeline against diffusers' PixArtAlphaPipeline as the oracle, on tiny components built in code."""

from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch
from tolerances import IMAGES, TEXT

from diffusers_pixart import PixArtAlphaPipeline, PixArtTransformer2DModel
from diffusers_pixart.tiny import make_components

PROMPTS = ["a red circle above a blue square", "two green stars on the left"]


def pipelines(
    ours_class: type = PixArtAlphaPipeline, theirs_class: type = diffusers.PixArtAlphaPipeline, **transformer_overrides
) -> tuple[PixArtAlphaPipeline, diffusers.PixArtAlphaPipeline]:
    """Ours and diffusers' pipeline on the same components; diffusers' gets its own transformer class.

    ``ours_class`` / ``theirs_class``: the pipeline classes (the α ones by default; :mod:`test_pipeline_sigma` passes
    the Σ ones).
    """
    components = make_components(**transformer_overrides)
    ours = ours_class(**components)
    transformer = diffusers.PixArtTransformer2DModel.from_config(components["transformer"].config).eval()
    transformer.load_state_dict(components["transformer"].state_dict(), strict=True)
    theirs = theirs_class(**{**components, "transformer": transformer})
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def generate(pipe, prompt=PROMPTS, seed=0, **kwargs) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", 3)
    kwargs.setdefault("output_type", "np")
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **kwargs).images


@pytest.mark.parametrize(
    "call",
    [
        {},  # defaults: binning at the 256px table, CFG 4.5
        {"height": 192, "width": 320},  # non-square, binned then resized back
        {"num_images_per_prompt": 2},
        {"guidance_scale": 1.0},  # no guidance
        {"negative_prompt": "a black cat", "clean_caption": False},
        {"use_resolution_binning": False, "height": 128, "width": 64},
        {"output_type": "pt"},
        {"output_type": "latent"},
    ],
)
def test_images_match_diffusers(call):
    ours, theirs = pipelines()
    a, b = generate(ours, **call), generate(theirs, **call)
    assert a.shape == b.shape
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= IMAGES


def test_micro_conditions_match_diffusers():
    ours, theirs = pipelines(sample_size=128, use_additional_conditions=True)
    call = dict(use_resolution_binning=False, height=64, width=96)
    assert np.abs(generate(ours, **call) - generate(theirs, **call)).max() <= IMAGES


def test_defaults_match_diffusers_call_signature():
    import inspect

    ours = inspect.signature(PixArtAlphaPipeline.__call__).parameters
    theirs = inspect.signature(diffusers.PixArtAlphaPipeline.__call__).parameters
    for name, param in theirs.items():
        if name == "kwargs":
            continue
        assert name in ours, name
        assert ours[name].default == param.default, name
    assert {"callback_on_step_end", "callback_on_step_end_tensor_inputs"} <= set(ours)


def test_prompt_embeds_match_prompt_and_survive_save_load(tmp_path):
    ours, _ = pipelines()
    embeds, mask, negative, negative_mask = ours.encode_prompt(PROMPTS[0], clean_caption=True)
    torch.save({"e": embeds, "m": mask, "n": negative, "nm": negative_mask}, tmp_path / "embeds.pt")
    ours.save_pretrained(tmp_path / "pipe")
    reloaded = PixArtAlphaPipeline.from_pretrained(tmp_path / "pipe", tokenizer=None, text_encoder=None)
    reloaded.set_progress_bar_config(disable=True)
    saved = torch.load(tmp_path / "embeds.pt", weights_only=True)
    from_embeds = generate(
        reloaded,
        prompt=None,
        prompt_embeds=saved["e"],
        prompt_attention_mask=saved["m"],
        negative_prompt=None,
        negative_prompt_embeds=saved["n"],
        negative_prompt_attention_mask=saved["nm"],
    )
    assert np.abs(from_embeds - generate(ours, prompt=PROMPTS[0])).max() <= IMAGES


def test_batch_matches_single_prompts():
    ours, _ = pipelines()
    batch = ours(
        PROMPTS, num_inference_steps=3, output_type="np", generator=[torch.Generator().manual_seed(s) for s in (1, 2)]
    ).images
    singles = [generate(ours, prompt=p, seed=s)[0] for p, s in zip(PROMPTS, (1, 2))]
    assert np.abs(batch - np.stack(singles)).max() <= IMAGES  # batch of 2 vs 1: other blocking


def test_official_hub_layout_loads_our_transformer(tmp_path):
    """model_index.json naming ["diffusers", "Transformer2DModel"], as PixArt-alpha/PixArt-XL-2-1024-MS does."""
    _, theirs = pipelines()
    theirs.save_pretrained(tmp_path / "official")
    index_path = tmp_path / "official" / "model_index.json"
    index = json.loads(index_path.read_text())
    index["transformer"] = ["diffusers", "Transformer2DModel"]
    index_path.write_text(json.dumps(index))
    config_path = tmp_path / "official" / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["_class_name"] = "Transformer2DModel"
    config_path.write_text(json.dumps(config))

    loaded = PixArtAlphaPipeline.from_pretrained(tmp_path / "official")
    assert type(loaded.transformer) is PixArtTransformer2DModel
    loaded.save_pretrained(tmp_path / "ours")
    saved_index = json.loads((tmp_path / "ours" / "model_index.json").read_text())
    assert saved_index["transformer"] == ["diffusers_pixart", "PixArtTransformer2DModel"]
    again = PixArtAlphaPipeline.from_pretrained(tmp_path / "ours")
    assert type(again.transformer) is PixArtTransformer2DModel
    again.set_progress_bar_config(disable=True)
    assert np.abs(generate(again) - generate(theirs)).max() <= IMAGES
    # diffusers' own DiffusionPipeline also reads our folder (the transformer class resolves through our package).
    generic = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "ours")
    assert type(generic.transformer) is PixArtTransformer2DModel


def test_one_step_sampling_works():
    """diffusers' pipeline indexes `step(...)[1]` for one step, which DPM-Solver does not return."""
    ours, _ = pipelines()
    image = generate(ours, num_inference_steps=1)
    assert image.shape == (2, 256, 256, 3) and np.isfinite(image).all()


@pytest.mark.parametrize("sampler", ["dpm", "sa", "iddpm"])
def test_samplers_by_name(sampler):
    ours, _ = pipelines()
    ours.set_scheduler(sampler)
    assert generate(ours, num_inference_steps=4).shape == (2, 256, 256, 3)


def test_iddpm_uses_the_learned_variance_and_dpm_ignores_it():
    ours, _ = pipelines()
    changed, _ = pipelines()
    with torch.no_grad():  # output rows are laid out (p, p, out_channels); channels 4..7 are the variance
        changed.transformer.proj_out.weight.view(2, 2, 8, -1)[:, :, 4:] += 1.0
    assert np.abs(generate(ours) - generate(changed)).max() == 0.0
    for pipe in (ours, changed):
        pipe.set_scheduler("iddpm")
    assert np.abs(generate(ours, num_inference_steps=4) - generate(changed, num_inference_steps=4)).max() > 1e-3


def test_guidance_applies_to_every_latent_channel():
    ours, _ = pipelines()
    uncond, text = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    guided = ours._guide(torch.cat([uncond, text]), 3.0, guided=True)
    expected = uncond[:, :4] + 3.0 * (text[:, :4] - uncond[:, :4])
    assert torch.allclose(guided, expected)


def test_latents_are_cast_to_the_vae_dtype(bf16_cpu_attention):
    ours, _ = pipelines()
    ours.vae.to(torch.bfloat16)
    images = generate(ours, output_type="pt")
    assert images.dtype == torch.bfloat16 and torch.isfinite(images.float()).all()


def test_callback_on_step_end_sees_and_replaces_latents():
    ours, _ = pipelines()
    seen = []

    def zero_latents(pipe, step, timestep, tensors):
        seen.append((step, tuple(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = generate(
        ours,
        output_type="latent",
        callback_on_step_end=zero_latents,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    )
    assert seen == [(i, ("latents", "prompt_embeds")) for i in range(3)]
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize(
    "call, argument",
    [
        ({"height": 0}, "height"),
        ({"height": 200, "use_resolution_binning": False}, "height"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"prompt_embeds": torch.zeros(1, 120, 32)}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "callback_on_step_end_tensor_inputs"),
    ],
)
def test_bad_input_names_the_argument(call, argument):
    ours, _ = pipelines()
    call = {"prompt": PROMPTS[0], "num_inference_steps": 2, **call}
    with pytest.raises(ValueError, match=argument):
        ours(**call)


def test_mismatched_mask_and_unknown_scheduler():
    ours, _ = pipelines()
    embeds = torch.zeros(1, 120, 32)
    with pytest.raises(ValueError, match="prompt_attention_mask"):
        ours(prompt_embeds=embeds, prompt_attention_mask=torch.ones(1, 60), num_inference_steps=2)
    with pytest.raises(ValueError, match="Unknown scheduler"):
        ours.set_scheduler("euler")


def test_model_cpu_offload_hooks_keep_the_images():
    """The offload hooks (driven here with the CPU as the 'accelerator') leave outputs unchanged and are freed."""
    ours, _ = pipelines()
    expected = generate(ours)
    ours.enable_model_cpu_offload(device="cpu")
    assert hasattr(ours.transformer, "_hf_hook")
    assert np.abs(generate(ours) - expected).max() == 0.0


def test_binning_at_toy_resolution_uses_the_scaled_table():
    """A 64px model (VAE factor 4, sample_size 16) has no official table: the 256 table scaled to 64px serves."""
    from diffusers import AutoencoderKL

    from diffusers_pixart.data.buckets import bucket_table

    components = make_components(sample_size=16)
    components["vae"] = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        norm_num_groups=4,
    )
    pipe = PixArtAlphaPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    generate(
        pipe,
        height=50,
        width=90,
        callback_on_step_end=lambda p, i, t, tensors: seen.append(tuple(tensors["latents"].shape)) or {},
    )
    table = bucket_table(64, multiple=8)
    height, width = table[min(table, key=lambda ratio: abs(float(ratio) - 50 / 90))]
    assert seen[0] == (2, 4, height // 4, width // 4)
    assert 0.6 < height * width / 64**2 < 1.4 and height % 8 == 0 and width % 8 == 0
    assert generate(pipe, height=50, width=90).shape == (2, 50, 90, 3)


def test_training_encoder_sees_the_same_tokens_as_the_pipeline():
    """``text.encode_prompts`` (used by training and feature extraction) cleans captions as the pipeline does."""
    from diffusers_pixart.text import encode_prompts, preprocess_captions

    ours, _ = pipelines()
    captions = ["A RED Circle, above a blue square.  http://example.com/x", "Two  green STARS"]
    assert preprocess_captions(captions) == ["a red circle, above a blue square.", "two green stars"]
    expected_embeds, expected_mask, _, _ = ours.encode_prompt(
        captions, do_classifier_free_guidance=False, clean_caption=True
    )
    with torch.no_grad():
        embeds, mask = encode_prompts(ours.tokenizer, ours.text_encoder, captions)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(embeds, expected_embeds, rtol=0, atol=TEXT)  # padded to 120 vs to 8


def test_text_encodings_are_reused_across_calls_until_the_encoder_changes():
    ours, _ = pipelines()
    calls = []
    ours.text_encoder.register_forward_hook(lambda module, args, kwargs_or_out: calls.append(args[0].shape[0]))
    first = generate(ours)
    second = generate(ours)
    assert calls == [2, 1]  # the two prompts, then the negative "" once; the second call encodes nothing
    assert np.array_equal(first, second)
    with torch.no_grad():
        next(ours.text_encoder.parameters()).mul_(1.5)  # in-place weight change: the cache must not serve stale rows
    changed = generate(ours)
    assert calls == [2, 1, 2, 1] and np.abs(changed - first).max() > 0

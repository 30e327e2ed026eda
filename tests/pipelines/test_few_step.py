"""Few-step sampling: the LCM sampler (PixArt-LCM layouts, LCM-LoRA) and one-step DMD, with diffusers as the oracle."""

from __future__ import annotations

import json

import diffusers
import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, LCMScheduler
from test_lora import official_lora
from tolerances import IMAGES

from diffusers_pixart import PixArtAlphaPipeline
from diffusers_pixart.schedulers import SCHEDULERS
from diffusers_pixart.tiny import make_components

PROMPTS = ["a red circle above a blue square", "two green stars on the left"]
LCM_CALL = dict(num_inference_steps=4, guidance_scale=0.0, output_type="np")


def twins(components: dict | None = None) -> tuple[PixArtAlphaPipeline, diffusers.PixArtAlphaPipeline]:
    """Ours and diffusers' pipeline on the same components (diffusers' with its own transformer class)."""
    components = components or make_components()
    theirs_transformer = diffusers.PixArtTransformer2DModel.from_config(components["transformer"].config).eval()
    theirs_transformer.load_state_dict(components["transformer"].state_dict(), strict=True)
    ours = PixArtAlphaPipeline(**components)
    theirs = diffusers.PixArtAlphaPipeline(**{**components, "transformer": theirs_transformer})
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def generate(pipe, **kwargs) -> np.ndarray:
    return pipe(PROMPTS, generator=torch.Generator().manual_seed(0), **{**LCM_CALL, **kwargs}).images


def test_lcm_sampler_matches_diffusers_and_runs_without_the_unconditional_batch():
    ours, theirs = twins()
    ours.set_scheduler("lcm")
    assert type(ours.scheduler) is LCMScheduler
    assert ours.scheduler.config.beta_schedule == "linear" and ours.scheduler.config.beta_end == 0.02  # PixArt's
    theirs.scheduler = LCMScheduler.from_config(ours.scheduler.config)
    batches = []
    ours.transformer.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    expected = generate(theirs)
    assert np.abs(generate(ours) - expected).max() <= IMAGES
    assert batches == [2] * 4  # two prompts, four steps, no CFG batch at guidance 0
    assert SCHEDULERS["lcm"][2:] == (4, 0.0)  # what `pixart generate --scheduler lcm` uses


def test_pixart_lcm_layout_loads_with_its_lcm_scheduler(tmp_path):
    """A folder whose model_index.json names LCMScheduler, as PixArt-alpha/PixArt-LCM-XL-2-1024-MS does."""
    ours, theirs = twins()
    theirs.scheduler = LCMScheduler.from_config(theirs.scheduler.config)
    theirs.save_pretrained(tmp_path / "lcm")
    assert json.loads((tmp_path / "lcm" / "model_index.json").read_text())["scheduler"] == ["diffusers", "LCMScheduler"]
    loaded = PixArtAlphaPipeline.from_pretrained(tmp_path / "lcm")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is LCMScheduler
    assert np.abs(generate(loaded) - generate(theirs)).max() <= IMAGES


def test_lcm_lora_loads_and_samples_like_the_peft_model(tmp_path):
    """An LCM-LoRA (a peft adapter folder, as PixArt-LCM-LoRA ships) on the base model with the LCM sampler."""
    ours, _ = twins()
    ours.set_scheduler("lcm")
    peft_model, folder = official_lora(ours, tmp_path)
    theirs = diffusers.PixArtAlphaPipeline(**{**ours.components, "transformer": peft_model.get_base_model()})
    theirs.scheduler = LCMScheduler.from_config(ours.scheduler.config)
    theirs.set_progress_bar_config(disable=True)
    expected = generate(theirs)
    assert np.abs(generate(ours) - expected).max() > 1e-2  # the adapter matters
    ours.load_lora_weights(folder, adapter_name="lcm")
    assert np.abs(generate(ours) - expected).max() <= IMAGES


def test_dmd_one_step_returns_the_clean_prediction_at_the_given_timestep():
    """One-step DMD: DPM-Solver with ``timesteps=[400]`` and guidance 1 gives x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)."""
    ours, theirs = twins()
    assert type(ours.scheduler) is DPMSolverMultistepScheduler
    noise = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    call = dict(timesteps=[400], guidance_scale=1.0, latents=noise, output_type="latent", use_resolution_binning=False)
    latents = ours(PROMPTS[0], height=256, width=256, **call).images
    embeds, mask, _, _ = ours.encode_prompt(PROMPTS[0], do_classifier_free_guidance=False)
    with torch.no_grad():
        eps = ours.transformer(noise, embeds, torch.tensor([400]), encoder_attention_mask=mask).sample[:, :4]
    alpha = ours.scheduler.alphas_cumprod[400]
    expected = (noise - (1 - alpha).sqrt() * eps) / alpha.sqrt()
    torch.testing.assert_close(latents, expected, rtol=0, atol=IMAGES)

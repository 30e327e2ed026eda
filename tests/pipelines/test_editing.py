"""The parts img2img and inpainting add to the sampling loop (diffusers_pixart.pipelines.editing)."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from diffusers_pixart.pipelines.editing import ImageEdit, check_strength, mask_to_pil, prepare_mask


@pytest.mark.parametrize("scheduler_class", [DPMSolverMultistepScheduler, DDIMScheduler])
@pytest.mark.parametrize(("steps", "strength", "run"), [(20, 1.0, 20), (20, 0.5, 10), (20, 0.33, 6), (4, 0.3, 1)])
def test_the_last_int_steps_times_strength_steps_run(scheduler_class, steps, strength, run):
    """diffusers' img2img rule: int(steps * strength) steps, the schedule's last ones."""
    scheduler = scheduler_class()
    scheduler.set_timesteps(steps)
    edit = ImageEdit(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), strength)
    timesteps, count = edit.timesteps(scheduler, scheduler.timesteps, steps)
    assert count == run and torch.equal(timesteps, scheduler.timesteps[steps - run :])


def test_initial_latents_are_the_image_noised_to_the_first_step():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(0)
    image, noise = torch.randn(2, 2, 4, 8, 8, generator=generator)
    edit = ImageEdit(image, noise, 0.5)
    timesteps, _ = edit.timesteps(scheduler, scheduler.timesteps, 10)
    abar = scheduler.alphas_cumprod[timesteps[0]]
    expected = abar.sqrt() * image + (1 - abar).sqrt() * noise
    torch.testing.assert_close(edit.initial_latents(scheduler, timesteps[0]), expected)


def test_after_step_keeps_the_image_outside_the_mask():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(1)
    image, noise, latents = torch.randn(3, 1, 4, 8, 8, generator=generator)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:6] = 1.0
    edit = ImageEdit(image, noise, 1.0, mask)
    last = edit.after_step(scheduler, latents, None)
    assert torch.equal(last[..., 2:5, 3:6], latents[..., 2:5, 3:6])
    assert torch.equal(last * (1 - mask), image * (1 - mask))
    noised = edit.after_step(scheduler, latents, scheduler.timesteps[3])
    abar = scheduler.alphas_cumprod[scheduler.timesteps[3]]
    torch.testing.assert_close((noised * (1 - mask)), (abar.sqrt() * image + (1 - abar).sqrt() * noise) * (1 - mask))
    assert torch.equal(ImageEdit(image, noise, 1.0).after_step(scheduler, latents, None), latents)


def test_masks_of_every_input_kind_become_one_latent_grid():
    pixels = np.zeros((64, 32), dtype=np.uint8)
    pixels[16:32, 8:24] = 255
    expected = prepare_mask(PIL.Image.fromarray(pixels), 64, 32, 8)
    assert expected.shape == (1, 1, 8, 4) and expected.sum() == 4.0  # the 16x16 square covers 2x2 latent pixels
    rgb = np.repeat(pixels[..., None], 3, axis=-1)
    for kind in (
        PIL.Image.fromarray(rgb),
        pixels / 255.0,
        rgb,
        torch.from_numpy(pixels / 255.0),
        torch.from_numpy(rgb).permute(2, 0, 1)[None].float(),
        [PIL.Image.fromarray(pixels).convert("RGBA")],
    ):
        assert torch.equal(prepare_mask(mask_to_pil(kind), 64, 32, 8), expected)
    soft = prepare_mask(PIL.Image.fromarray(pixels), 64, 32, 8, blur=2)
    assert ((soft > 0) & (soft < 1)).any()  # a soft edge
    assert soft[0, 0, 2:4, 1:3].mean() > 0.5 and soft[0, 0, 0, 0] < 0.05


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((2, 8, 8, 3)), "single-channel"),
        (np.zeros((8, 8, 2)), "single-channel"),
        ("mask.png", "PIL image"),
    ],
)
def test_masks_that_are_not_one_image_are_named(mask, message):
    with pytest.raises(ValueError, match=message):
        mask_to_pil(mask)


@pytest.mark.parametrize(("strength", "steps"), [(0.0, 20), (1.5, 20), (-0.1, 20), (0.2, 4)])
def test_strength_outside_its_range_is_named(strength, steps):
    with pytest.raises(ValueError, match="strength"):
        check_strength(strength, steps)

"""Latent consistency distillation's formulas against diffusers' LCM and DDIM schedulers and a direct evaluation."""

import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler
from tolerances import FORWARD

from diffusers_pixart.training.consistency import LatentConsistency
from diffusers_pixart.training.diffusion import IDDPMDiffusion


def _objective(prediction_type: str, guidance_scale: float = 4.5) -> LatentConsistency:
    return LatentConsistency(IDDPMDiffusion().alphas_cumprod, prediction_type, guidance_scale=guidance_scale)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_consistency_function_is_what_lcm_scheduler_samples_with(prediction_type):
    """f(x, t) = c_skip x + c_out x0 is the "denoised" output of diffusers' LCMScheduler at the same step."""
    objective = _objective(prediction_type)
    scheduler = LCMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", prediction_type=prediction_type)
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(0)
    x_t, prediction = torch.randn(2, 1, 4, 8, 8, generator=generator)
    for t in scheduler.timesteps:
        expected = scheduler.step(prediction, t, x_t, return_dict=True).denoised
        ours = objective.consistency_function(prediction, x_t, torch.full((1,), int(t)))
        # x0 reaches hundreds at t = 999 (1 / sqrt(abar) ~ 160): float32 rounds there at ~1e-7 relative.
        torch.testing.assert_close(ours, expected, atol=FORWARD, rtol=1e-6)
        scheduler._step_index = None  # each step on its own, from the same sample


def test_boundary_condition_and_solver_grid():
    objective = _objective("epsilon")
    assert objective.ddim_timesteps[:3].tolist() == [19, 39, 59] and objective.ddim_timesteps[-1] == 999
    c_skip, c_out = objective.boundary_scalings(torch.tensor([0]), torch.zeros(1, 4, 2, 2))
    assert c_skip.item() == 1.0 and c_out.item() == 0.0
    t, previous = objective.sample_steps(64, torch.Generator().manual_seed(1))
    assert torch.isin(t, objective.ddim_timesteps).all()
    assert torch.equal(previous, (t - 20).clamp(min=0))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_unguided_solver_step_is_a_ddim_step(prediction_type):
    objective = _objective(prediction_type, guidance_scale=1.0)
    scheduler = DDIMScheduler(
        beta_start=1e-4, beta_end=0.02, beta_schedule="linear", prediction_type=prediction_type, clip_sample=False
    )
    scheduler.set_timesteps(50)
    generator = torch.Generator().manual_seed(2)
    x_t, prediction, other = torch.randn(3, 1, 4, 8, 8, generator=generator)
    for t in (39, 519, 999):
        expected = scheduler.step(prediction, t, x_t, eta=0.0).prev_sample
        ours = objective.solver_step(prediction, other, x_t, torch.tensor([t]), torch.tensor([t - 20]))
        torch.testing.assert_close(ours, expected, atol=FORWARD, rtol=0)


def test_guided_step_and_loss_against_the_formula():
    """The consistency target of PixArt-delta's recipe, evaluated directly in float64, for an epsilon teacher."""
    objective = _objective("epsilon", guidance_scale=4.5)
    abar = IDDPMDiffusion().alphas_cumprod
    generator = torch.Generator().manual_seed(3)
    x_t, eps_c, eps_u, student = torch.randn(4, 2, 4, 8, 8, generator=generator)
    t, prev = torch.tensor([519, 59]), torch.tensor([499, 39])
    x_prev = objective.solver_step(eps_c, eps_u, x_t, t, prev)
    a, a_prev = abar[t].view(-1, 1, 1, 1), abar[prev].view(-1, 1, 1, 1)
    x, ec, eu = x_t.double(), eps_c.double(), eps_u.double()
    eps = eu + 4.5 * (ec - eu)
    x0 = (x - (1 - a).sqrt() * eu) / a.sqrt() + 4.5 * ((x - (1 - a).sqrt() * ec) - (x - (1 - a).sqrt() * eu)) / a.sqrt()
    expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(x_prev.double(), expected, atol=1e-4, rtol=1e-5)
    # The target: f at t_{n-1} of a target network's prediction there; the loss is pseudo-Huber against the student's f.
    target_prediction = torch.randn(2, 4, 8, 8, generator=generator)
    target = objective.consistency_function(target_prediction, x_prev, prev)
    scaled = prev.double().view(-1, 1, 1, 1) * 10
    c_skip, c_out = 0.25 / (scaled**2 + 0.25), scaled / (scaled**2 + 0.25).sqrt()
    x0_target = (x_prev.double() - (1 - a_prev).sqrt() * target_prediction.double()) / a_prev.sqrt()
    torch.testing.assert_close(target.double(), c_skip * x_prev.double() + c_out * x0_target, atol=1e-4, rtol=1e-5)
    loss = objective.loss(student, target)
    direct = ((student.double() - target.double()) ** 2 + 1e-6).sqrt() - 1e-3
    torch.testing.assert_close(loss.double(), direct.mean(dim=(1, 2, 3)), atol=1e-6, rtol=1e-5)


def test_a_scale_per_sample_is_the_fixed_scale_step_of_each_sample():
    """The guidance-embedding recipe draws a teacher scale per sample: each sample's step is the fixed-scale step."""
    generator = torch.Generator().manual_seed(5)
    x_t, eps_c, eps_u = torch.randn(3, 2, 4, 8, 8, generator=generator)
    t, prev = torch.tensor([519, 59]), torch.tensor([499, 39])
    per_sample = _objective("epsilon").solver_step(eps_c, eps_u, x_t, t, prev, torch.tensor([2.0, 7.5]))
    for i, scale in enumerate((2.0, 7.5)):
        fixed = _objective("epsilon", guidance_scale=scale).solver_step(eps_c, eps_u, x_t, t, prev)
        torch.testing.assert_close(per_sample[i], fixed[i], atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prediction_type": "sample"}, "prediction_type"),
        ({"num_ddim_timesteps": 48}, "num_ddim_timesteps"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"huber_c": 0.0}, "huber_c"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LatentConsistency(IDDPMDiffusion().alphas_cumprod, **kwargs)

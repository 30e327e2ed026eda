"""Latent consistency distillation (LCM, Luo et al. 2023), as PixArt-delta distils PixArt-alpha into a 4-step model.

A student ``f`` learns to map any point ``x_t`` of a probability-flow trajectory to its end ``x_0`` in one call, so that
two neighbouring points of a trajectory give the same answer (self-consistency). Per training sample:

1. ``x_0`` (clean latents), noise, and one step ``t_n`` of a **skipping-step DDIM solver**: ``N`` (50) of the ``T``
   (1000) training steps, ``k = T / N`` apart (``t = 19, 39, ..., 999``), and its predecessor ``t_{n-1} = t_n - k``;
   ``x_{t_n}`` is the forward process at ``t_n``.
2. The **teacher** (the frozen pipeline's transformer) predicts at ``t_n`` with and without the caption; classifier-
   free guidance at a fixed scale ``s`` is folded in on ``x_0`` and the noise:
   ``x0 = x0_u + s (x0_c - x0_u)``, ``eps = eps_u + s (eps_c - eps_u)``; one DDIM step gives
   ``x_{t_{n-1}} = sqrt(abar_{n-1}) x0 + sqrt(1 - abar_{n-1}) eps``.
3. The **consistency function** with the boundary condition ``f(x, 0) = x``:
   ``f(x, t) = c_skip(t) x + c_out(t) x0_model(x, t)``, ``c_skip = sd^2 / ((t/0.1)^2 + sd^2)``,
   ``c_out = (t/0.1) / sqrt((t/0.1)^2 + sd^2)`` with ``sd = 0.5`` (diffusers' ``LCMScheduler`` samples with the same
   scalings, ``timestep_scaling = 10``).
   With a **guidance-scale embedding** in the student (optional), ``s`` is drawn per sample, uniformly in a range,
   and given to the student and the target network (``added_cond_kwargs["guidance"]``), so that one student samples
   at any scale of the range.
4. The loss: pseudo-Huber ``sqrt(|f_student(x_{t_n}, t_n) - f_target(x_{t_{n-1}}, t_{n-1})|^2 + c^2) - c`` per
   element, averaged; the target network is an EMA of the student (full distillation) or the student itself without
   gradients (LCM-LoRA), both under ``torch.no_grad``.

The student, teacher and target output what the teacher was trained to predict (``epsilon`` or ``v_prediction``) in
their first ``C`` channels (a learned variance in the next ``C`` is ignored), so the distilled model samples with
``LCMScheduler(prediction_type=<the teacher's>)``.
Shapes: ``B`` batch, ``C`` latent channels, ``H x W`` the latent grid.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..schedulers import make_scheduler
from .diffusion import PREDICTION_TYPES, Noised, mean_flat

#: A model call: (noisy latents (B, C, h, w), timesteps (B,), condition kwargs) -> output (B, C_out, h, w).
ModelCall = Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], torch.Tensor]


class LatentConsistency:
    """The skipping-step DDIM solver, the boundary-condition scalings and the consistency loss.

    Args:
        alphas_cumprod: ``abar_t`` of the teacher's training schedule, (T,).
        prediction_type: what the teacher (and so the student) predicts: ``"epsilon"`` or ``"v_prediction"``.
        num_ddim_timesteps: ``N``, the solver's steps over the ``T`` training steps (LCM: 50; diffusers'
            ``LCMScheduler`` samples from the same grid as its ``original_inference_steps``).
        guidance_scale: the classifier-free guidance scale ``s`` folded into the teacher's step (1: no guidance).
        sigma_data, timestep_scaling: the boundary-condition constants (0.5 and 10, as ``LCMScheduler``'s).
        huber_c: the pseudo-Huber constant ``c`` (0.001, LCM's).
    """

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        num_ddim_timesteps: int = 50,
        guidance_scale: float = 4.5,
        sigma_data: float = 0.5,
        timestep_scaling: float = 10.0,
        huber_c: float = 0.001,
    ):
        num_train_timesteps = alphas_cumprod.shape[0]
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        if not 1 <= num_ddim_timesteps <= num_train_timesteps or num_train_timesteps % num_ddim_timesteps:
            raise ValueError(
                f"`num_ddim_timesteps` must divide the {num_train_timesteps} training steps, got {num_ddim_timesteps}."
            )
        if guidance_scale < 1:
            raise ValueError(f"`guidance_scale` must be at least 1 (1: no guidance), got {guidance_scale}.")
        if huber_c <= 0:
            raise ValueError(f"`huber_c` must be positive, got {huber_c}.")
        self.alphas_cumprod = alphas_cumprod.double()
        self.prediction_type = prediction_type
        self.step_ratio = num_train_timesteps // num_ddim_timesteps
        #: The solver's steps ``t_n``, ascending: ``k - 1, 2k - 1, ..., T - 1``.
        self.ddim_timesteps = torch.arange(1, num_ddim_timesteps + 1) * self.step_ratio - 1
        self.guidance_scale = guidance_scale
        self.sigma_data = sigma_data
        self.timestep_scaling = timestep_scaling
        self.huber_c = huber_c

    def _gather(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``abar[timesteps]`` as (B, 1, ..., 1) float32 on ``like``'s device."""
        values = self.alphas_cumprod.to(like.device)[timesteps.to(like.device)].float()
        return values.view(-1, *([1] * (like.ndim - 1)))

    def sample_steps(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A solver step per sample: ``t_n`` (B,) and ``t_{n-1} = max(t_n - k, 0)`` (B,), long, on the generator's
        device."""
        index = torch.randint(0, len(self.ddim_timesteps), (batch_size,), generator=generator, device=generator.device)
        t = self.ddim_timesteps.to(index.device)[index]
        return t, (t - self.step_ratio).clamp(min=0)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise`` (B, C, H, W) at ``timesteps`` (B,)."""
        abar = self._gather(timesteps, latents)
        return abar.sqrt() * latents + (1.0 - abar).sqrt() * noise

    def boundary_scalings(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``c_skip(t)`` and ``c_out(t)``, each (B, 1, ..., 1) like ``like``; ``c_skip(0) ~ 1``, ``c_out(0) = 0``."""
        scaled = timesteps.to(like.device).float().view(-1, *([1] * (like.ndim - 1))) * self.timestep_scaling
        c_skip = self.sigma_data**2 / (scaled**2 + self.sigma_data**2)
        c_out = scaled / (scaled**2 + self.sigma_data**2) ** 0.5
        return c_skip, c_out

    def x0_and_noise(
        self, prediction: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_0`` and the noise (each (B, C, H, W)) implied by a prediction (B, >= C, H, W) of ``x_t`` at ``t``."""
        prediction = prediction[:, : x_t.shape[1]].float()
        x_t = x_t.float()
        abar = self._gather(timesteps, x_t)
        alpha, sigma = abar.sqrt(), (1.0 - abar).sqrt()
        if self.prediction_type == "v_prediction":
            return alpha * x_t - sigma * prediction, sigma * x_t + alpha * prediction
        return (x_t - sigma * prediction) / alpha, prediction

    def consistency_function(
        self, prediction: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """``f(x_t, t) = c_skip(t) x_t + c_out(t) x0(prediction)``: the model's estimate of the trajectory's end."""
        x0, _ = self.x0_and_noise(prediction, x_t, timesteps)
        c_skip, c_out = self.boundary_scalings(timesteps, x0)
        return c_skip * x_t.float() + c_out * x0

    def solver_step(
        self,
        teacher_text: torch.Tensor,
        teacher_null: torch.Tensor,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        previous: torch.Tensor,
        guidance_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One guided DDIM step of the teacher from ``t_n`` to ``t_{n-1}``: ``x_{t_{n-1}}`` (B, C, H, W).

        ``teacher_text`` / ``teacher_null``: the teacher's predictions at ``t_n`` with the caption and the null caption.
        ``guidance_scale``: a scale per sample (B,) instead of the fixed one.
        """
        x0_text, eps_text = self.x0_and_noise(teacher_text, x_t, timesteps)
        x0_null, eps_null = self.x0_and_noise(teacher_null, x_t, timesteps)
        s = self.guidance_scale if guidance_scale is None else guidance_scale.float().view(-1, 1, 1, 1).to(x_t.device)
        x0 = x0_null + s * (x0_text - x0_null)
        eps = eps_null + s * (eps_text - eps_null)
        abar_prev = self._gather(previous, x0)
        return abar_prev.sqrt() * x0 + (1.0 - abar_prev).sqrt() * eps

    def loss(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The pseudo-Huber distance per sample (B,) between consistency outputs (B, C, H, W); ``target`` detached."""
        c = self.huber_c
        return mean_flat(torch.sqrt((student.float() - target.detach().float()) ** 2 + c**2) - c)


@dataclass
class ConsistencyNoised(Noised):
    """A micro-batch of consistency distillation: the student's input at ``t_n`` and the target it is pulled to."""

    previous: torch.Tensor  # t_{n-1} (B,)
    target: torch.Tensor  # f_target(x_{t_{n-1}}, t_{n-1}) (B, C, h, w), without gradients


class ConsistencyDistillation:
    """The training engine's objective part for latent consistency distillation (see the module docstring).

    Args:
        consistency: the solver, scalings and loss (:class:`LatentConsistency`).
        teacher: the teacher's model call (frozen; for LCM-LoRA, the transformer with its adapter disabled).
        target: the target network's model call (for LCM-LoRA, the student itself; else an :class:`EmaTarget`).
        null_condition: the unconditional branch of a condition (the conditioning part's dropout of every sample).
        after_step: called with the trained module after every optimizer step (the EMA target's ``update``).
        guidance_range: ``(min, max)`` for a student with a guidance-scale embedding: each sample's teacher scale is
            drawn uniformly in it (instead of ``consistency.guidance_scale``) and written into the step's condition
            as ``added_cond_kwargs["guidance"]``, which the target network and the student (the engine passes it the
            same condition) read.
    """

    def __init__(
        self,
        consistency: LatentConsistency,
        teacher: ModelCall,
        target: ModelCall,
        null_condition: Callable[[dict[str, Any]], dict[str, Any]],
        after_step: Callable[[torch.nn.Module], None] | None = None,
        guidance_range: tuple[float, float] | None = None,
    ):
        if guidance_range is not None and not 1.0 <= guidance_range[0] <= guidance_range[1]:
            raise ValueError(f"The guidance range must satisfy 1 <= min <= max, got {guidance_range}.")
        self.guidance_range = guidance_range
        self.consistency = consistency
        self.teacher = teacher
        self.target = target
        self.null_condition = null_condition
        self.after_step = after_step

    def after_optimizer_step(self, module: torch.nn.Module) -> None:
        """Step the target network's average towards the student (full distillation); nothing for LCM-LoRA."""
        if self.after_step is not None:
            self.after_step(module)

    def match_scheduler(self, pipeline: Any) -> None:
        """The student samples with ``LCMScheduler`` on the teacher's noise schedule and prediction type."""
        config = {**pipeline.scheduler.config, "prediction_type": self.consistency.prediction_type}
        pipeline.scheduler = make_scheduler("lcm", config)

    @torch.no_grad()
    def noise(self, latents: torch.Tensor, condition: dict[str, Any], generator: torch.Generator) -> ConsistencyNoised:
        """``t_n``, ``t_{n-1}`` and noise from ``generator``; the teacher's guided step from ``x_{t_n}`` to
        ``x_{t_{n-1}}``; the target network's consistency output there. With a guidance range, the scales (B,) are
        drawn from ``generator`` too and put into ``condition`` (see the class docstring)."""
        c = self.consistency
        timesteps, previous = c.sample_steps(latents.shape[0], generator)
        noise = torch.randn(latents.shape, device=latents.device, generator=generator)
        noisy = c.add_noise(latents, noise, timesteps)
        text = self.teacher(noisy, timesteps, condition)
        null = self.teacher(noisy, timesteps, self.null_condition(condition))
        scales = None
        if self.guidance_range is not None:
            low, high = self.guidance_range
            scales = low + (high - low) * torch.rand(latents.shape[0], device=latents.device, generator=generator)
            condition["added_cond_kwargs"] = {**(condition.get("added_cond_kwargs") or {}), "guidance": scales}
        earlier = c.solver_step(text, null, noisy, timesteps, previous, scales).to(noisy.dtype)
        target = c.consistency_function(self.target(earlier, previous, condition), earlier, previous)
        return ConsistencyNoised(latents, noise, timesteps, noisy, previous=previous, target=target)

    def loss(self, output: torch.Tensor, noised: ConsistencyNoised) -> dict[str, torch.Tensor]:
        """The pseudo-Huber distance (B,) between the student's consistency output at ``t_n`` and the target."""
        student = self.consistency.consistency_function(output, noised.noisy, noised.timesteps)
        return {"loss": self.consistency.loss(student, noised.target)}


class EmaTarget:
    """The target network of full consistency distillation: an exponential moving average of the student.

    ``target <- decay * target + (1 - decay) * student`` after every optimizer step (LCM: decay 0.95), starting
    from the student's weights. Its ``state_dict``/``load_state_dict`` let accelerate checkpoint it, so a resumed
    run continues with the same target.

    Args:
        student: the trained module (copied; the copy is frozen and in eval mode).
        decay: the average's decay in [0, 1).
    """

    def __init__(self, student: torch.nn.Module, decay: float = 0.95):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"The target network's `decay` must be in [0, 1), got {decay}.")
        self.decay = decay
        self.module = copy.deepcopy(student).requires_grad_(False).eval()

    def __call__(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, Any]) -> torch.Tensor:
        return self.module(noisy, timestep=timesteps, **condition).sample

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """One step of the average towards the student's current weights."""
        for mine, theirs in zip(self.module.parameters(), student.parameters(), strict=True):
            mine.lerp_(theirs.detach().to(mine.dtype), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

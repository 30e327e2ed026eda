"""The IDDPM training objective PixArt-alpha was trained with (Nichol & Dhariwal 2021, "hybrid" loss).

1000 linear-beta steps, ``t`` uniform. The model predicts the noise (or, as an option, the velocity ``v``) in the
first ``C`` output channels and, in the next ``C``, the interpolation coefficient ``v_sigma`` in [-1, 1] of the learned
variance: ``log_var = frac * log(beta_t) + (1 - frac) * log(posterior_var_clipped)`` with ``frac = (v_sigma + 1) / 2``.

The loss is ``mse + vb``: the noise MSE, and the variational-bound term of that step (the KL between the true
posterior ``q(x_{t-1} | x_t, x_0)`` and the model's ``p(x_{t-1} | x_t)``, or the discretized Gaussian negative
log-likelihood of ``x_0`` at ``t = 0``) in bits per dimension, computed with the mean prediction detached so that only
the variance learns from it. Min-SNR weighting of the MSE term (Hang et al. 2023) and a noise offset are options.

The forward process (betas, ``alphas_cumprod``, ``add_noise``, ``get_velocity``) is diffusers' ``DDPMScheduler``.
Shapes: ``B`` batch, ``C`` latent channels, ``H x W`` the latent grid.

:class:`IDDPMDiffusion` is the training engine's objective part (:func:`~.engine.train`): per micro-batch the engine
calls ``noise(latents, condition, generator)`` for the model's input (a :class:`Noised`), runs the model on it, and
``loss(output, noised)`` for the per-sample losses, and ``after_optimizer_step(module)`` after every optimizer step
(nothing here; a consistency objective steps its target network); ``match_scheduler(pipeline)`` makes the pipeline
sample what the model is trained to predict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffusers import DDPMScheduler

PREDICTION_TYPES = ("epsilon", "v_prediction")


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """The mean over every dimension but the first: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Element-wise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats; arguments broadcast."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Element-wise log-probability (nats) of ``x`` in [-1, 1], quantised to 256 bins, under N(mean, exp(log_scale)^2).

    Each value owns the bin ``x ± 1/255``; the two end bins extend to ``-inf`` and ``+inf`` so that the 256
    probabilities sum to one. Uses the exact normal CDF.
    """
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centered + 1.0 / 255.0))
    cdf_min = torch.special.ndtr(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


@dataclass
class Noised:
    """A micro-batch as the model sees it: ``noisy`` latents at ``timesteps``, made from ``latents`` and ``noise``."""

    latents: torch.Tensor  # x_0 (B, C, H, W)
    noise: torch.Tensor  # (B, C, H, W)
    timesteps: torch.Tensor  # (B,) integers
    noisy: torch.Tensor  # x_t (B, C, H, W), the model's input


class Objective(Protocol):
    """What the model predicts and how the loss is formed (see the module docstring)."""

    def match_scheduler(self, pipeline: Any) -> None: ...

    def noise(self, latents: torch.Tensor, condition: dict[str, Any], generator: torch.Generator) -> Noised: ...

    def loss(self, output: torch.Tensor, noised: Noised) -> dict[str, torch.Tensor]: ...

    def after_optimizer_step(self, module: torch.nn.Module) -> None: ...


class IDDPMDiffusion:
    """The forward process and the hybrid loss of IDDPM with a learned-range variance.

    Args:
        num_timesteps: number of diffusion steps (1000 in the paper).
        beta_start, beta_end: the linear beta schedule (1e-4 to 0.02).
        prediction_type: ``"epsilon"`` (the paper) or ``"v_prediction"``.
        learn_sigma: the model outputs ``2C`` channels, the second half the variance interpolation (the paper); the
            VB term is then part of the loss. Without it the loss is the (weighted) MSE alone.
        snr_gamma: if set, weight the MSE term by ``min(SNR, gamma) / SNR`` (``/(SNR + 1)`` for v-prediction).
        noise_offset: the "noise offset" (Guttenberg 2023): :meth:`noise` adds ``noise_offset * N(0, 1)`` of shape
            (B, C, 1, 1), a constant per sample and channel, to the Gaussian noise, so that the model also learns to
            move an image's mean colour and brightness; 0 (the default) draws exactly the plain noise.
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "epsilon",
        learn_sigma: bool = True,
        snr_gamma: float | None = None,
        noise_offset: float = 0.0,
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        if snr_gamma is not None and snr_gamma <= 0:
            raise ValueError(f"`snr_gamma` must be positive, got {snr_gamma}.")
        if not noise_offset >= 0:
            raise ValueError(f"`noise_offset` must be >= 0, got {noise_offset}.")
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule="linear",
            prediction_type=prediction_type,
        )
        self.num_timesteps = num_timesteps
        self.prediction_type = prediction_type
        self.learn_sigma = learn_sigma
        self.snr_gamma = snr_gamma
        self.noise_offset = noise_offset

        # Per-step constants in float64 (as IDDPM computes them); cast when gathered.
        betas = self.scheduler.betas.double()
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        self.alphas_cumprod = alphas_cumprod
        self.log_betas = torch.log(betas)
        # The posterior variance is 0 at t = 0: its log is clipped to the value at t = 1.
        self.posterior_log_variance_clipped = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
        self.posterior_mean_coef_x0 = betas * torch.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        self.posterior_mean_coef_xt = (1.0 - alphas_cumprod_prev) * torch.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)

    @classmethod
    def for_pipeline(
        cls,
        pipeline: Any,
        prediction_type: str | None = None,
        snr_gamma: float | None = None,
        noise_offset: float = 0.0,
    ) -> IDDPMDiffusion:
        """The objective of ``pipeline``'s transformer: it predicts ``prediction_type``, by default what the pipeline's
        scheduler expects (epsilon for the official checkpoints), with the learned variance when it outputs twice the
        latent channels; ``snr_gamma`` and ``noise_offset`` as in the class."""
        transformer = pipeline.transformer
        return cls(
            prediction_type=prediction_type or pipeline.scheduler.config.get("prediction_type", "epsilon"),
            learn_sigma=transformer.out_channels == 2 * transformer.config.in_channels,
            snr_gamma=snr_gamma,
            noise_offset=noise_offset,
        )

    def after_optimizer_step(self, module: torch.nn.Module) -> None:
        """Nothing: the diffusion loss has no state of its own to update between steps."""

    def match_scheduler(self, pipeline: Any) -> None:
        """Give ``pipeline`` a scheduler that samples what the model is trained to predict (for the validation
        images and the saved pipeline): its own, with this ``prediction_type``."""
        if pipeline.scheduler.config.get("prediction_type") != self.prediction_type:
            pipeline.scheduler = type(pipeline.scheduler).from_config(
                pipeline.scheduler.config, prediction_type=self.prediction_type
            )

    @staticmethod
    def _gather(table: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[timesteps]`` shaped (B, 1, ..., 1) to broadcast against ``like``, in float32 on its device."""
        values = table.to(like.device)[timesteps.to(like.device)].float()
        return values.view(-1, *([1] * (like.ndim - 1)))

    def sample_timesteps(self, batch_size: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
        """Uniform integer timesteps (B,) in [0, num_timesteps)."""
        return torch.randint(0, self.num_timesteps, (batch_size,), device=device, generator=generator)

    def add_noise(self, x_start: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``; all (B, C, H, W), ``timesteps`` (B,)."""
        return self.scheduler.add_noise(x_start, noise, timesteps)

    def posterior(
        self, x_start: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, C, H, W) and clipped log-variance (B, 1, 1, 1) of ``q(x_{t-1} | x_t, x_0)``."""
        mean = (
            self._gather(self.posterior_mean_coef_x0, timesteps, x_t) * x_start
            + self._gather(self.posterior_mean_coef_xt, timesteps, x_t) * x_t
        )
        return mean, self._gather(self.posterior_log_variance_clipped, timesteps, x_t)

    def predict_x_start(self, prediction: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x_0`` from the model's noise (or velocity) prediction; (B, C, H, W)."""
        abar = self._gather(self.alphas_cumprod, timesteps, x_t)
        if self.prediction_type == "v_prediction":
            return abar.sqrt() * x_t - (1.0 - abar).sqrt() * prediction
        return (x_t - (1.0 - abar).sqrt() * prediction) / abar.sqrt()

    def model_log_variance(self, v_sigma: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The learned-range log-variance from the model's interpolation output ``v_sigma`` in [-1, 1]; (B, C, H, W)."""
        frac = (v_sigma + 1.0) / 2.0
        max_log = self._gather(self.log_betas, timesteps, v_sigma)
        min_log = self._gather(self.posterior_log_variance_clipped, timesteps, v_sigma)
        return frac * max_log + (1.0 - frac) * min_log

    def vb_term(
        self,
        prediction: torch.Tensor,
        v_sigma: torch.Tensor,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        """The step's variational-bound term in bits per dimension (B,).

        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for ``t > 0``, the discretized NLL of ``x_0`` for ``t = 0``.
        ``prediction`` is the noise/velocity output (B, C, H, W); ``v_sigma`` the variance interpolation (B, C, H, W).
        """
        true_mean, true_log_var = self.posterior(x_start, x_t, timesteps)
        model_mean, _ = self.posterior(self.predict_x_start(prediction, x_t, timesteps), x_t, timesteps)
        model_log_var = self.model_log_variance(v_sigma, timesteps)
        kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_var)) / math.log(2.0)
        return torch.where(timesteps.to(kl.device) == 0, nll, kl)

    def mse_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Per-sample weight (B,) of the MSE term: ones, or the min-SNR weight when ``snr_gamma`` is set."""
        abar = self.alphas_cumprod.to(timesteps.device)[timesteps].float()
        if self.snr_gamma is None:
            return torch.ones_like(abar)
        snr = abar / (1.0 - abar)
        clipped = snr.clamp(max=self.snr_gamma)
        return clipped / (snr + 1.0) if self.prediction_type == "v_prediction" else clipped / snr

    def training_losses(
        self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor, timesteps
    ) -> dict[str, torch.Tensor]:
        """The hybrid loss per sample.

        Args:
            model_output: the model's output (B, 2C, H, W) with ``learn_sigma``, else (B, C, H, W).
            x_start: clean latents (B, C, H, W).
            x_t: the noised latents the model saw (B, C, H, W).
            noise: the noise that made them (B, C, H, W).
            timesteps: (B,) integer timesteps.

        Returns:
            ``{"loss", "mse", "vb"}``, each (B,) float32; ``loss = weight * mse + vb`` (``vb`` is zeros without
            ``learn_sigma``).
        """
        channels = x_start.shape[1]
        expected = 2 * channels if self.learn_sigma else channels
        if model_output.shape[1] != expected:
            raise ValueError(
                f"The model outputs {model_output.shape[1]} channels; {expected} expected for {channels} latent "
                f"channels with learn_sigma={self.learn_sigma}."
            )
        model_output, x_start, x_t, noise = (t.float() for t in (model_output, x_start, x_t, noise))
        prediction = model_output[:, :channels]
        target = noise if self.prediction_type == "epsilon" else self.scheduler.get_velocity(x_start, noise, timesteps)
        mse = mean_flat((target - prediction) ** 2)
        if self.learn_sigma:
            # The mean is detached: the VB term trains only the variance (IDDPM section 3.1).
            vb = self.vb_term(prediction.detach(), model_output[:, channels:], x_start, x_t, timesteps)
        else:
            vb = torch.zeros_like(mse)
        return {"loss": self.mse_weights(timesteps) * mse + vb, "mse": mse, "vb": vb}

    def noise(self, latents: torch.Tensor, condition: dict[str, Any], generator: torch.Generator) -> Noised:
        """Uniform timesteps, then Gaussian noise (plus the noise offset's (B, C, 1, 1) constant when
        ``noise_offset`` > 0), all drawn from ``generator``, and the noised latents. ``condition`` is unused here (an
        objective with a teacher model would use it)."""
        timesteps = self.sample_timesteps(latents.shape[0], latents.device, generator)
        noise = torch.randn(latents.shape, device=latents.device, generator=generator)
        if self.noise_offset:
            shape = (*latents.shape[:2], 1, 1)
            noise = noise + self.noise_offset * torch.randn(shape, device=latents.device, generator=generator)
        return Noised(latents, noise, timesteps, self.add_noise(latents, noise, timesteps))

    def loss(self, output: torch.Tensor, noised: Noised) -> dict[str, torch.Tensor]:
        """:meth:`training_losses` of the model's output on ``noised``."""
        return self.training_losses(output, noised.latents, noised.noisy, noised.noise, noised.timesteps)

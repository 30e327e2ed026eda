"""The samplers, selectable by name: the paper's three (appendix A.5: DPM-Solver, SA-Solver, IDDPM) and LCM.

IDDPM is diffusers' ``DDPMScheduler`` with the learned-range variance, so that it uses the second half of the
transformer's output (the variance interpolation) the way PixArt was trained. LCM is diffusers' ``LCMScheduler``, the
multistep consistency sampler of PixArt-LCM (PixArt-δ) and LCM-LoRA models: 4 steps, and guidance 0 because a
consistency model has the guidance distilled in (the pipeline then runs without the unconditional batch).
One-step DMD models need no sampler of their own: DPM-Solver with ``timesteps=[400]`` (the DMD checkpoint's one
step) and guidance 1 returns the model's clean-sample prediction at that step.
"""

from __future__ import annotations

from typing import Any

from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, LCMScheduler, SASolverScheduler, SchedulerMixin

#: Sampler name -> (scheduler class, config overrides, default steps, default guidance) as in the official demos.
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any], int, float]] = {
    "dpm": (DPMSolverMultistepScheduler, {}, 20, 4.5),
    "sa": (SASolverScheduler, {}, 25, 3.0),
    "iddpm": (DDPMScheduler, {"variance_type": "learned_range", "clip_sample": False}, 100, 4.5),
    "lcm": (LCMScheduler, {}, 4, 0.0),
}


#: The keys that define the noise schedule and what the model predicts; they carry over when the sampler changes.
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")


def scheduler_name(name: str) -> str:
    """Normalise a sampler name (``dpm``, ``dpm-solver``, ``sa``, ``sa-solver``, ``iddpm``, ``lcm``); ValueError if
    unknown."""
    key = name.lower().replace("_", "-").removesuffix("-solver")
    if key not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}: choose one of {sorted(SCHEDULERS)}.")
    return key


def make_scheduler(name: str, config: dict[str, Any] | None = None) -> SchedulerMixin:
    """Build the named sampler with its own defaults and the noise schedule (:data:`SCHEDULE_KEYS`) of ``config``."""
    cls, overrides, _, _ = SCHEDULERS[scheduler_name(name)]
    schedule = {key: value for key, value in (config or {}).items() if key in SCHEDULE_KEYS}
    return cls(**schedule, **overrides)


def uses_learned_variance(scheduler: SchedulerMixin) -> bool:
    """Whether the scheduler consumes the model's variance channels (IDDPM with a learned variance)."""
    return getattr(scheduler.config, "variance_type", None) in ("learned", "learned_range")

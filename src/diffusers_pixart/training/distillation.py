"""Latent consistency distillation of a PixArt pipeline (PixArt-delta): a 1-4 step student, full or as an LCM-LoRA.

The shared loop (:func:`~.engine.train`) with stage 2's data and captions, and the consistency objective
(:class:`~.consistency.ConsistencyDistillation`) in place of the diffusion loss:

    full distillation   CaptionConditioning  AllParameters   teacher: a frozen copy    target: EMA of the student
    --lora_rank R       CaptionConditioning  LoraAdapter     teacher: adapter off      target: the student itself

The teacher takes a guided DDIM step of the skipping-step solver (``--num_ddim_timesteps``, guidance
``--teacher_guidance_scale`` folded into the step); the student learns to map both ends of the step to the same clean
latents. The student keeps the teacher's prediction type and samples with ``LCMScheduler`` (set on the pipeline, so the
saved pipeline folder is an LCM layout), without classifier-free guidance. Validation renders each prompt at
``--validation_step_counts`` (1, 2 and 4 steps).

``--guidance_embedding`` (full distillation only) gives the student a guidance-scale embedding
(``PixArtTransformer2DModel.enable_guidance_embedding``, zero-initialised: the student starts as the teacher): the
teacher's scale is drawn per sample in ``[--guidance_scale_min, --guidance_scale_max]`` and the student learns to
sample at any scale of the range; its pipeline then passes ``guidance_scale`` to the embedding (no CFG batch).

The result: ``<output_dir>/pipeline`` (full) or ``<output_dir>/lora`` (an LCM-LoRA that ``load_lora_weights`` reads
onto the base pipeline; then ``set_scheduler("lcm")``, 4 steps, guidance 0).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler

from .conditioning import CaptionConditioning, generate
from .config import option, run_command
from .consistency import ConsistencyDistillation, EmaTarget, LatentConsistency, ModelCall
from .dreambooth import add_lora_adapter
from .engine import make_accelerator, train
from .parameters import AllParameters, LoraAdapter, transformer_forward
from .stages import (
    Stage2Config,
    base_model_id,
    check_base_unchanged,
    check_data_options,
    load_pipeline,
    make_loader,
    with_sequence_length,
)

DESCRIPTION = (
    "Latent consistency distillation (LCM; PixArt-delta): distil a PixArt pipeline into a 1-4 step model, all weights "
    "or an LCM-LoRA (--lora_rank), from raw image-caption data or precomputed features."
)
#: The layers an LCM-LoRA adapts by default: attention and feed-forward of every block.
LCM_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]


@dataclass
class DistillConfig(Stage2Config):
    """Stage 2's options with the distillation's defaults, plus the solver, the teacher's guidance and the target."""

    learning_rate: float = option(1e-6, "AdamW learning rate (LCM full distillation: 1e-6; LCM-LoRA: about 1e-4).")
    lr_warmup_steps: int = option(0, "Linear warm-up steps of the learning rate.")
    max_grad_norm: float = option(1.0, "Gradient clipping norm; 0 disables it.")
    caption_dropout: float = option(0.0, "Probability of distilling on the null caption (LCM: 0).")
    use_ema: bool = option(False, "Also keep (and save) an EMA of the student, besides the target network.")
    validation_guidance_scale: float = option(0.0, "Guidance of the validation images (consistency models: 0).")
    validation_step_counts: list[int] = option([1, 2, 4], "Sampling steps of the validation grids, one row each.")
    num_ddim_timesteps: int = option(50, "Steps of the skipping-step DDIM solver over the 1000 training steps (50).")
    teacher_guidance_scale: float = option(4.5, "Classifier-free guidance scale folded into the teacher's step.")
    huber_c: float = option(0.001, "Pseudo-Huber constant of the consistency loss.")
    target_ema_decay: float = option(0.95, "Decay of the target network's average of the student (full only).")
    lora_rank: int = option(0, "Rank of an LCM-LoRA to train instead of all weights (0: full distillation).")
    lora_alpha: float | None = option(None, "LoRA alpha (the adapter is scaled by alpha / rank); default: the rank.")
    lora_target_modules: list[str] = option(LCM_LORA_TARGETS, "Transformer layers (name suffixes) that get LoRA.")
    guidance_embedding: bool = option(
        False,
        "Give the student a guidance-scale embedding (zero-initialised) and distil a range of teacher guidance scales "
        "(--guidance_scale_min/max, one per sample) instead of --teacher_guidance_scale; full distillation only.",
    )
    guidance_scale_min: float = option(2.0, "With --guidance_embedding: the smallest teacher guidance scale drawn.")
    guidance_scale_max: float = option(8.0, "With --guidance_embedding: the largest teacher guidance scale drawn.")


def check_guidance_embedding(config: DistillConfig, transformer: torch.nn.Module) -> tuple[float, float] | None:
    """The guidance range of ``--guidance_embedding`` (None without it), checked against the other options.

    Raises:
        ValueError: an LCM-LoRA run (the embedding is a new module, not an adapter), a teacher that has an embedding
            already, a range outside ``1 <= min <= max``, or (when validating) a validation guidance outside it.
    """
    if not config.guidance_embedding:
        return None
    low, high = config.guidance_scale_min, config.guidance_scale_max
    if config.lora_rank:
        raise ValueError("--guidance_embedding trains a new module of the student: use it without --lora_rank.")
    if transformer.config.get("guidance_embedding", False):
        raise ValueError("--guidance_embedding: the teacher already has a guidance-scale embedding.")
    if not 1.0 <= low <= high:
        raise ValueError(f"--guidance_scale_min/max must satisfy 1 <= min <= max, got {low} and {high}.")
    validates = config.validation_steps > 0 and config.validation_prompts
    if validates and not low <= config.validation_guidance_scale <= high:
        raise ValueError(
            f"--validation_guidance_scale {config.validation_guidance_scale} goes to the student's guidance embedding: "
            f"choose one in the distilled range [{low}, {high}]."
        )
    return low, high


class StepCountValidation:
    """Caption conditioning whose validation renders every prompt at each of ``step_counts`` (one row per count).

    Everything else is the wrapped :class:`~.conditioning.CaptionConditioning`'s.
    """

    def __init__(self, captions: CaptionConditioning, step_counts: Sequence[int]):
        if not step_counts or min(step_counts) < 1:
            raise ValueError(f"--validation_step_counts must be positive step counts, got {list(step_counts)}.")
        self.captions = captions
        self.step_counts = list(step_counts)
        self.raw_keys, self.feature_keys = captions.raw_keys, captions.feature_keys
        self.prepare, self.check_batch = captions.prepare, captions.check_batch
        self.encode, self.drop = captions.encode, captions.drop

    def sample_validation(self, device: torch.device) -> tuple[list[str], list]:
        """(titles, PIL images): each validation prompt at each step count, count by count."""
        config, prompts = self.captions.config, list(self.captions.config.validation_prompts)
        titles, images = [], []
        for steps in self.step_counts:
            step_config = copy.copy(config)
            step_config.validation_inference_steps = steps
            size = config.resolution
            images += generate(step_config, self.captions.pipeline, device, prompts, height=size, width=size)
            titles += [f"{steps} step{'s' * (steps > 1)}: {prompt}" for prompt in prompts]
        return titles, images


def autocast_call(call: ModelCall, accelerator: Accelerator) -> ModelCall:
    """``call`` under the accelerator's autocast (the student's forward has it through ``prepare``)."""

    def run(noisy: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, Any]) -> torch.Tensor:
        with accelerator.autocast():
            return call(noisy, timesteps, condition)

    return run


def adapter_off(transformer: torch.nn.Module) -> ModelCall:
    """The base model's call: ``transformer`` with its adapters disabled (the LCM-LoRA's teacher)."""

    def run(noisy: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, Any]) -> torch.Tensor:
        transformer.disable_adapters()
        try:
            return transformer_forward(transformer, noisy, timesteps, condition)
        finally:
            transformer.enable_adapters()

    return run


def null_caption(conditioning: CaptionConditioning) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The unconditional branch of a condition: every caption replaced by the null caption."""

    def run(condition: Mapping[str, Any]) -> dict[str, Any]:
        batch = condition["encoder_hidden_states"].shape[0]
        mask = torch.ones(batch, dtype=torch.bool, device=condition["encoder_hidden_states"].device)
        return conditioning.drop(dict(condition), mask)

    return run


def train_lcm_distill(config: DistillConfig) -> Path:
    """Distil ``--pretrained_model_name_or_path`` (see the module docstring); returns the saved result folder.

    Raises:
        ValueError, FileNotFoundError: bad options or data (before any step), among them ``--vae`` and
            ``--kv_compress_factor`` (:func:`~.stages.check_base_unchanged`): an LCM-LoRA does not hold them, and a
            full student would distil a teacher that never trained with them (distil the stage scripts' result).
    """
    check_data_options(config)
    if config.caption_dropout:
        raise ValueError("--caption_dropout must be 0: the teacher's guided step is the unconditional branch's use.")
    if config.lora_rank:
        check_base_unchanged(config, "an LCM-LoRA")
    else:  # the student could hold them, but it would learn from a teacher that never trained with them
        check_base_unchanged(
            config,
            reason="and the teacher (a frozen copy of the loaded model) would never have trained with that change",
        )
    config = with_sequence_length(config)
    pipeline = load_pipeline(config)
    accelerator = make_accelerator(config)
    data = make_loader(config, accelerator, caption_column=config.caption_column)
    captions = CaptionConditioning(config, pipeline)
    transformer = pipeline.transformer
    guidance_range = check_guidance_embedding(config, transformer)
    schedule = DDPMScheduler.from_config(pipeline.scheduler.config)
    prediction_type = config.prediction_type or pipeline.scheduler.config.get("prediction_type", "epsilon")
    consistency = LatentConsistency(
        schedule.alphas_cumprod,
        prediction_type,
        num_ddim_timesteps=config.num_ddim_timesteps,
        guidance_scale=config.teacher_guidance_scale,
        huber_c=config.huber_c,
    )
    card_info: dict[str, Any] = {
        "stage": "latent consistency distillation",
        "data": config.train_data or config.features,
        "how to sample": "LCMScheduler (set_scheduler('lcm')), 4 steps (1-8), guidance_scale 0",
        "teacher guidance": guidance_range or config.teacher_guidance_scale,
    }
    if guidance_range is not None:
        card_info["how to sample"] = (
            f"LCMScheduler (set_scheduler('lcm')), 4 steps (1-8), guidance_scale in {list(guidance_range)} (the "
            "student's guidance embedding; no classifier-free guidance)"
        )
    # The objective runs the teacher and the target without gradients (ConsistencyDistillation.noise).
    if config.lora_rank:
        add_lora_adapter(transformer, config)
        parameters = LoraAdapter(pipeline)
        teacher, target = adapter_off(transformer), functools.partial(transformer_forward, transformer)
        card_info["LCM-LoRA rank"] = config.lora_rank
    else:
        parameters = AllParameters(pipeline)
        frozen = copy.deepcopy(transformer).requires_grad_(False).eval().to(accelerator.device)
        teacher = functools.partial(transformer_forward, frozen)
        if guidance_range is not None:  # the student's (and so the target's) embedding, the teacher without one
            transformer.enable_guidance_embedding()
        target = EmaTarget(transformer, config.target_ema_decay)
        target.module.to(accelerator.device)
        accelerator.register_for_checkpointing(target)
    objective = ConsistencyDistillation(
        consistency,
        autocast_call(teacher, accelerator),
        autocast_call(target, accelerator),
        null_caption(captions),
        after_step=target.update if isinstance(target, EmaTarget) else None,
        guidance_range=guidance_range,
    )
    result = train(
        config,
        pipeline,
        data,
        StepCountValidation(captions, config.validation_step_counts),
        parameters,
        objective,
        accelerator=accelerator,
        card_info=card_info,
        base_model=base_model_id(config),
    )
    return result.path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: parse flags (and ``--config``), distil; a bad input exits with status 2."""
    return run_command(DistillConfig, train_lcm_distill, argv, DESCRIPTION)

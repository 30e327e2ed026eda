"""The training loop every trainer shares, one function read top to bottom (:func:`train`); what differs comes in parts.

    train(config, pipeline, data, conditioning, parameters, objective)

Set-up (accelerate, the options, the frozen components, optimizer, EMA, resume), then per micro-batch: latents ->
condition -> condition dropout -> noise and target -> model -> loss -> backward, and once per optimizer step (every
``gradient_accumulation_steps`` micro-batches): clip -> optimizer step -> EMA -> log -> checkpoint -> validate; at the
end the data summary and the result, saved with the EMA weights (and pushed to the Hub).

The parts, each with one job:

- conditioning (:mod:`.conditioning`): what a batch is conditioned on, its dropout to the null condition (for
  classifier-free guidance), and what validation renders: captions (:class:`~.conditioning.CaptionConditioning`),
  class labels (:class:`~.conditioning.ClassConditioning`), captions and a control image
  (:class:`~.controlnet.ControlConditioning`);
- trained parameters (:mod:`.parameters`): which parameters train, how they enter the model's forward, and what is
  saved as the result: all of the transformer (:class:`~.parameters.AllParameters`), a LoRA adapter
  (:class:`~.parameters.LoraAdapter`), a ControlNet copy of the first blocks (:class:`~.controlnet.ControlNetCopy`);
- objective (:mod:`.diffusion`): the model's input, what it predicts, and the loss:
  :class:`~.diffusion.IDDPMDiffusion` (noise or velocity, IDDPM's hybrid loss with the learned variance when the
  model outputs it, min-SNR weighting as an option).

Every trainer is a composition of parts (all with ``IDDPMDiffusion.for_pipeline`` as the objective):

    stage 1 (.stages)                      ClassConditioning    AllParameters
    stages 2 and 3 (.stages), DreamBooth   CaptionConditioning  AllParameters
    DreamBooth --lora_rank (.dreambooth)   CaptionConditioning  LoraAdapter(save_text_encoder=bool(--add_tokens))
    ControlNet (.controlnet)               ControlConditioning  ControlNetCopy

Two more trainers compose the same way:

- LoRA on captioned data (:mod:`.lora`): stage 2's loader, ``CaptionConditioning``, ``LoraAdapter`` once the
  transformer carries the adapter, ``IDDPMDiffusion``: no new part.
- Latent consistency distillation (:mod:`.distillation`): ``CaptionConditioning`` (its validation at 1/2/4 steps),
  ``AllParameters`` or ``LoraAdapter`` (LCM-LoRA), and :class:`~.consistency.ConsistencyDistillation` as the
  objective: its ``noise`` runs the teacher's guided solver step and the target network without gradients, its
  ``loss`` is the pseudo-Huber consistency loss, its ``after_optimizer_step`` steps the target network's average of
  the student (full distillation), which the trainer registers for checkpointing.

Data: any iterable of batch dicts, already split between ranks (``diffusers_pixart.data`` loaders are). Raw batches
hold ``pixel_values`` (B, 3, H, W) in [-1, 1] and the condition's keys (``text``: B captions; ``label``: B classes);
precomputed ones ``latents`` (B, 4, h, w) (drawn from the VAE posterior and scaled, as
``diffusers_pixart.data.FeatureLoader`` gives them) and the condition's precomputed keys (``prompt_embeds`` (B, L, C)
and ``prompt_attention_mask`` (B, L)). Models with micro-conditions also need ``resolution`` (B, 2) and
``aspect_ratio`` (B, 1). A loader with ``state_dict``/``load_state_dict`` has its position saved in checkpoints, one
file per rank; any other iterable is re-iterated per epoch (``set_epoch(epoch)`` first if it has one), and the
batches consumed are skipped on resume. Checkpoints: :mod:`.checkpoints`.

Randomness of a step (timesteps, noise, condition dropout, VAE sampling) comes from a generator seeded by
``(seed, micro-step, rank)``, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..atomic import atomic_dir, atomic_file
from ..data.features import encode_images, sample_latents
from ..models.attention import caption_cache
from .checkpoints import (
    TrainingProgress,
    check_checkpoint_shapes,
    data_position,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .conditioning import MICRO_CONDITION_KEYS, Conditioning, micro_conditioned
from .config import TrainingConfig
from .diffusion import Objective
from .optimizers import make_optimizer
from .parameters import TrainedParameters, trainable_parameters

logger = logging.getLogger(__name__)

#: The counts of the end-of-run data summary (``StreamingBatchLoader.summary``), in the order shown.
_SUMMARY_LABELS = {
    "seen": "seen",
    "used": "used",
    "skipped": "skipped",
    "dropped": "dropped (incomplete buckets at epoch ends)",
    "waiting": "waiting in buckets",
}


@dataclass
class TrainingResult:
    """What :func:`train` returns: the saved result folder and the run's final state."""

    path: Path  # <output_dir>/<result_name>
    progress: TrainingProgress
    ema: EMAModel | None  # the averaged trained parameters, None without --use_ema
    validation_images: list[tuple[str, Any]] = field(default_factory=list)  # (title, PIL image) of the last validation


def train(
    config: TrainingConfig,
    pipeline: Any,
    data: Iterable[Mapping[str, Any]],
    conditioning: Conditioning,
    parameters: TrainedParameters,
    objective: Objective,
    *,
    accelerator: Accelerator | None = None,
    card_info: Mapping[str, Any] | None = None,
    base_model: str | None = None,
) -> TrainingResult:
    """Train for ``config.max_train_steps`` optimizer steps on ``data``; save the result (see the module docstring).

    Args:
        config: the options (:class:`~.config.TrainingConfig`).
        pipeline: the pipeline the parts were made for; its frozen VAE encodes raw batches, its scheduler samples the
            validation images, and it is (part of) the saved result.
        data: this process's batches.
        conditioning, parameters, objective: the parts.
        accelerator: the run's :func:`make_accelerator`, when the caller made it first to split the data between
            its processes; by default made here.
        card_info: extra entries for the model card's training table (stage, data, ...).
        base_model: the Hub id the run started from, for the model card.

    Raises:
        ValueError, FileNotFoundError: an option cannot work, the data is empty, or its first batch does not fit the
            model (all before any step).
    """
    start_time = time.time()
    output_dir = Path(config.output_dir)
    checkpoints_dir = output_dir / "checkpoints"
    acc = accelerator if accelerator is not None else make_accelerator(config)
    check_options(config, pipeline)
    objective.match_scheduler(pipeline)
    resume_path = find_checkpoint(config.resume_from_checkpoint, checkpoints_dir)

    # ---- Set-up: the frozen components on the device, the trained module, optimizer, schedule, EMA, resume.
    set_seed(config.seed)
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(acc.mixed_precision, torch.float32)
    frozen_originals = place_frozen_components(pipeline, parameters.frozen_components, acc.device, weight_dtype)
    conditioning.prepare()
    module = parameters.module
    module.train()
    parameters.prepare()
    if config.gradient_checkpointing:
        module.enable_gradient_checkpointing()
    params = trainable_parameters(module)
    optimizer = make_optimizer(config, params)  # --optimizer: AdamW (the paper's), 8-bit AdamW or CAME
    # accelerate steps a prepared scheduler once per process: the warm-up and decay are counted in those steps.
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps * acc.num_processes,
        num_training_steps=config.max_train_steps * acc.num_processes,
    )
    ema = None
    if config.use_ema:
        ema = EMAModel(params, decay=config.ema_decay, model_cls=type(module), model_config=module.config)
        ema.to(acc.device)
        acc.register_for_checkpointing(ema)
    progress = TrainingProgress()
    acc.register_for_checkpointing(progress)
    model, optimizer, lr_scheduler = acc.prepare(module, optimizer, lr_scheduler)

    def keep_checkpointed(models: list, weights: list, output_dir: str) -> None:  # accelerate's save_state hook
        weights[:] = [parameters.checkpointed(state) for state in weights]

    acc.register_save_state_pre_hook(keep_checkpointed)
    if resume_path is not None:
        # The keys match exactly: a non-strict load only skips what checkpoints leave out (a LoRA run's base).
        what = "transformer" if module is pipeline.transformer else type(module).__name__
        check_checkpoint_shapes(resume_path, parameters.checkpointed(module.state_dict()), what)
        load_checkpoint(acc, resume_path, data, strict=parameters.strict_checkpoints)
        if acc.is_main_process:
            epoch, sample = data_position(data, progress, config.train_batch_size)
            logger.info("resumed from %s: step %d, epoch %d, sample %d", resume_path.name, progress.step, epoch, sample)
    elif config.resume_from_checkpoint == "latest":
        logger.info("No checkpoint in %s: starting from scratch.", checkpoints_dir)
    if acc.is_main_process and acc.log_with:
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(config).items()}
        acc.init_trackers("pixart", config=hparams)

    # ---- The steps: one micro-batch per iteration, an optimizer step every gradient_accumulation_steps of them.
    micro_step = progress.step * config.gradient_accumulation_steps
    total_batch = config.train_batch_size * acc.num_processes * config.gradient_accumulation_steps
    samples_this_run = 0
    validation_images: list[tuple[str, Any]] = []
    with contextlib.closing(batches_from(data, progress)) as source:  # closing ends the loader's worker processes
        first = next(source, None)
        if first is None:
            raise ValueError("The training data is empty: it yielded no batch.")
        check_batch(first, pipeline, conditioning)
        batches = itertools.chain([first], source)
        bar = tqdm(total=config.max_train_steps, initial=progress.step, disable=not acc.is_local_main_process)
        meter = LossMeter(acc, config.gradient_accumulation_steps)
        with log_above_the_bar():
            while progress.step < config.max_train_steps:
                batch = next(batches, None)
                if batch is None:  # a loader with a fixed number of epochs ran out
                    logger.warning("The data ran out at step %d of %d.", progress.step, config.max_train_steps)
                    break
                samples_this_run += len(next(iter(batch.values())))
                with acc.accumulate(model):
                    generator = step_generator(config.seed, micro_step, acc)
                    # Latents and condition (frozen encoders), then the condition dropout for classifier-free guidance.
                    with torch.no_grad():
                        latents = batch_latents(batch, pipeline.vae, acc.device, generator)
                        condition = conditioning.encode(batch, acc.device)
                    drop = torch.rand(latents.shape[0], device=acc.device, generator=generator) < config.caption_dropout
                    condition = conditioning.drop(condition, drop)
                    # Noise and target -> model -> loss.
                    noised = objective.noise(latents, condition, generator)
                    with caption_cache(drop_padding=True) if config.drop_caption_padding else nullcontext():
                        output = parameters.forward(model, noised.noisy, noised.timesteps, condition)
                    losses = {name: value.mean() for name, value in objective.loss(output, noised).items()}
                    # Backward; clip and step once the gradients of the accumulated micro-batches are summed.
                    acc.backward(losses["loss"])
                    if acc.sync_gradients and config.max_grad_norm > 0:
                        acc.clip_grad_norm_(trainable_parameters(model), config.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                micro_step += 1
                progress.batches_in_epoch += 1
                meter.add(losses)
                if not acc.sync_gradients:
                    continue

                # One optimizer step done: EMA, log, checkpoint, validate.
                progress.step += 1
                if ema is not None:
                    ema.step(trainable_parameters(model))
                objective.after_optimizer_step(module)  # e.g. consistency distillation's target network
                means = meter.end_step(total_batch)
                lr = lr_scheduler.get_last_lr()[0]
                bar.update(1)
                bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}", s_per_step=f"{means['step_time']:.2f}")
                if progress.step % config.logging_steps == 0:
                    if acc.log_with:
                        acc.log({**means, "lr": lr}, step=progress.step)
                    meter.reset()
                if progress.step % config.checkpointing_steps == 0 or progress.step == config.max_train_steps:
                    save_checkpoint(acc, checkpoints_dir, progress.step, data, config.checkpoints_total_limit)
                if config.validation_steps and progress.step % config.validation_steps == 0 and acc.is_main_process:
                    validation_images = validate(conditioning, module, ema, acc, output_dir, progress.step)
        bar.close()
    report_data(acc, data, samples_this_run, progress.step)

    # ---- The result, with the EMA weights; the frozen components get their original dtype and weights back.
    acc.wait_for_everyone()
    final = output_dir / parameters.result_name
    if acc.is_main_process:
        for name, (dtype, state) in frozen_originals.items():
            getattr(pipeline, name).to(dtype).load_state_dict(state)
        with ema_weights(ema, module):
            module.eval()
            with atomic_dir(final) as tmp:
                parameters.save(tmp)
            if config.push_to_hub:
                summary = training_summary(config, acc, card_info, progress.step, start_time)
                card = {"training": summary, "base_model": base_model}
                parameters.push(config.hub_model_id, samples=validation_images, card_info=card)
    acc.wait_for_everyone()
    acc.end_training()
    return TrainingResult(final, progress, ema, validation_images)


# ------------------------------------------------------------------------------------------ checks and set-up
def make_accelerator(config: TrainingConfig) -> Accelerator:
    """The run's ``Accelerator``: gradient accumulation, mixed precision, the tracker, logs in ``<output_dir>/logs``.
    Make it before the data: its ``process_index`` and ``num_processes`` split the data."""
    output_dir = Path(config.output_dir)
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=None if config.report_to in ("", "none") else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )


def vae_scale_factor(vae: Any) -> int:
    """Image pixels per latent pixel of an ``AutoencoderKL``: 2 per down-sampling level (8 for sd-vae-ft-ema)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def check_resolution(resolution: int, patch_size: int, vae_factor: int) -> None:
    """Raise a ``ValueError`` unless ``resolution`` is a positive multiple of ``patch_size`` x ``vae_factor``."""
    factor = patch_size * vae_factor
    if resolution <= 0 or resolution % factor:
        raise ValueError(
            f"--resolution {resolution} must be a positive multiple of the patch size {patch_size} x the VAE "
            f"down-sampling {vae_factor} = {factor}."
        )


def check_options(config: TrainingConfig, pipeline: Any) -> None:
    """Raise a ``ValueError`` naming the first option that cannot work, before anything is loaded or trained."""
    check_resolution(config.resolution, pipeline.transformer.config.patch_size, vae_scale_factor(pipeline.vae))
    for name in ("train_batch_size", "max_train_steps", "gradient_accumulation_steps", "checkpointing_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(config, name)}.")
    if not 0.0 <= config.caption_dropout <= 1.0:
        raise ValueError(f"--caption_dropout must be in [0, 1], got {config.caption_dropout}.")
    if config.checkpoints_total_limit is not None and config.checkpoints_total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be at least 1, got {config.checkpoints_total_limit}.")
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id.")


def check_batch(batch: Mapping[str, Any], pipeline: Any, conditioning: Conditioning) -> None:
    """Raise a ``ValueError`` naming what the first batch lacks or gets wrong."""
    keys = conditioning.feature_keys if "latents" in batch else conditioning.raw_keys
    missing = [k for k in keys if k not in batch]
    if micro_conditioned(pipeline.transformer):
        missing += [k for k in MICRO_CONDITION_KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"The training batches lack {missing} (keys present: {sorted(batch)}). Raw batches need "
            f"{list(conditioning.raw_keys)}, precomputed ones {list(conditioning.feature_keys)}; micro-conditioned "
            f"models also {list(MICRO_CONDITION_KEYS)}."
        )
    if "latents" in batch:
        patch = pipeline.transformer.config.patch_size
        if any(size % patch for size in batch["latents"].shape[-2:]):
            raise ValueError(f"Latents {tuple(batch['latents'].shape)} are not divisible by the patch size {patch}.")
    conditioning.check_batch(batch)


def place_frozen_components(
    pipeline: Any, names: Sequence[str], device: torch.device, weight_dtype: torch.dtype
) -> dict[str, tuple[torch.dtype, dict[str, torch.Tensor]]]:
    """Put the pipeline's frozen components (no gradients, eval mode) on ``device`` in ``weight_dtype`` (T5 stays in
    float32 for float16: it overflows). Returns the original dtype and weights of those that were cast, which the
    saved pipeline gets back (a cast back would round them)."""
    originals = {}
    for name in names:
        frozen = getattr(pipeline, name, None)
        if frozen is None:
            continue
        dtype = torch.float32 if name == "text_encoder" and weight_dtype == torch.float16 else weight_dtype
        if frozen.dtype != dtype:
            state = {k: v.detach().to("cpu", copy=True) for k, v in frozen.state_dict().items()}
            originals[name] = (frozen.dtype, state)
        frozen.requires_grad_(False).eval().to(device, dtype)
    return originals


# ------------------------------------------------------------------------------------------------- the step
def batches_from(data: Iterable[Mapping[str, Any]], progress: TrainingProgress) -> Iterator[Mapping[str, Any]]:
    """Batches from the current data position on, epoch after epoch (the loop advances ``progress``)."""
    if hasattr(data, "load_state_dict"):  # a stateful loader resumes and counts epochs itself
        yield from data
        return
    while True:
        if hasattr(data, "set_epoch"):
            data.set_epoch(progress.epoch)
        skip, empty = progress.batches_in_epoch, True
        for batch in itertools.islice(iter(data), skip, None):
            empty = False
            yield batch
        if empty and skip == 0:
            raise ValueError(
                f"The training data yielded no batch in epoch {progress.epoch}: it is empty (or is a one-shot "
                "iterator that ran out)."
            )
        progress.epoch += 1
        progress.batches_in_epoch = 0


def step_generator(seed: int, micro_step: int, acc: Accelerator) -> torch.Generator:
    """The generator of one micro-batch's randomness, seeded by ``(seed, micro_step, rank)``."""
    step_seed = (seed * 1_000_003 + micro_step * acc.num_processes) % 2**62
    return torch.Generator(acc.device).manual_seed(step_seed + acc.process_index)


def batch_latents(batch: Mapping[str, Any], vae: Any, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """Latents (B, 4, h, w) scaled by the VAE factor: precomputed, or drawn from the VAE posterior of the images."""
    if "latents" in batch:  # drawn from the stored posterior and scaled by the loader
        return batch["latents"].to(device, torch.float32)
    mean, std = encode_images(vae, batch["pixel_values"])
    return sample_latents(
        mean.float(), std.float(), vae.config.scaling_factor, vae.config.get("shift_factor"), generator
    )


class LossMeter:
    """The logged values: the losses of the micro-batches summed per optimizer step (each divided by the
    accumulation steps, averaged over the processes), step time and throughput, averaged over the steps since the
    last :meth:`reset` (the ``--logging_steps`` window)."""

    def __init__(self, acc: Accelerator, accumulation_steps: int):
        self.acc = acc
        self.accumulation_steps = accumulation_steps
        self.running: dict[str, float] = {}  # this optimizer step's
        self.window: dict[str, float] = {}  # sums over the window's steps
        self.window_steps = 0
        self.tic = time.perf_counter()

    def add(self, losses: Mapping[str, torch.Tensor]) -> None:
        """Add a micro-batch's losses."""
        for name, value in losses.items():
            value = self.acc.gather(value.detach()[None]).mean().item() / self.accumulation_steps
            self.running[name] = self.running.get(name, 0.0) + value

    def end_step(self, total_batch: int) -> dict[str, float]:
        """Close an optimizer step; returns the means over the window so far."""
        step_time = time.perf_counter() - self.tic
        self.tic = time.perf_counter()
        self.running.update(step_time=step_time, samples_per_second=total_batch / step_time)
        for name, value in self.running.items():
            self.window[name] = self.window.get(name, 0.0) + value
        self.window_steps, self.running = self.window_steps + 1, {}
        return {name: value / self.window_steps for name, value in self.window.items()}

    def reset(self) -> None:
        """Start a new window."""
        self.window, self.window_steps = {}, 0


# -------------------------------------------------------------------------------- validation, result, reports
@contextlib.contextmanager
def ema_weights(ema: EMAModel | None, module: torch.nn.Module) -> Iterator[None]:
    """Inside, the trainable parameters of ``module`` hold their EMA (if any); their own values again after."""
    if ema is None:
        yield
        return
    params = trainable_parameters(module)
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def validate(
    conditioning: Conditioning,
    module: torch.nn.Module,
    ema: EMAModel | None,
    acc: Accelerator,
    output_dir: Path,
    step: int,
) -> list[tuple[str, Any]]:
    """Render the conditioning's validation images with the EMA weights; save a grid to
    ``validation/step-<step>.png`` and log it. Returns the (title, image) pairs (none when nothing to render)."""
    module.eval()
    with ema_weights(ema, module), torch.no_grad():
        titles, images = conditioning.sample_validation(acc.device)
    module.train()
    if not images:
        return []
    grid = make_image_grid(images, rows=1, cols=len(images))
    with atomic_file(output_dir / "validation" / f"step-{step:07d}.png") as tmp:
        grid.save(tmp, format="PNG")
    for tracker in acc.trackers:
        if tracker.name == "tensorboard":
            stacked = np.stack([np.asarray(image) for image in images])
            tracker.writer.add_images("validation", stacked, step, dataformats="NHWC")
    return list(zip(titles, images))


def training_summary(
    config: TrainingConfig, acc: Accelerator, card_info: Mapping[str, Any] | None, steps: int, start_time: float
) -> dict[str, Any]:
    """The model card's training table: ``card_info`` and the run's steps, batch, lr, resolution, time."""
    return {
        **(card_info or {}),
        "steps": steps,
        "global batch size": config.train_batch_size * acc.num_processes * config.gradient_accumulation_steps,
        "learning rate": config.learning_rate,
        "resolution": config.resolution,
        "mixed precision": config.mixed_precision,
        "wall time (h)": round((time.time() - start_time) / 3600, 3),
    }


def report_data(acc: Accelerator, data: Any, samples_this_run: int, step: int) -> dict[str, Any]:
    """Log what the data gave, summed over the processes: records seen, used, skipped by reason (one line each),
    dropped and waiting (see ``StreamingBatchLoader.summary``), and send the counts to the trackers
    (``data/...``). A loader without ``summary`` reports the samples of the batches it gave this run.

    Returns:
        The summed counts (every process calls this; all get them).
    """
    own = data.summary() if hasattr(data, "summary") else {"used": samples_this_run}
    totals: dict[str, Any] = {}
    for summary in gather_object([own]):
        for key, value in summary.items():
            if isinstance(value, dict):
                counts = totals.setdefault(key, {})
                for kind, count in value.items():
                    counts[kind] = counts.get(kind, 0) + count
            else:
                totals[key] = totals.get(key, 0) + value
    if acc.is_main_process:
        scope = "since the start of training" if "seen" in totals else "in this run"
        skipped = totals.get("skipped", {})
        counts = {**totals, "skipped": sum(skipped.values())}
        numbers = ", ".join(f"{counts[key]:,} {label}" for key, label in _SUMMARY_LABELS.items() if key in counts)
        logger.info("data, %d process(es) %s: %s", acc.num_processes, scope, numbers)
        for kind, count in sorted(skipped.items()):
            logger.info("  skipped, %s: %d", kind, count)
        if acc.log_with:
            scalars = {f"data/{k}": v for k, v in totals.items() if not isinstance(v, dict)}
            scalars.update({f"data/skipped/{kind.replace(' ', '_')}": n for kind, n in skipped.items()})
            acc.log(scalars, step=step)
    return totals


def _has_console_handler(log: logging.Logger) -> bool:
    return any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr) for h in log.handlers)


@contextlib.contextmanager
def log_above_the_bar() -> Iterator[None]:
    """Inside, console log lines of this package go through ``tqdm.write``: each on its own line above the progress
    bar, not glued to it. The package's and the root logger's console handlers are redirected (tqdm's
    ``logging_redirect_tqdm``); without any, a tqdm handler on the package logger shows its warnings."""
    package = logging.getLogger(__name__.split(".")[0])
    with logging_redirect_tqdm([log for log in (package, logging.root) if _has_console_handler(log)] or [package]):
        yield

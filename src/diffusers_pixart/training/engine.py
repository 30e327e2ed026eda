"""The training loop the stage scripts share: one read top to bottom, in the order a step runs.

Set-up (accelerate, optimizer, EMA, resume), then per step: encode the batch (VAE latents and T5 captions, or the
precomputed features), drop captions to the null caption, noise, predict, the IDDPM hybrid loss, backward, clip,
step, EMA; then logging, checkpoints, validation images; at the end the pipeline folder (and the Hub push).

Data: any iterable of batch dicts, already split between ranks (``diffusers_pixart.data`` loaders are). Raw batches
hold ``pixel_values`` (B, 3, H, W) in [-1, 1] and ``text`` (B captions); precomputed ones ``latents`` (B, 4, h, w)
(drawn from the VAE posterior and scaled, as ``diffusers_pixart.data.FeatureLoader`` gives them), ``prompt_embeds``
(B, L, C) and ``prompt_attention_mask`` (B, L). Models with micro-conditions also need ``resolution`` (B, 2) and
``aspect_ratio`` (B, 1). A loader with ``state_dict``/``load_state_dict`` has its position saved in checkpoints, one
file per rank; any other iterable is re-iterated per epoch (``set_epoch(epoch)`` first if it has one), and the
batches consumed are skipped on resume.

Randomness of a step (timesteps, noise, caption dropout, VAE sampling) comes from a generator seeded by
``(seed, micro-step, rank)``, so a resumed run draws exactly what an uninterrupted one would.

What trains: the module of :meth:`Trainer._trained_module` (the transformer), all of it, unless it carries a PEFT
adapter (``transformer.add_adapter(LoraConfig(...))`` before training): then only the adapter's parameters train (the
optimizer, the EMA and the gradient clipping see only them; the base weights stay bit-identical) and the result is
the LoRA weights file instead of the pipeline.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from diffusers.models.embeddings import LabelEmbedding
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from safetensors import safe_open
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..data.features import encode_images, encode_prompts, sample_latents
from ..models.attention import caption_cache
from .config import TrainingConfig
from .diffusion import IDDPMDiffusion

logger = logging.getLogger(__name__)

RAW_KEYS = ("pixel_values", "text")
FEATURE_KEYS = ("latents", "prompt_embeds", "prompt_attention_mask")
MICRO_CONDITION_KEYS = ("resolution", "aspect_ratio")
CHECKPOINT_PREFIX = "checkpoint-"
#: The counts of the end-of-run data summary (``StreamingBatchLoader.summary``), in the order shown.
_SUMMARY_LABELS = {
    "seen": "seen",
    "used": "used",
    "skipped": "skipped",
    "dropped": "dropped (incomplete buckets at epoch ends)",
    "waiting": "waiting in buckets",
}
#: Classes of ImageNet: DiTPipeline's guidance hard-codes this null class.
IMAGENET_CLASSES = 1000


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing a previous ``final`` only once ``tmp`` is complete."""
    old = final.with_name(f".old-{final.name}")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


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


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of ``module`` that require gradients, in ``module.parameters()`` order."""
    return [param for param in module.parameters() if param.requires_grad]


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


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The complete checkpoints ``checkpoint-<step>`` of a folder, oldest first (unfinished ones are dot-prefixed)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


class TrainingProgress:
    """Where the run stands: optimizer steps done, epoch, batches consumed in the epoch. Saved in checkpoints."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.step, self.epoch, self.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]


class Trainer:
    """Trains the transformer of a PixArt-alpha pipeline with the paper's recipe (see the module docstring).

    Args:
        config: the options (:class:`~.config.TrainingConfig`).
        pipeline: a ``PixArtAlphaPipeline`` whose ``transformer`` is trained; its frozen VAE and T5 encode raw batches
            and the null caption (``""``, as the pipeline's unconditional branch encodes it), its scheduler samples
            the validation images, and it is saved at the end (only the LoRA weights when the transformer carries
            a PEFT adapter, see the module docstring).
        card_info: extra entries for the model card's training table (stage, data, ...).

    ``trainer.accelerator`` exists from construction, so the data can be split by ``process_index``.

    What is specific to the condition (captions here, class labels in :class:`ClassConditionalTrainer`) lives in the
    ``_check_conditioning``, ``_prepare_conditioning``, ``_check_condition``, ``_encode_condition``,
    ``_drop_condition``, ``_model_kwargs`` and ``_sample_validation`` hooks; the loop itself is shared. What trains
    and what the run produces are the ``_trained_module``, ``_predict``, ``result_name`` and ``_save_result`` hooks.
    """

    #: Pipeline components kept frozen (no gradients, eval mode) on the training device.
    frozen_components: tuple[str, ...] = ("vae", "text_encoder")

    #: Keys a raw batch and a precomputed batch must hold.
    raw_keys: tuple[str, ...] = RAW_KEYS
    feature_keys: tuple[str, ...] = FEATURE_KEYS

    def __init__(
        self,
        config: TrainingConfig,
        pipeline: Any,
        card_info: Mapping[str, Any] | None = None,
    ):
        self.config = config
        self.pipeline = pipeline
        self.card_info = dict(card_info or {})
        self.output_dir = Path(config.output_dir)
        self.checkpoints_dir = self.output_dir / "checkpoints"
        self.accelerator = Accelerator(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            mixed_precision=config.mixed_precision,
            log_with=None if config.report_to in ("", "none") else config.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
        )
        self._check_config()
        prediction_type = config.prediction_type or pipeline.scheduler.config.get("prediction_type", "epsilon")
        self.diffusion = IDDPMDiffusion(
            prediction_type=prediction_type,
            learn_sigma=pipeline.transformer.out_channels == 2 * pipeline.transformer.config.in_channels,
            snr_gamma=config.snr_gamma,
        )
        if pipeline.scheduler.config.get("prediction_type") != prediction_type:
            # The validation images and the saved pipeline sample with what the model is trained to predict.
            pipeline.scheduler = type(pipeline.scheduler).from_config(
                pipeline.scheduler.config, prediction_type=prediction_type
            )
        self.resume_path = self._find_checkpoint()
        self.null_caption: tuple[torch.Tensor, torch.Tensor] | None = None
        self.progress = TrainingProgress()
        self.validation_images: list[tuple[str, Any]] = []

    # ----------------------------------------------------------------------------------------------- checks
    def _check_config(self) -> None:
        """Raise a ``ValueError`` naming the first option that cannot work, before anything is loaded or trained."""
        cfg, transformer = self.config, self.pipeline.transformer
        check_resolution(cfg.resolution, transformer.config.patch_size, vae_scale_factor(self.pipeline.vae))
        for name in ("train_batch_size", "max_train_steps", "gradient_accumulation_steps", "checkpointing_steps"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(cfg, name)}.")
        if not 0.0 <= cfg.caption_dropout <= 1.0:
            raise ValueError(f"--caption_dropout must be in [0, 1], got {cfg.caption_dropout}.")
        if cfg.checkpoints_total_limit is not None and cfg.checkpoints_total_limit < 1:
            raise ValueError(f"--checkpoints_total_limit must be at least 1, got {cfg.checkpoints_total_limit}.")
        if cfg.push_to_hub and not cfg.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id.")
        self._check_conditioning()

    def _check_conditioning(self) -> None:
        """Raise a ``ValueError`` when the pipeline cannot encode the condition (here: captions) for the model."""
        transformer, text_encoder = self.pipeline.transformer, self.pipeline.text_encoder
        if self.pipeline.tokenizer is None or text_encoder is None:
            raise ValueError("The pipeline needs its tokenizer and text encoder (captions, null caption, validation).")
        if text_encoder.config.d_model != transformer.config.caption_channels:
            raise ValueError(
                f"The text encoder outputs {text_encoder.config.d_model} channels but the transformer's "
                f"caption_channels is {transformer.config.caption_channels}."
            )

    def _find_checkpoint(self) -> Path | None:
        """The checkpoint to resume from: ``latest`` (None when there is none yet) or an existing folder."""
        value = self.config.resume_from_checkpoint
        if value is None:
            return None
        if value == "latest":
            found = list_checkpoints(self.checkpoints_dir)
            return found[-1] if found else None
        path = Path(value)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such checkpoint folder.")
        return path

    def _check_checkpoint_shapes(self, path: Path) -> None:
        """Compare the checkpoint's model tensors with the trained module's; a ``ValueError`` lists the differences."""
        weights = path / "model.safetensors"
        if not weights.is_file():  # DeepSpeed and FSDP checkpoints are sharded: accelerate checks them on load
            return
        with safe_open(str(weights), framework="pt") as f:
            saved = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        module = self._trained_module()
        expected = {key: tuple(v.shape) for key, v in self._checkpointed(module, module.state_dict()).items()}
        problems = [
            f"{k}: checkpoint {saved[k]} vs model {expected[k]}"
            for k in sorted(saved.keys() & expected.keys())
            if saved[k] != expected[k]
        ]
        problems += [f"{k}: missing from the checkpoint" for k in sorted(expected.keys() - saved.keys())]
        problems += [f"{k}: not in the model" for k in sorted(saved.keys() - expected.keys())]
        if problems:
            raise ValueError(
                f"Checkpoint {path} does not fit this "
                f"{'transformer' if module is self.pipeline.transformer else type(module).__name__} "
                f"({len(problems)} tensors differ): " + "; ".join(problems[:8])
            )

    def _checkpointed(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The part of ``model``'s ``state`` that checkpoints hold: all of it, or with a LoRA adapter only the trainable
        (adapter) weights, since the frozen base is the pretrained model the run starts from."""
        if self.lora_adapter is None:
            return state
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        return {key: value for key, value in state.items() if key in trainable}

    def _keep_checkpointed_weights(self, models: list, weights: list, output_dir: str) -> None:
        """``save_state`` hook: each model's file keeps :meth:`_checkpointed` of its state."""
        for i, model in enumerate(models):
            weights[i] = self._checkpointed(model, weights[i])

    def _check_batch(self, batch: Mapping[str, Any]) -> None:
        """Raise a ``ValueError`` naming what the first batch lacks or gets wrong."""
        keys = self.feature_keys if "latents" in batch else self.raw_keys
        missing = [k for k in keys if k not in batch]
        if self._micro_conditioned:
            missing += [k for k in MICRO_CONDITION_KEYS if k not in batch]
        if missing:
            raise ValueError(
                f"The training batches lack {missing} (keys present: {sorted(batch)}). Raw batches need "
                f"{list(self.raw_keys)}, precomputed ones {list(self.feature_keys)}; micro-conditioned models also "
                f"{list(MICRO_CONDITION_KEYS)}."
            )
        if "latents" in batch:
            patch = self.pipeline.transformer.config.patch_size
            if any(size % patch for size in batch["latents"].shape[-2:]):
                raise ValueError(
                    f"Latents {tuple(batch['latents'].shape)} are not divisible by the patch size {patch}."
                )
        self._check_condition(batch)

    def _check_condition(self, batch: Mapping[str, Any]) -> None:
        """Raise a ``ValueError`` when precomputed caption embeddings do not fit the model's null caption."""
        if "prompt_embeds" in batch:
            null_shape = self.null_caption[0].shape[1:]
            if tuple(batch["prompt_embeds"].shape[1:]) != tuple(null_shape):
                raise ValueError(
                    f"prompt_embeds {tuple(batch['prompt_embeds'].shape)} do not match the null caption "
                    f"{tuple(self.null_caption[0].shape)}: (B, max_sequence_length, caption_channels) expected."
                )

    @property
    def _micro_conditioned(self) -> bool:
        """Whether the model takes the ``resolution``/``aspect_ratio`` micro-conditions."""
        return bool(getattr(self.pipeline.transformer, "use_additional_conditions", False))

    def _trained_module(self) -> torch.nn.Module:
        """The module the optimizer trains, checkpointed and averaged (EMA): the pipeline's transformer."""
        return self.pipeline.transformer

    @property
    def lora_adapter(self) -> str | None:
        """The name of the PEFT adapter being trained when the trained module carries one (only it trains), else None.

        Raises:
            ValueError: several adapters are active (train one at a time).
        """
        module = self._trained_module()
        if not getattr(module, "_hf_peft_config_loaded", False):
            return None
        active = module.active_adapters()
        if len(active) != 1:
            raise ValueError(f"The transformer has the active adapters {active}: activate exactly one to train it.")
        return active[0]

    # ------------------------------------------------------------------------------------------- the step
    def _encode(self, batch: Mapping[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        """Latents (B, 4, h, w) scaled by the VAE factor and the condition (:meth:`_encode_condition`) of a batch."""
        vae, device = self.pipeline.vae, self.accelerator.device
        with torch.no_grad():
            if "latents" in batch:  # drawn from the stored posterior and scaled by the loader
                latents = batch["latents"].to(device, torch.float32)
            else:
                mean, std = encode_images(vae, batch["pixel_values"])
                latents = sample_latents(
                    mean.float(), std.float(), vae.config.scaling_factor, vae.config.get("shift_factor"), generator
                )
            return latents, self._encode_condition(batch)

    def _encode_condition(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The model's condition arguments: caption embeds (B, L, C) and keep-mask (B, L), precomputed or encoded."""
        device = self.accelerator.device
        if "prompt_embeds" in batch:
            embeds, mask = batch["prompt_embeds"].to(device), batch["prompt_attention_mask"].to(device)
        else:
            embeds, mask = self._encode_captions(list(batch["text"]))
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def _drop_condition(self, condition: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """Replace the captions of the samples where ``drop`` (B,) is set by exactly the pipeline's null caption."""
        embeds, mask = condition["encoder_hidden_states"], condition["encoder_attention_mask"]
        null_embeds, null_mask = (t.to(embeds.device) for t in self.null_caption)
        return {
            "encoder_hidden_states": torch.where(drop[:, None, None], null_embeds.to(embeds.dtype), embeds),
            "encoder_attention_mask": torch.where(drop[:, None], null_mask.to(mask.dtype), mask),
        }

    def _model_kwargs(self, condition: dict[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, Any]:
        """The model's keyword arguments besides the noisy latents and timesteps: caption and micro-conditions."""
        added = None
        if self._micro_conditioned:
            added = {k: batch[k].to(self.accelerator.device, torch.float32) for k in MICRO_CONDITION_KEYS}
        embeds = condition["encoder_hidden_states"].to(self.pipeline.transformer.dtype)
        return {**condition, "encoder_hidden_states": embeds, "added_cond_kwargs": added}

    def _encode_captions(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 embeds (B, L, C) and keep-mask (B, L) of captions, encoded as the pipeline encodes prompts."""
        with torch.no_grad():
            return encode_prompts(
                self.pipeline.tokenizer, self.pipeline.text_encoder, texts, max_length=self.config.max_sequence_length
            )

    def _loss(self, batch: Mapping[str, Any], micro_step: int) -> dict[str, torch.Tensor]:
        """The hybrid loss of one micro-batch, with ``{"loss", "mse", "vb"}`` batch means."""
        device = self.accelerator.device
        seed = (self.config.seed * 1_000_003 + micro_step * self.accelerator.num_processes) % 2**62
        generator = torch.Generator(device).manual_seed(seed + self.accelerator.process_index)
        latents, condition = self._encode(batch, generator)
        batch_size = latents.shape[0]

        # Condition dropout (for classifier-free guidance): the null caption, or the null class.
        drop = torch.rand(batch_size, device=device, generator=generator) < self.config.caption_dropout
        condition = self._drop_condition(condition, drop)

        timesteps = self.diffusion.sample_timesteps(batch_size, device, generator)
        noise = torch.randn(latents.shape, device=device, generator=generator)
        noisy = self.diffusion.add_noise(latents, noise, timesteps)
        with caption_cache(drop_padding=True) if self.config.drop_caption_padding else nullcontext():
            output = self._predict(noisy, timesteps, self._model_kwargs(condition, batch))
        losses = self.diffusion.training_losses(output, latents, noisy, noise, timesteps)
        return {name: value.mean() for name, value in losses.items()}

    def _predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The model output (B, C_out, h, w) for the noisy latents (B, C, h, w) at ``timesteps`` (B,)."""
        return self.model(noisy, timestep=timesteps, **kwargs).sample

    # ------------------------------------------------------------------------------------------- set-up
    def _setup(self) -> None:
        cfg, acc = self.config, self.accelerator
        set_seed(cfg.seed)
        module = self._trained_module()
        weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(acc.mixed_precision, torch.float32)
        # The frozen components cast to the mixed-precision dtype: their original dtype and weights, which the saved
        # pipeline gets back (a cast back would round them).
        self._frozen_originals: dict[str, tuple[torch.dtype, dict[str, torch.Tensor]]] = {}
        for name in self.frozen_components:
            frozen = getattr(self.pipeline, name, None)
            if frozen is None:
                continue
            # T5 overflows in float16: it stays in float32 then.
            dtype = torch.float32 if name == "text_encoder" and weight_dtype == torch.float16 else weight_dtype
            if frozen.dtype != dtype:
                state = {k: v.detach().to("cpu", copy=True) for k, v in frozen.state_dict().items()}
                self._frozen_originals[name] = (frozen.dtype, state)
            frozen.requires_grad_(False).eval().to(acc.device, dtype)
        self._prepare_conditioning()
        module.train()
        if self.lora_adapter is None:  # with an adapter, peft has marked only its parameters trainable
            module.requires_grad_(True)
        if cfg.gradient_checkpointing:
            module.enable_gradient_checkpointing()
        params = trainable_parameters(module)

        optimizer = torch.optim.AdamW(
            params,
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay,
            eps=cfg.adam_epsilon,
        )
        # accelerate steps a prepared scheduler once per process: the warm-up and decay are counted in those steps.
        lr_scheduler = get_scheduler(
            cfg.lr_scheduler,
            optimizer,
            num_warmup_steps=cfg.lr_warmup_steps * acc.num_processes,
            num_training_steps=cfg.max_train_steps * acc.num_processes,
        )
        self.ema = None
        if cfg.use_ema:
            self.ema = EMAModel(params, decay=cfg.ema_decay, model_cls=type(module), model_config=module.config)
            self.ema.to(acc.device)
            acc.register_for_checkpointing(self.ema)
        acc.register_for_checkpointing(self.progress)
        self.model, self.optimizer, self.lr_scheduler = acc.prepare(module, optimizer, lr_scheduler)
        acc.register_save_state_pre_hook(self._keep_checkpointed_weights)

        if self.resume_path is not None:
            self._check_checkpoint_shapes(self.resume_path)  # the keys match exactly: non-strict only skips the base
            acc.load_state(str(self.resume_path), strict=self.lora_adapter is None)
            if hasattr(self.data, "load_state_dict"):
                state_file = self.resume_path / f"data_state_{acc.process_index}.json"
                self.data.load_state_dict(json.loads(state_file.read_text(encoding="utf-8")))
            if acc.is_main_process:
                epoch, sample = self._data_position()
                logger.info(
                    "resumed from %s: step %d, epoch %d, sample %d",
                    self.resume_path.name,
                    self.progress.step,
                    epoch,
                    sample,
                )
        elif cfg.resume_from_checkpoint == "latest":
            logger.info("No checkpoint in %s: starting from scratch.", self.checkpoints_dir)
        if acc.is_main_process and acc.log_with:
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(cfg).items()}
            acc.init_trackers("pixart", config=hparams)

    def _data_position(self) -> tuple[int, int]:
        """(epoch, sample) the data continues from: a stateful loader's epoch and records read in it, else the
        engine's epoch and batches consumed in it times the batch size."""
        if hasattr(self.data, "state_dict"):
            state = self.data.state_dict()
            return state["epoch"], state["position"]
        return self.progress.epoch, self.progress.batches_in_epoch * self.config.train_batch_size

    def _prepare_conditioning(self) -> None:
        """Encode the null caption ``""`` (B=1) that caption dropout substitutes, once the text encoder is placed."""
        self.null_caption = self._encode_captions([""])

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Batches from the current data position on, epoch after epoch (the position advances in ``train``)."""
        if hasattr(self.data, "load_state_dict"):  # a stateful loader resumes and counts epochs itself
            yield from self.data
            return
        while True:
            if hasattr(self.data, "set_epoch"):
                self.data.set_epoch(self.progress.epoch)
            skip, empty = self.progress.batches_in_epoch, True
            for batch in itertools.islice(iter(self.data), skip, None):
                empty = False
                yield batch
            if empty and skip == 0:
                raise ValueError(
                    f"The training data yielded no batch in epoch {self.progress.epoch}: it is empty (or is a one-shot "
                    "iterator that ran out)."
                )
            self.progress.epoch += 1
            self.progress.batches_in_epoch = 0

    # ------------------------------------------------------------------------------------------- the loop
    def train(self, data: Iterable[Mapping[str, Any]]) -> Path:
        """Train for ``max_train_steps`` optimizer steps on ``data``; returns the saved result (:meth:`save_result`).

        Raises:
            ValueError: the data is empty or its batches do not fit the model (before any step).
        """
        self.data = data
        self._start_time = time.time()
        self._setup()
        self._samples_this_run = 0
        batches = self._batches()
        try:
            first = next(batches, None)
            if first is None:
                raise ValueError("The training data is empty: it yielded no batch.")
            self._check_batch(first)
            with log_above_the_bar():
                self._loop(itertools.chain([first], batches))
        finally:
            batches.close()  # ends the loader's iteration (and its worker processes)
        self.report_data()
        return self.save_result()

    def _loop(self, batches: Iterator[Mapping[str, Any]]) -> None:
        """The optimizer steps up to ``max_train_steps`` (or until the data runs out), with logging, checkpoints and
        validation. The logged values are means over the ``logging_steps`` steps since the last log (``lr``: its
        last value)."""
        cfg, acc = self.config, self.accelerator
        total_batch = cfg.train_batch_size * acc.num_processes * cfg.gradient_accumulation_steps
        bar = tqdm(total=cfg.max_train_steps, initial=self.progress.step, disable=not acc.is_local_main_process)
        micro_step = self.progress.step * cfg.gradient_accumulation_steps
        running: dict[str, float] = {}
        window: dict[str, float] = {}
        window_steps = 0
        tic = time.perf_counter()
        while self.progress.step < cfg.max_train_steps:
            batch = next(batches, None)
            if batch is None:  # a loader with a fixed number of epochs ran out
                logger.warning("The data ran out at step %d of %d.", self.progress.step, cfg.max_train_steps)
                break
            self._samples_this_run += len(next(iter(batch.values())))
            with acc.accumulate(self.model):
                losses = self._loss(batch, micro_step)
                acc.backward(losses["loss"])
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(trainable_parameters(self.model), cfg.max_grad_norm)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            self.progress.batches_in_epoch += 1
            for name, value in losses.items():
                value = acc.gather(value.detach()[None]).mean().item() / cfg.gradient_accumulation_steps
                running[name] = running.get(name, 0.0) + value
            if not acc.sync_gradients:
                continue

            self.progress.step += 1
            if self.ema is not None:
                self.ema.step(trainable_parameters(self.model))
            step_time = time.perf_counter() - tic
            tic = time.perf_counter()
            running.update(step_time=step_time, samples_per_second=total_batch / step_time)
            for name, value in running.items():
                window[name] = window.get(name, 0.0) + value
            window_steps, running = window_steps + 1, {}
            means = {name: value / window_steps for name, value in window.items()}
            lr = self.lr_scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}", s_per_step=f"{means['step_time']:.2f}")
            if self.progress.step % cfg.logging_steps == 0:
                if acc.log_with:
                    acc.log({**means, "lr": lr}, step=self.progress.step)
                window, window_steps = {}, 0
            if self.progress.step % cfg.checkpointing_steps == 0 or self.progress.step == cfg.max_train_steps:
                self.save_checkpoint()
            if cfg.validation_steps and self.progress.step % cfg.validation_steps == 0:
                self.validate()
        bar.close()

    def report_data(self) -> dict[str, Any]:
        """Log what the data gave, summed over the processes: records seen, used, skipped by reason (one line each),
        dropped and waiting (see ``StreamingBatchLoader.summary``), and send the counts to the trackers
        (``data/...``). A loader without ``summary`` reports the samples of the batches it gave this run.

        Returns:
            The summed counts (every process calls this; all get them).
        """
        acc = self.accelerator
        own = self.data.summary() if hasattr(self.data, "summary") else {"used": self._samples_this_run}
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
                acc.log(scalars, step=self.progress.step)
        return totals

    # ---------------------------------------------------------------------------------- saving, validation
    def save_checkpoint(self) -> Path:
        """Save the full training state to ``checkpoints/checkpoint-<step>``, atomically; prune old checkpoints.

        With a LoRA adapter the model file holds the adapter's weights only (the base is the pretrained model).

        Every process writes into a dot-prefixed folder, which the main process renames when all are done: a run
        killed while saving leaves the previous checkpoints as they were.
        """
        acc = self.accelerator
        final = self.checkpoints_dir / f"{CHECKPOINT_PREFIX}{self.progress.step}"
        tmp = self.checkpoints_dir / f".tmp-{final.name}"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if hasattr(self.data, "state_dict"):
            (tmp / f"data_state_{acc.process_index}.json").write_text(json.dumps(self.data.state_dict()))
        acc.wait_for_everyone()
        if acc.is_main_process:
            replace_dir(tmp, final)
            limit = self.config.checkpoints_total_limit
            if limit is not None:
                for old in list_checkpoints(self.checkpoints_dir)[:-limit]:
                    shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    @contextlib.contextmanager
    def _ema_weights(self) -> Iterator[None]:
        """Inside, the trained parameters hold their EMA (if any); their own values again after."""
        params = trainable_parameters(self._trained_module())
        if self.ema is None:
            yield
            return
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def validate(self) -> list:
        """Render the validation prompts (or classes) with the EMA weights; save and log a grid. Main process only."""
        acc = self.accelerator
        conditions = self._validation_conditions()
        if not acc.is_main_process or not conditions:
            return []
        module = self._trained_module()
        module.eval()
        with self._ema_weights(), torch.no_grad():
            titles, images = self._sample_validation(conditions)
        module.train()
        self.validation_images = list(zip(titles, images))
        grid = make_image_grid(images, rows=1, cols=len(images))
        path = self.output_dir / "validation" / f"step-{self.progress.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        grid.save(tmp, format="PNG")
        os.replace(tmp, path)
        for tracker in acc.trackers:
            if tracker.name == "tensorboard":
                stacked = np.stack([np.asarray(image) for image in images])
                tracker.writer.add_images("validation", stacked, self.progress.step, dataformats="NHWC")
        return images

    def _validation_conditions(self) -> list:
        """What is rendered at validation: the prompts."""
        return list(self.config.validation_prompts)

    def _sample_validation(self, prompts: list[str]) -> tuple[list[str], list]:
        """(titles, PIL images) of the validation prompts, sampled with the pipeline at ``--resolution``."""
        return prompts, self._generate(prompts, height=self.config.resolution, width=self.config.resolution)

    def _generate(self, prompts: list[str], **pipeline_kwargs: Any) -> list:
        """PIL images of ``prompts`` from the pipeline with the validation settings (steps, guidance, seed)."""
        cfg = self.config
        return self.pipeline(
            prompt=prompts,
            num_inference_steps=cfg.validation_inference_steps,
            guidance_scale=cfg.validation_guidance_scale,
            generator=torch.Generator(self.accelerator.device).manual_seed(cfg.seed),
            use_resolution_binning=False,
            max_sequence_length=cfg.max_sequence_length,
            **pipeline_kwargs,
        ).images

    @property
    def result_name(self) -> str:
        """The folder of the run's result in ``output_dir``: ``lora`` when an adapter was trained, else ``pipeline``."""
        return "pipeline" if self.lora_adapter is None else "lora"

    def _save_result(self, folder: Path) -> None:
        """Write the result to ``folder``: the pipeline, or the adapter's LoRA weights file (``hub.LORA_WEIGHT_NAME``,
        which ``PixArtAlphaPipeline.load_lora_weights(folder)`` loads)."""
        if self.lora_adapter is None:
            self.pipeline.save_pretrained(folder)
        else:
            from ..hub import save_lora_weights

            save_lora_weights(self.pipeline.transformer, folder, self.lora_adapter)

    def save_result(self) -> Path:
        """Save the result with the EMA weights (if any) to ``<output_dir>/<result_name>`` and push it if asked."""
        acc, cfg = self.accelerator, self.config
        acc.wait_for_everyone()
        final = self.output_dir / self.result_name
        if acc.is_main_process:
            for name, (dtype, state) in self._frozen_originals.items():
                getattr(self.pipeline, name).to(dtype).load_state_dict(state)
            tmp = self.output_dir / f".tmp-{self.result_name}"
            if tmp.exists():
                shutil.rmtree(tmp)
            with self._ema_weights():
                self._trained_module().eval()
                self._save_result(tmp)
                replace_dir(tmp, final)
                if cfg.push_to_hub:
                    self.push_to_hub()
        acc.wait_for_everyone()
        acc.end_training()
        return final

    def training_summary(self) -> dict[str, Any]:
        """The model card's training table: ``card_info`` and the run's steps, batch, lr, resolution, time."""
        cfg, acc = self.config, self.accelerator
        return {
            **self.card_info,
            "steps": self.progress.step,
            "global batch size": cfg.train_batch_size * acc.num_processes * cfg.gradient_accumulation_steps,
            "learning rate": cfg.learning_rate,
            "resolution": cfg.resolution,
            "mixed precision": cfg.mixed_precision,
            "wall time (h)": round((time.time() - self._start_time) / 3600, 3),
        }

    def base_model_id(self) -> str | None:
        """The Hub id the run started from (``--pretrained_model_name_or_path`` unless a local folder), for cards."""
        source = getattr(self.config, "pretrained_model_name_or_path", "") or ""
        return source if source and not Path(source).exists() else None

    def push_to_hub(self) -> None:
        """Upload the pipeline (or the trained LoRA adapter) with a model card filled from the run."""
        from ..hub import push_to_hub

        push_to_hub(
            self.pipeline,
            self.config.hub_model_id,
            lora_adapter=self.lora_adapter,
            samples=self.validation_images,
            card_info={"training": self.training_summary(), "base_model": self.base_model_id()},
        )


class ClassConditionalTrainer(Trainer):
    """The same loop for a class-conditional DiT (stage 1, pixel dependency): labels instead of captions.

    Args:
        config: the options (:class:`~.config.TrainingConfig`); ``caption_dropout`` is the class dropout here.
        pipeline: a diffusers ``DiTPipeline`` (``transformer``: a ``DiTTransformer2DModel`` with
            ``num_embeds_ada_norm`` classes, ``vae``, ``scheduler``; ``id2label`` names the validation images).
        validation_labels: the classes rendered at validation (one image each).
        card_info: extra entries for the model card's training table.

    Batches hold ``label`` (B,) integers in ``[0, num_classes)`` with ``pixel_values`` or ``latents``. Class dropout
    replaces a label by ``num_classes``, the DiT's null class (the extra row of its label tables, which classifier-free
    guidance uses). The DiT's own label dropout draws from the global random state in every block, independently: it
    is switched off while training, so that the dropout is drawn once per sample from the step's seeded generator.
    """

    raw_keys = ("pixel_values", "label")
    feature_keys = ("latents", "label")

    def __init__(
        self,
        config: TrainingConfig,
        pipeline: Any,
        validation_labels: Sequence[int] = (),
        card_info: Mapping[str, Any] | None = None,
    ):
        self.validation_labels = [int(label) for label in validation_labels]
        super().__init__(config, pipeline, card_info)

    @property
    def num_classes(self) -> int:
        """The DiT's number of classes (its null class has this index)."""
        return int(self.pipeline.transformer.config.num_embeds_ada_norm)

    def _check_conditioning(self) -> None:
        bad = [label for label in self.validation_labels if not 0 <= label < self.num_classes]
        if bad:
            raise ValueError(f"Validation classes {bad} are outside [0, {self.num_classes}) of the DiT.")
        if self.config.validation_steps and self.validation_labels and self.config.validation_guidance_scale > 1:
            if self.num_classes != IMAGENET_CLASSES:
                raise ValueError(
                    f"--validation_guidance_scale {self.config.validation_guidance_scale}: DiTPipeline's guidance "
                    f"uses ImageNet's null class {IMAGENET_CLASSES}, which a DiT of {self.num_classes} classes lacks; "
                    "validate with --validation_guidance_scale 1."
                )

    def _prepare_conditioning(self) -> None:
        for module in self.pipeline.transformer.modules():
            if isinstance(module, LabelEmbedding):
                module.dropout_prob = 0.0

    def _check_condition(self, batch: Mapping[str, Any]) -> None:
        self._labels(batch)

    def _labels(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The batch's labels (B,) long, checked against the number of classes."""
        labels = torch.as_tensor(batch["label"])
        if labels.ndim != 1 or labels.dtype.is_floating_point:
            raise ValueError(f"`label` must be a (B,) integer tensor, got {labels.dtype} {tuple(labels.shape)}.")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"Class labels {sorted(set(labels.tolist()))} do not fit the DiT's {self.num_classes} classes "
                "(--num_classes must exceed every label)."
            )
        return labels.long()

    def _encode_condition(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``class_labels`` (B,) on the device."""
        return {"class_labels": self._labels(batch).to(self.accelerator.device)}

    def _drop_condition(self, condition: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """Replace the labels where ``drop`` (B,) is set by the null class ``num_classes``."""
        labels = condition["class_labels"]
        return {"class_labels": torch.where(drop, torch.full_like(labels, self.num_classes), labels)}

    def _model_kwargs(self, condition: dict[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, Any]:
        return condition

    def _validation_conditions(self) -> list:
        """What is rendered at validation: the classes."""
        return list(self.validation_labels)

    def _sample_validation(self, labels: list[int]) -> tuple[list[str], list]:
        """(class names, PIL images) of the validation classes, sampled with the ``DiTPipeline``."""
        cfg = self.config
        images = self.pipeline(
            class_labels=labels,
            num_inference_steps=cfg.validation_inference_steps,
            guidance_scale=cfg.validation_guidance_scale,
            generator=torch.Generator(self.accelerator.device).manual_seed(cfg.seed),
        ).images
        names = getattr(self.pipeline, "labels", None) or {}
        by_id = {int(i): name for name, i in names.items()}
        return [by_id.get(label, f"class {label}") for label in labels], images

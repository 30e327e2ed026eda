"""What a training batch is conditioned on: captions, or class labels (captions with a control image: ``.controlnet``).

A conditioning part has one job: from a batch to the condition arguments of the model, including the dropout to the
null condition that classifier-free guidance needs, and what is rendered at validation. The engine
(:func:`~.engine.train`) calls, in this order:

- ``prepare()`` once the frozen components are on the training device (e.g. encode the null caption);
- ``check_batch(batch)`` on the first batch (a ``ValueError`` naming what it gets wrong);
- per micro-batch ``encode(batch, device)`` (without gradients), then ``drop(condition, mask)``, whose result are the
  model's keyword arguments;
- ``sample_validation(device)`` at validation, with the EMA weights in place.

``raw_keys`` and ``feature_keys`` are the keys a raw batch (``pixel_values``) and a precomputed one (``latents``)
must hold. A part checks its pipeline and options when it is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from diffusers.models.embeddings import LabelEmbedding

from ..data.features import encode_prompts
from .config import TrainingConfig

#: The keys of a raw and of a precomputed batch of captioned images.
RAW_KEYS = ("pixel_values", "text")
FEATURE_KEYS = ("latents", "prompt_embeds", "prompt_attention_mask")
#: The micro-conditions of a PixArt transformer with ``use_additional_conditions``: original size, bucket ratio.
MICRO_CONDITION_KEYS = ("resolution", "aspect_ratio")
#: Classes of ImageNet: DiTPipeline's guidance hard-codes this null class.
IMAGENET_CLASSES = 1000


class Conditioning(Protocol):
    """What the model is conditioned on (see the module docstring for when each method runs)."""

    raw_keys: tuple[str, ...]
    feature_keys: tuple[str, ...]

    def prepare(self) -> None: ...

    def check_batch(self, batch: Mapping[str, Any]) -> None: ...

    def encode(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]: ...

    def drop(self, condition: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]: ...

    def sample_validation(self, device: torch.device) -> tuple[list[str], list]: ...


def micro_conditioned(transformer: torch.nn.Module) -> bool:
    """Whether the model takes the ``resolution``/``aspect_ratio`` micro-conditions."""
    return bool(getattr(transformer, "use_additional_conditions", False))


def generate(config: TrainingConfig, pipeline: Any, device: torch.device, prompts: list[str], **kwargs: Any) -> list:
    """PIL images of ``prompts`` from a PixArt pipeline with the validation settings (steps, guidance, seed)."""
    return pipeline(
        prompt=prompts,
        num_inference_steps=config.validation_inference_steps,
        guidance_scale=config.validation_guidance_scale,
        generator=torch.Generator(device).manual_seed(config.seed),
        use_resolution_binning=False,
        max_sequence_length=config.max_sequence_length,
        **kwargs,
    ).images


class CaptionConditioning:
    """Captions: T5 embeddings (B, L, C) and keep-masks (B, L), encoded from ``text`` or precomputed, dropped to the
    null caption ``""`` (exactly what the pipeline's unconditional branch encodes); with the micro-conditions when the
    transformer takes them. Validation renders ``--validation_prompts`` at ``--resolution``.

    Args:
        config: the options (``max_sequence_length`` and the validation settings).
        pipeline: a ``PixArtAlphaPipeline``; its tokenizer and text encoder encode the captions.

    Raises:
        ValueError: the pipeline lacks its tokenizer or text encoder, their width is not the transformer's, or
            ``config.max_sequence_length`` is None (not resolved).
    """

    raw_keys = RAW_KEYS
    feature_keys = FEATURE_KEYS

    def __init__(self, config: TrainingConfig, pipeline: Any):
        transformer, text_encoder = pipeline.transformer, pipeline.text_encoder
        if pipeline.tokenizer is None or text_encoder is None:
            raise ValueError("The pipeline needs its tokenizer and text encoder (captions, null caption, validation).")
        if config.max_sequence_length is None:
            raise ValueError(
                "max_sequence_length is None: resolve it first (training.stages.with_sequence_length gives the base "
                "family's length, PixArt-alpha 120, PixArt-Sigma 300) or give one."
            )
        if text_encoder.config.d_model != transformer.config.caption_channels:
            raise ValueError(
                f"The text encoder outputs {text_encoder.config.d_model} channels but the transformer's "
                f"caption_channels is {transformer.config.caption_channels}."
            )
        self.config = config
        self.pipeline = pipeline
        #: The null caption's embeds (1, L, C) and mask (1, L), encoded by :meth:`prepare`.
        self.null_caption: tuple[torch.Tensor, torch.Tensor] | None = None

    def encode_captions(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 embeds (B, L, C) and keep-mask (B, L) of captions, encoded as the pipeline encodes prompts."""
        with torch.no_grad():
            return encode_prompts(
                self.pipeline.tokenizer, self.pipeline.text_encoder, texts, max_length=self.config.max_sequence_length
            )

    def prepare(self) -> None:
        """Encode the null caption ``""`` (B=1) that caption dropout substitutes, once the text encoder is placed."""
        self.null_caption = self.encode_captions([""])

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        """Raise a ``ValueError`` when precomputed caption embeddings do not fit the model's null caption."""
        if "prompt_embeds" in batch:
            null_shape = self.null_caption[0].shape[1:]
            if tuple(batch["prompt_embeds"].shape[1:]) != tuple(null_shape):
                raise ValueError(
                    f"prompt_embeds {tuple(batch['prompt_embeds'].shape)} do not match the null caption "
                    f"{tuple(self.null_caption[0].shape)}: (B, max_sequence_length, caption_channels) expected."
                )

    def encode(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        """Caption embeds and keep-mask, precomputed or encoded, and the micro-conditions (or None)."""
        if "prompt_embeds" in batch:
            embeds, mask = batch["prompt_embeds"].to(device), batch["prompt_attention_mask"].to(device)
        else:
            embeds, mask = self.encode_captions(list(batch["text"]))
        added = self.micro_conditions(batch, device)
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask, "added_cond_kwargs": added}

    def micro_conditions(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor] | None:
        """The batch's ``resolution`` (B, 2) and ``aspect_ratio`` (B, 1) in float32 on ``device`` when the
        transformer takes micro-conditions, else None (the model's ``added_cond_kwargs``)."""
        if not micro_conditioned(self.pipeline.transformer):
            return None
        return {key: batch[key].to(device, torch.float32) for key in MICRO_CONDITION_KEYS}

    def drop(self, condition: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
        """Replace the captions of the samples where ``mask`` (B,) is set by exactly the null caption; the embeds in
        the transformer's dtype. Other entries of ``condition`` pass through."""
        embeds, keep = condition["encoder_hidden_states"], condition["encoder_attention_mask"]
        null_embeds, null_keep = (t.to(embeds.device) for t in self.null_caption)
        embeds = torch.where(mask[:, None, None], null_embeds.to(embeds.dtype), embeds)
        return {
            **condition,
            "encoder_hidden_states": embeds.to(self.pipeline.transformer.dtype),
            "encoder_attention_mask": torch.where(mask[:, None], null_keep.to(keep.dtype), keep),
        }

    def sample_validation(self, device: torch.device) -> tuple[list[str], list]:
        """(prompts, PIL images) of the validation prompts at ``--resolution``."""
        prompts = list(self.config.validation_prompts)
        if not prompts:
            return [], []
        size = self.config.resolution
        return prompts, generate(self.config, self.pipeline, device, prompts, height=size, width=size)


class ClassConditioning:
    """Class labels of a class-conditional DiT (stage 1, pixel dependency).

    Batches hold ``label`` (B,) integers in ``[0, num_classes)`` with ``pixel_values`` or ``latents``. Class dropout
    (``--caption_dropout``) replaces a label by ``num_classes``, the DiT's null class (the extra row of its label
    tables, which classifier-free guidance uses). The DiT's own label dropout draws from the global random state in
    every block, independently: :meth:`prepare` switches it off, so that the dropout is drawn once per sample from the
    step's seeded generator.

    Args:
        config: the options (the validation settings).
        pipeline: a diffusers ``DiTPipeline`` (``transformer``: a ``DiTTransformer2DModel`` with
            ``num_embeds_ada_norm`` classes; ``id2label`` names the validation images).
        validation_labels: the classes rendered at validation (one image each).

    Raises:
        ValueError: a validation class outside the DiT's, or guidance above 1 for a DiT without ImageNet's classes.
    """

    raw_keys = ("pixel_values", "label")
    feature_keys = ("latents", "label")

    def __init__(self, config: TrainingConfig, pipeline: Any, validation_labels: Sequence[int] = ()):
        self.config = config
        self.pipeline = pipeline
        self.validation_labels = [int(label) for label in validation_labels]
        bad = [label for label in self.validation_labels if not 0 <= label < self.num_classes]
        if bad:
            raise ValueError(f"Validation classes {bad} are outside [0, {self.num_classes}) of the DiT.")
        if config.validation_steps and self.validation_labels and config.validation_guidance_scale > 1:
            if self.num_classes != IMAGENET_CLASSES:
                raise ValueError(
                    f"--validation_guidance_scale {config.validation_guidance_scale}: DiTPipeline's guidance "
                    f"uses ImageNet's null class {IMAGENET_CLASSES}, which a DiT of {self.num_classes} classes lacks; "
                    "validate with --validation_guidance_scale 1."
                )

    @property
    def num_classes(self) -> int:
        """The DiT's number of classes (its null class has this index)."""
        return int(self.pipeline.transformer.config.num_embeds_ada_norm)

    def prepare(self) -> None:
        """Switch off the DiT's own label dropout (see the class docstring)."""
        for module in self.pipeline.transformer.modules():
            if isinstance(module, LabelEmbedding):
                module.dropout_prob = 0.0

    def labels(self, batch: Mapping[str, Any]) -> torch.Tensor:
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

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        self.labels(batch)

    def encode(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        """``class_labels`` (B,) on the device."""
        return {"class_labels": self.labels(batch).to(device)}

    def drop(self, condition: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
        """Replace the labels where ``mask`` (B,) is set by the null class ``num_classes``."""
        labels = condition["class_labels"]
        return {"class_labels": torch.where(mask, torch.full_like(labels, self.num_classes), labels)}

    def sample_validation(self, device: torch.device) -> tuple[list[str], list]:
        """(class names, PIL images) of the validation classes, sampled with the ``DiTPipeline``."""
        labels, cfg = self.validation_labels, self.config
        if not labels:
            return [], []
        images = self.pipeline(
            class_labels=labels,
            num_inference_steps=cfg.validation_inference_steps,
            guidance_scale=cfg.validation_guidance_scale,
            generator=torch.Generator(device).manual_seed(cfg.seed),
        ).images
        names = getattr(self.pipeline, "labels", None) or {}
        by_id = {int(i): name for name, i in names.items()}
        return [by_id.get(label, f"class {label}") for label in labels], images

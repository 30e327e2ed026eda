"""ControlNet training (paper appendix A.9): a :class:`PixArtControlNetModel` on a frozen base, on edge maps.

The paper's recipe: "ControlNet-Half", trainable copies of the base's first 13 blocks (zero-initialised projections),
the base transformer, VAE and T5 frozen, HED edge maps of the training images as the control, captions dropped with
probability 0.5, learning rate 5e-6 for 20,000 steps. These are the defaults here, with Canny edges unless the HED
weights are given (``--edge_detector hed --hed_weights ControlNetHED.pth``; see :mod:`diffusers_pixart.data.edges`).

The loop is the shared engine's (:func:`~.engine.train`) with two parts of this module: :class:`ControlConditioning`
(captions, and the control image of every sample encoded as the pipeline encodes it at inference) and
:class:`ControlNetCopy` (the ControlNet is the trained module: optimizer, EMA, checkpoints and resume are its own; the
prediction is the frozen base's with the ControlNet's block residuals). Batches hold
``control_values`` (B, 3, H, W) in [0, 1] next to ``pixel_values``: :class:`ControlImageTextLoader` computes them on
the fly from each (resized, cropped) training image, or reads them from ``--conditioning_image_column``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL.Image
import torch

from ..data.buckets import resize_and_center_crop
from ..data.edges import EDGE_DETECTORS, EdgeDetector, make_edge_detector
from ..data.streaming import ImageTextLoader, decode_image, load_streaming_dataset
from ..models.controlnet import PixArtControlNetModel
from ..pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline, control_image_to_tensor
from .conditioning import CaptionConditioning, generate
from .config import TrainingConfig, option, run_command
from .engine import make_accelerator, vae_scale_factor
from .stages import (
    Stage2Config,
    check_base_unchanged,
    image_loader_options,
    load_pipeline,
    train_with_iddpm,
    with_sequence_length,
)

#: The batch key of the control images (B, 3, H, W) in [0, 1].
CONTROL_KEY = "control_values"


@dataclass
class ControlNetConfig(Stage2Config):
    """Options of ControlNet training: stage 2's (base model, data) with the paper's ControlNet defaults."""

    learning_rate: float = option(5e-6, "AdamW learning rate (the paper's ControlNet: 5e-6).")
    max_train_steps: int = option(20000, "Optimizer steps (the paper's ControlNet: 20,000).")
    caption_dropout: float = option(0.5, "Probability of training on the null caption (the paper's ControlNet: 0.5).")
    controlnet: str | None = option(
        None, "ControlNet folder or Hub id to continue from; default: a new one copied from the base's first blocks."
    )
    controlnet_layers: int = option(
        13, "Base blocks copied into a new ControlNet (the paper: 13 of XL/2's 28); ignored with --controlnet."
    )
    edge_detector: str = option(
        "canny", "Control maps computed from the training images: 'canny' or 'hed'.", choices=list(EDGE_DETECTORS)
    )
    hed_weights: str | None = option(None, "HED weights file (ControlNetHED.pth of lllyasviel/Annotators) for 'hed'.")
    canny_low_threshold: int = option(100, "Lower hysteresis threshold of Canny.")
    canny_high_threshold: int = option(200, "Upper hysteresis threshold of Canny.")
    conditioning_image_column: str | None = option(
        None, "Column of --train_data holding ready control images (same size as the image) instead of edge maps."
    )
    validation_control_images: list[str] = option(
        [],
        "Control image files for the validation prompts (one for all, or one per prompt); default: the control maps "
        "of the first training batch, in turn.",
    )


def image_from_pixels(pixel_values: torch.Tensor) -> PIL.Image.Image:
    """The RGB image of pixel values (3, H, W) in [-1, 1] (the exact inverse of ``data.streaming.image_to_tensor``)."""
    array = pixel_values.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    return PIL.Image.fromarray(np.ascontiguousarray(array.numpy()))


def load_control_image(path: str | Path, resolution: int) -> torch.Tensor:
    """A control image file, resized and centre-cropped to ``resolution`` squared, as (3, H, W) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Control image {path}: no such file.")
    with PIL.Image.open(path) as image:
        image = resize_and_center_crop(image.convert("RGB"), resolution, resolution)
    return control_image_to_tensor(image)[0]


class ControlImageTextLoader(ImageTextLoader):
    """:class:`ImageTextLoader` whose batches also hold ``control_values`` (B, 3, H, W) in [0, 1].

    The control image of a sample is ``edge_detector`` applied to the training image as it is batched (resized and
    cropped), or the ``conditioning_image_column`` image, which must have the size of the image and is resized and
    cropped the same way.

    Args:
        dataset: the source (see :func:`~diffusers_pixart.data.streaming.load_streaming_dataset`).
        edge_detector: image -> edge map (see :func:`~diffusers_pixart.data.edges.make_edge_detector`).
        conditioning_image_column: the column of ready control images (instead of ``edge_detector``).
        **kwargs: the arguments of :class:`ImageTextLoader`.

    Raises:
        ValueError: neither or both of ``edge_detector`` and ``conditioning_image_column``, a column the dataset
            lacks, or (while iterating) a control image whose size differs from its image's.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        *,
        edge_detector: EdgeDetector | None = None,
        conditioning_image_column: str | None = None,
        **kwargs: Any,
    ):
        if (edge_detector is None) == (conditioning_image_column is None):
            raise ValueError("Give exactly one of `edge_detector` and `conditioning_image_column`.")
        columns = getattr(dataset, "column_names", None)
        if conditioning_image_column is not None and columns is not None and conditioning_image_column not in columns:
            raise ValueError(f"Column {conditioning_image_column!r} is not in the dataset; its columns are {columns}.")
        super().__init__(dataset, **kwargs)
        self.edge_detector, self.conditioning_image_column = edge_detector, conditioning_image_column

    def prepare(self, record: dict[str, Any], index: int) -> tuple[Hashable, dict[str, Any]]:
        bucket, item = super().prepare(record, index)
        if self.edge_detector is not None:
            control = self.edge_detector(image_from_pixels(item["pixel_values"]))
        else:
            control = decode_image(record[self.conditioning_image_column])
            height, width = item["size"]
            if (control.height, control.width) != (height, width):
                raise ValueError(
                    f"Record {index}: the control image ({self.conditioning_image_column!r}) is "
                    f"{control.height}x{control.width} (height x width) but its image is {height}x{width}."
                )
            control = resize_and_center_crop(control, bucket.height, bucket.width)
        item[CONTROL_KEY] = control_image_to_tensor(control)[0]
        return bucket, item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {**super().collate(items), CONTROL_KEY: torch.stack([item[CONTROL_KEY] for item in items])}


class ControlConditioning:
    """Captions and a control image: :class:`~.conditioning.CaptionConditioning`'s captions (dropped to the null
    caption as there), and ``controlnet_cond``, the control image's latents (B, 4, h, w) as the pipeline encodes them
    at inference (``PixArtAlphaControlNetPipeline.control_latents``: VAE mean x scaling factor), which are never
    dropped. Validation renders each validation prompt with its control image.

    Args:
        config: the options (the validation prompts and settings, ``--resolution``).
        pipeline: the ``PixArtAlphaControlNetPipeline``.
        validation_control_images: control images (3, H, W) in [0, 1] at ``--resolution``, one for all validation
            prompts or one per prompt; empty: the control maps of the first training batch, in turn.

    Raises:
        ValueError: the captions' (see ``CaptionConditioning``), or validation control images of another count
            than one or one per prompt, or of another size than ``--resolution``.
    """

    def __init__(
        self,
        config: TrainingConfig,
        pipeline: PixArtAlphaControlNetPipeline,
        validation_control_images: Sequence[torch.Tensor] = (),
    ):
        self.captions = CaptionConditioning(config, pipeline)
        self.raw_keys = (*self.captions.raw_keys, CONTROL_KEY)
        self.feature_keys = (*self.captions.feature_keys, CONTROL_KEY)
        self.config = config
        self.pipeline = pipeline
        self.validation_controls = list(validation_control_images)
        prompts, controls, size = config.validation_prompts, self.validation_controls, config.resolution
        if controls and len(controls) not in (1, len(prompts)):
            raise ValueError(f"{len(controls)} validation control images for {len(prompts)} prompts: one, or one each.")
        bad = [tuple(c.shape) for c in controls if tuple(c.shape) != (3, size, size)]
        if bad:
            raise ValueError(f"Validation control images of shapes {bad}: (3, {size}, {size}) expected (--resolution).")

    def prepare(self) -> None:
        self.captions.prepare()

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        """Captions as :class:`CaptionConditioning` checks them, and control images (B, 3, H, W) at the size of the
        images; the first batch's control maps become the validation controls when none were given."""
        self.captions.check_batch(batch)
        control = batch[CONTROL_KEY]
        if "pixel_values" in batch:
            batch_size, height, width = batch["pixel_values"].shape[0], *batch["pixel_values"].shape[-2:]
        else:  # precomputed latents: the images were the VAE factor larger
            factor = vae_scale_factor(self.pipeline.vae)
            batch_size, height, width = batch["latents"].shape[0], *(factor * s for s in batch["latents"].shape[-2:])
        if tuple(control.shape) != (batch_size, 3, height, width):
            raise ValueError(
                f"{CONTROL_KEY} {tuple(control.shape)} does not fit the batch: control images (B, 3, H, W) at the "
                f"size of the images, ({batch_size}, 3, {height}, {width}), expected."
            )
        if not self.validation_controls:
            self.validation_controls = list(control[: len(self.config.validation_prompts)].float().cpu())

    def encode(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        """The captions' condition and ``controlnet_cond``: the control images' latents (B, 4, h, w)."""
        pixels = batch[CONTROL_KEY].to(device)
        control = self.pipeline.control_latents(pixels, *pixels.shape[-2:]).float()
        return {**self.captions.encode(batch, device), "controlnet_cond": control}

    def drop(self, condition: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
        """Drop captions as :class:`CaptionConditioning` does; the control image is always kept."""
        return self.captions.drop(condition, mask)

    def sample_validation(self, device: torch.device) -> tuple[list[str], list]:
        """(prompts, PIL images) of each validation prompt with its control image, or the first batch's."""
        prompts, controls = list(self.config.validation_prompts), self.validation_controls
        if not prompts or not controls:
            return [], []
        images = [controls[i % len(controls)] for i in range(len(prompts))]
        return prompts, generate(self.config, self.pipeline, device, prompts, image=images)


class ControlNetCopy:
    """The ``controlnet`` of a ``PixArtAlphaControlNetPipeline`` trains, all of it; the base transformer, VAE and
    T5 stay frozen. The prediction is the frozen base's with the ControlNet's block residuals; the result is the
    ControlNet (``controlnet``, ``PixArtControlNetModel.from_pretrained(folder)`` loads it).

    Raises:
        TypeError: ``pipeline`` is not a ``PixArtAlphaControlNetPipeline``.
    """

    frozen_components = ("vae", "text_encoder", "transformer")
    strict_checkpoints = True
    result_name = "controlnet"

    def __init__(self, pipeline: PixArtAlphaControlNetPipeline):
        if not isinstance(pipeline, PixArtAlphaControlNetPipeline):
            raise TypeError(
                f"ControlNet training needs a PixArtAlphaControlNetPipeline, got {type(pipeline).__name__}."
            )
        self.pipeline = pipeline
        self.module = pipeline.controlnet

    def prepare(self) -> None:
        self.module.requires_grad_(True)

    def checkpointed(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state

    def forward(
        self, model: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, Any]
    ) -> torch.Tensor:
        """The frozen base's output (B, C_out, h, w) with the residuals of ``model`` (the ControlNet)."""
        condition = dict(condition)
        control = condition.pop("controlnet_cond").to(noisy.dtype)
        transformer = self.pipeline.transformer
        residuals = model(transformer, noisy, control, timestep=timesteps, **condition)
        return transformer(noisy, timestep=timesteps, block_residuals=residuals, **condition).sample

    def save(self, folder: Path) -> None:
        self.pipeline.controlnet.save_pretrained(folder)

    def push(self, repo_id: str, samples: Sequence[tuple[str, Any]], card_info: dict[str, Any]) -> None:
        """Upload the ControlNet with its model card (kind ``controlnet``)."""
        from ..hub import push_to_hub

        push_to_hub(self.pipeline.controlnet, repo_id, samples=samples, card_info=card_info)


def load_controlnet_pipeline(config: ControlNetConfig) -> PixArtAlphaControlNetPipeline:
    """The base pipeline of ``--pretrained_model_name_or_path`` (and ``--transformer``) with the ControlNet to train:
    ``--controlnet``, or a new one copying the base's first ``--controlnet_layers`` blocks."""
    check_base_unchanged(config, "a ControlNet")
    base = load_pipeline(config)
    if config.controlnet:
        controlnet = PixArtControlNetModel.from_pretrained(config.controlnet)
    else:
        controlnet = PixArtControlNetModel.from_transformer(base.transformer, num_layers=config.controlnet_layers)
    return PixArtAlphaControlNetPipeline(**base.components, controlnet=controlnet)


def train_controlnet(config: ControlNetConfig) -> Path:
    """Train a ControlNet; returns the saved ControlNet folder (``<output_dir>/controlnet``).

    Raises:
        ValueError, FileNotFoundError: bad options or data (before any step).
    """
    if config.train_data is None or config.features is not None:
        raise ValueError("ControlNet training reads raw images (--train_data): control maps are made from them.")
    config = with_sequence_length(config)
    accelerator = make_accelerator(config)
    edge_detector = None
    if config.conditioning_image_column is None:
        edge_detector = make_edge_detector(
            config.edge_detector,
            hed_weights=config.hed_weights,
            low_threshold=config.canny_low_threshold,
            high_threshold=config.canny_high_threshold,
            device=accelerator.device,
        )
    controls = [load_control_image(path, config.resolution) for path in config.validation_control_images]
    dataset = load_streaming_dataset(config.train_data)
    detector_name = config.edge_detector if edge_detector is not None else f"column {config.conditioning_image_column}"
    pipeline = load_controlnet_pipeline(config)
    conditioning = ControlConditioning(config, pipeline, validation_control_images=controls)
    parameters = ControlNetCopy(pipeline)
    loader = ControlImageTextLoader(
        dataset,
        edge_detector=edge_detector,
        conditioning_image_column=config.conditioning_image_column,
        caption_column=config.caption_column,
        **image_loader_options(config, accelerator),
    )
    card_info = {"stage": "ControlNet", "control": detector_name, "data": config.train_data}
    return train_with_iddpm(config, accelerator, pipeline, loader, conditioning, parameters, card_info)


#: The ``--help`` description of ``examples/train_controlnet.py``.
DESCRIPTION = (
    "Train a PixArt-alpha ControlNet (paper appendix A.9) on edge maps of image-caption data: a trainable copy of the "
    "base's first blocks (ControlNet-Half), the base frozen, captions dropped with probability 0.5. The ControlNet is "
    "saved to <output_dir>/controlnet."
)


def main_controlnet(argv: list[str] | None = None) -> int:
    """Command-line entry: parse flags (and ``--config``), train; a bad input exits with status 2."""
    return run_command(ControlNetConfig, train_controlnet, argv, DESCRIPTION)

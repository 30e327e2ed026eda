"""Offline features (paper Table 4 note): T5 caption embeddings with masks and VAE latent moments, precomputed once.

:func:`encode_prompts` and :func:`encode_images` are the one place where captions and images are encoded, for the
training engine (raw-image mode) and the extractor alike. :func:`extract_features` (or, from a data source and a
pipeline's VAE and T5, :func:`extract_dataset_features`) writes parquet shards whose rows hold

* ``latent_mean``, ``latent_std``: the VAE posterior's mean and standard deviation, flattened, with ``latent_shape``
  (C, h, w) (unscaled: :func:`sample_latents` draws and scales them at load time);
* ``prompt_embeds`` flattened with ``prompt_embeds_shape`` (L, C), and ``prompt_attention_mask`` (L,);
* ``resolution`` (original height, width), ``aspect_ratio`` (bucket ratio), ``text`` and/or ``label``;

and a ``features.json`` with the settings (VAE scaling factor, resolution, buckets, token length, dtype).
:class:`FeatureLoader` streams them back as training batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from diffusers import AutoencoderKL
from transformers import AutoTokenizer, T5EncoderModel

from ..atomic import write_json_atomic
from ..text import encode_prompts
from .shards import ShardWriter, write_loader
from .streaming import (
    DEFAULT_MIN_IMAGE_SIDE,
    ImageTextLoader,
    StreamingBatchLoader,
    load_streaming_dataset,
    micro_conditions,
)

#: Name of the settings file of a features folder.
FEATURES_INFO = "features.json"
_FORMAT = "diffusers_pixart.features/1"


def encode_images(vae, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of images: ``pixel_values`` (B, 3, H, W) in [-1, 1] -> mean and std (B, C, H/8, W/8),
    unscaled (see :func:`sample_latents`). Call it under ``torch.no_grad()`` for a frozen VAE."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"`pixel_values` must have shape (B, 3, H, W), got {tuple(pixel_values.shape)}.")
    posterior = vae.encode(pixel_values.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return posterior.mean, posterior.std


def sample_latents(
    mean: torch.Tensor,
    std: torch.Tensor,
    scaling_factor: float,
    shift_factor: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw diffusion latents from a VAE posterior: ``(mean + std * eps - shift_factor) * scaling_factor``.

    Args:
        mean, std: (..., C, h, w) posterior moments from :func:`encode_images`.
        scaling_factor, shift_factor: the VAE config's (``vae.config.scaling_factor``, 0.18215 for sd-vae-ft-ema).
        generator: the noise generator (on ``mean``'s device).
    """
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    latents = mean + std * noise
    if shift_factor is not None:
        latents = latents - shift_factor
    return latents * scaling_factor


def _row_features(dtype: str, text: bool, label: bool) -> datasets.Features:
    columns = {
        "latent_mean": datasets.List(datasets.Value(dtype)),
        "latent_std": datasets.List(datasets.Value(dtype)),
        "latent_shape": datasets.List(datasets.Value("int32")),
        "resolution": datasets.List(datasets.Value("float32")),
        "aspect_ratio": datasets.Value("float32"),
    }
    if text:
        columns["text"] = datasets.Value("string")
        columns["prompt_embeds"] = datasets.List(datasets.Value(dtype))
        columns["prompt_embeds_shape"] = datasets.List(datasets.Value("int32"))
        columns["prompt_attention_mask"] = datasets.List(datasets.Value("int8"))
    if label:
        columns["label"] = datasets.Value("int64")
    return datasets.Features(columns)


def read_features_info(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a features folder written by :func:`extract_features`."""
    info_path = Path(path) / FEATURES_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"{path} is not a features folder: it has no {FEATURES_INFO}.")
    info = json.loads(info_path.read_text())
    if info.get("format") != _FORMAT:
        raise ValueError(f"{info_path} has format {info.get('format')!r}; this version reads {_FORMAT!r}.")
    return info


def extract_features(
    loader: ImageTextLoader,
    output_dir: str | os.PathLike,
    *,
    vae,
    tokenizer=None,
    text_encoder=None,
    max_length: int = 120,
    dtype: str = "float16",
    rows_per_shard: int = 1000,
    max_samples: int | None = None,
) -> int:
    """Encode every batch of ``loader`` and write the features to ``output_dir``; resumable.

    Run it in every process with a loader of that process's rank (``max_epochs=1``, usually ``drop_last=False`` and
    ``shuffle_buffer_size=0``). A rerun with the same arguments continues where the last recorded shard ended.

    Args:
        loader: the raw-image loader; its batches must carry ``text`` when ``text_encoder`` is given.
        output_dir: the features folder.
        vae: the VAE (``AutoencoderKL``).
        tokenizer, text_encoder: the T5 tokenizer and encoder; both or neither (label-only features).
        max_length: caption tokens (120 in PixArt-alpha).
        dtype: storage dtype of the tensors, ``"float16"`` or ``"float32"``.
        rows_per_shard: rows per parquet shard.
        max_samples: stop this process once it wrote at least this many rows (whole batches), for smoke runs.

    Returns:
        The number of rows this process has written in ``output_dir`` (including earlier runs).
    """
    if (tokenizer is None) != (text_encoder is None):
        raise ValueError("Pass both `tokenizer` and `text_encoder`, or neither for label-only features.")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"`dtype` must be 'float16' or 'float32', got {dtype!r}.")
    if loader.max_epochs != 1:
        raise ValueError(f"Extraction reads one epoch: build the loader with max_epochs=1 (got {loader.max_epochs}).")
    with_text = text_encoder is not None
    if with_text and loader.caption_column is None:
        raise ValueError("A text encoder was given but the loader has no `caption_column`.")
    info = {
        "format": _FORMAT,
        "resolution": loader.resolution,
        "multi_scale": loader.multi_scale,
        "max_length": max_length if with_text else None,
        "dtype": dtype,
        "text": with_text,
        "label": loader.label_column is not None,
        "scaling_factor": vae.config.scaling_factor,
        "shift_factor": vae.config.get("shift_factor"),
    }
    output_dir = Path(output_dir)
    if (output_dir / FEATURES_INFO).exists():
        saved = read_features_info(output_dir)
        if saved != info:
            changed = sorted(key for key in info if saved.get(key) != info[key])
            raise ValueError(f"{output_dir} holds features made with other settings ({', '.join(changed)} differ).")
    elif loader.rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / FEATURES_INFO, info)
    writer = ShardWriter(
        output_dir,
        _row_features(dtype, with_text, info["label"]),
        rank=loader.rank,
        world_size=loader.world_size,
        rows_per_shard=rows_per_shard,
    )
    np_dtype = np.dtype(dtype)

    def to_rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
        with torch.no_grad():
            mean, std = encode_images(vae, batch["pixel_values"])
            if with_text:
                embeds, mask = encode_prompts(tokenizer, text_encoder, batch["text"], max_length)
        rows = []
        for i in range(mean.shape[0]):
            row = {
                "latent_mean": mean[i].float().cpu().numpy().astype(np_dtype).ravel(),
                "latent_std": std[i].float().cpu().numpy().astype(np_dtype).ravel(),
                "latent_shape": list(mean.shape[1:]),
                "resolution": batch["resolution"][i].tolist(),
                "aspect_ratio": batch["aspect_ratio"][i].item(),
            }
            if with_text:
                row["text"] = batch["text"][i]
                row["prompt_embeds"] = embeds[i].float().cpu().numpy().astype(np_dtype).ravel()
                row["prompt_embeds_shape"] = list(embeds.shape[1:])
                row["prompt_attention_mask"] = mask[i].cpu().numpy().astype(np.int8)
            if info["label"]:
                row["label"] = int(batch["label"][i])
            rows.append(row)
        return rows

    return write_loader(loader, writer, to_rows, max_samples)


def extract_dataset_features(
    data: str | os.PathLike,
    model: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    split: str = "train",
    image_column: str = "image",
    caption_column: str | None = "text",
    label_column: str | None = None,
    resolution: int = 256,
    multi_scale: bool = False,
    min_size: int = DEFAULT_MIN_IMAGE_SIDE,
    num_workers: int = 0,
    batch_size: int = 16,
    max_length: int = 120,
    dtype: str = "float16",
    encoder_dtype: torch.dtype = torch.float32,
    rows_per_shard: int = 1000,
    max_samples: int | None = None,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> tuple[int, dict[str, int]]:
    """:func:`extract_features` of a raw image data set with the VAE (and T5) of a pipeline: what
    ``examples/extract_features.py`` runs in each process; resumable.

    Args:
        data: a Hub dataset id or a local imagefolder / webdataset / parquet source (:func:`load_streaming_dataset`).
        model: a pipeline folder or Hub id with ``vae/`` (and ``tokenizer/``, ``text_encoder/`` for captions).
        output_dir: the features folder.
        caption_column: the caption column; ``None`` for label-only features (T5 is not loaded).
        label_column: an integer class-label column to keep, or ``None``.
        resolution, multi_scale, min_size, num_workers: the :class:`ImageTextLoader`'s (square crops at
            ``resolution``, or aspect-ratio buckets; images with a shorter side below ``min_size`` are skipped).
        batch_size: images encoded at once.
        max_length, dtype, rows_per_shard, max_samples: :func:`extract_features`'.
        encoder_dtype: T5's compute dtype (T5 breaks in float16).
        device, rank, world_size: this process's device and its part of the data.

    Returns:
        The rows this process has written in ``output_dir`` (including earlier runs) and the records it skipped, by
        reason.
    """
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae").to(device).eval()
    tokenizer = text_encoder = None
    if caption_column is not None:
        tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer")
        text_encoder = T5EncoderModel.from_pretrained(model, subfolder="text_encoder", dtype=encoder_dtype)
        text_encoder = text_encoder.to(device).eval()
    loader = ImageTextLoader(
        load_streaming_dataset(data, split=split),
        resolution=resolution,
        multi_scale=multi_scale,
        image_column=image_column,
        caption_column=caption_column,
        label_column=label_column,
        min_size=min_size,
        batch_size=batch_size,
        shuffle_buffer_size=0,
        rank=rank,
        world_size=world_size,
        drop_last=False,
        max_epochs=1,
        num_workers=num_workers,
    )
    rows = extract_features(
        loader,
        output_dir,
        vae=vae,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        max_length=max_length,
        dtype=dtype,
        rows_per_shard=rows_per_shard,
        max_samples=max_samples,
    )
    return rows, dict(loader.skipped)


class FeatureLoader(StreamingBatchLoader):
    """Training batches from a features folder written by :func:`extract_features`.

    Each batch (one latent size): ``latents`` (B, C, h, w) drawn from the stored posterior and scaled
    (:func:`sample_latents`, with noise seeded by seed, epoch, rank and record, so a resumed run draws the same),
    ``resolution`` (B, 2) and ``aspect_ratio`` (B, 1) float; with captions ``prompt_embeds`` (B, L, C) float32,
    ``prompt_attention_mask`` (B, L) long and ``text``; with labels ``label`` (B,) long.

    Args:
        path: the features folder.
        **kwargs: the arguments of :class:`StreamingBatchLoader` (batch_size, shuffle_buffer_size, seed, rank, ...).
    """

    #: Records read from the parquet shards per arrow batch (one conversion per column, not per row and column).
    read_batch_size = 256

    def __init__(self, path: str | os.PathLike, **kwargs: Any):
        self.info = read_features_info(path)
        super().__init__(load_streaming_dataset(str(path)).with_format("arrow"), **kwargs)

    def records(self) -> Iterator[dict[str, Any]]:
        """The records in the dataset's order, read as arrow batches: list columns become numpy rows (views of one
        array per column and batch), the others Python values."""
        for table in self.dataset.iter(batch_size=self.read_batch_size):
            columns = {}
            for name in table.column_names:
                array = table.column(name).combine_chunks()
                if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
                    offsets = array.offsets.to_numpy()
                    values = np.array(array.values.to_numpy(zero_copy_only=False))
                    columns[name] = [values[start:end] for start, end in zip(offsets[:-1], offsets[1:])]
                else:
                    columns[name] = array.to_pylist()
            for row in range(table.num_rows):
                yield {name: column[row] for name, column in columns.items()}

    def prepare(self, record: dict[str, Any], index: int) -> tuple[Hashable, dict[str, Any]]:
        shape = tuple(int(n) for n in record["latent_shape"])
        mean = torch.from_numpy(record["latent_mean"]).float().reshape(shape)
        std = torch.from_numpy(record["latent_std"]).float().reshape(shape)
        seed = np.random.SeedSequence([self.seed, self.epoch, self.rank, index]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        item: dict[str, Any] = {
            "latents": sample_latents(mean, std, self.info["scaling_factor"], self.info["shift_factor"], generator),
            "size": [float(n) for n in record["resolution"]],
            "ratio": float(record["aspect_ratio"]),
        }
        if self.info["text"]:
            embed_shape = tuple(int(n) for n in record["prompt_embeds_shape"])
            item["prompt_embeds"] = torch.from_numpy(record["prompt_embeds"]).float().reshape(embed_shape)
            item["prompt_attention_mask"] = torch.from_numpy(record["prompt_attention_mask"]).long()
            item["text"] = str(record["text"])
        if self.info["label"]:
            item["label"] = int(record["label"])
        return shape, item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"latents": torch.stack([item["latents"] for item in items])}
        batch.update(micro_conditions([item["size"] for item in items], [item["ratio"] for item in items]))
        if self.info["text"]:
            batch["prompt_embeds"] = torch.stack([item["prompt_embeds"] for item in items])
            batch["prompt_attention_mask"] = torch.stack([item["prompt_attention_mask"] for item in items])
            batch["text"] = [item["text"] for item in items]
        if self.info["label"]:
            batch["label"] = torch.tensor([item["label"] for item in items], dtype=torch.long)
        return batch

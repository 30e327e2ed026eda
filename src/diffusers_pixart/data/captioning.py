"""Auto-labelling with LLaVA (paper section 2.4): dense captions for an image dataset, batched and resumable.

Any ``transformers`` image-text-to-text model with a chat-template processor works (``LlavaForConditionalGeneration``
through ``AutoModelForImageTextToText``, e.g. ``llava-hf/llava-1.5-7b-hf``). The written dataset keeps every source
column (images embedded as bytes) and adds the new caption column.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from typing import Any

import datasets
import PIL.Image
import torch
from datasets.utils.file_utils import xopen

from .shards import ShardWriter, write_loader
from .streaming import SkipSample, StreamingBatchLoader, decode_image

#: The paper's captioning prompt.
DEFAULT_PROMPT = "Describe this image and its style in a very detailed manner"
#: The prompt variant that shows the model the image's original caption (``{caption}`` is replaced by it).
DEFAULT_PROMPT_WITH_CAPTION = DEFAULT_PROMPT + '. The image was originally captioned: "{caption}"'


def build_prompts(
    processor, count: int, prompt: str = DEFAULT_PROMPT, captions: Sequence[str] | None = None
) -> list[str]:
    """The chat-formatted prompts of ``count`` images: one user turn with the image and ``prompt``.

    With ``captions``, ``prompt`` must contain ``{caption}``, which is replaced by each image's original caption.
    """
    if captions is not None:
        if "{caption}" not in prompt:
            raise ValueError("With original captions the prompt needs a '{caption}' placeholder.")
        if len(captions) != count:
            raise ValueError(f"Got {len(captions)} captions for {count} images.")
        texts = [prompt.replace("{caption}", caption) for caption in captions]
    else:
        texts = [prompt] * count
    return [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
            add_generation_prompt=True,
        )
        for text in texts
    ]


def caption_images(
    model, processor, images: Sequence[PIL.Image.Image], prompts: Sequence[str], max_new_tokens: int = 256
) -> list[str]:
    """Greedy captions of ``images``, one per chat-formatted prompt (see :func:`build_prompts`)."""
    if len(images) != len(prompts):
        raise ValueError(f"Got {len(images)} images and {len(prompts)} prompts.")
    inputs = processor(images=list(images), text=list(prompts), return_tensors="pt", padding=True)
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def _embed_image(value: Any) -> dict[str, Any]:
    """A ``datasets`` image value with its bytes read in, so the written dataset does not point at source files."""
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        with xopen(value["path"], "rb") as file:
            return {"bytes": file.read(), "path": os.path.basename(value["path"])}
    return value


class CaptionSourceLoader(StreamingBatchLoader):
    """Batches of ``{"records": [...], "images": [PIL images]}`` in source order, for captioning.

    Undecodable images (and, with ``caption_column``, rows without a caption) are skipped and counted.
    """

    def __init__(
        self, dataset: datasets.IterableDataset, *, image_column: str = "image", caption_column: str | None = None, **kw
    ):
        columns = dataset.column_names
        for column in (image_column, caption_column):
            if column is not None and columns is not None and column not in columns:
                raise ValueError(f"Column {column!r} is not in the dataset; its columns are {columns}.")
        self.source_features = dataset.features
        if self.source_features is not None and isinstance(self.source_features.get(image_column), datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        kw.setdefault("shuffle_buffer_size", 0)
        super().__init__(dataset, **kw)
        self.image_column, self.caption_column = image_column, caption_column

    def prepare(self, record: dict[str, Any], index: int) -> tuple[Hashable, dict[str, Any]]:
        if self.caption_column is not None and not (record[self.caption_column] or "").strip():
            raise SkipSample("empty caption")
        image = decode_image(record[self.image_column])
        return None, {"record": record, "image": image}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"records": [item["record"] for item in items], "images": [item["image"] for item in items]}


def caption_dataset(
    loader: CaptionSourceLoader,
    output_dir: str | os.PathLike,
    *,
    model,
    processor,
    prompt: str = DEFAULT_PROMPT,
    output_column: str = "llava_caption",
    max_new_tokens: int = 256,
    rows_per_shard: int = 1000,
    max_samples: int | None = None,
) -> int:
    """Caption every image of ``loader`` and write the rows, with the new ``output_column``, as parquet shards.

    Resumable like :func:`~.features.extract_features`: rerun the same command to continue. When the loader has a
    ``caption_column``, ``prompt`` gets each original caption through its ``{caption}`` placeholder.

    Returns:
        The rows this process has written in ``output_dir`` (including earlier runs).
    """
    if loader.max_epochs != 1:
        raise ValueError(f"Captioning reads one epoch: build the loader with max_epochs=1 (got {loader.max_epochs}).")
    if loader.caption_column is not None and "{caption}" not in prompt:
        raise ValueError("The loader passes original captions: the prompt needs a '{caption}' placeholder.")
    features = None
    if loader.source_features is not None:
        if output_column in loader.source_features:
            raise ValueError(f"The dataset already has a column {output_column!r}; choose another `output_column`.")
        features = datasets.Features({**loader.source_features, output_column: datasets.Value("string")})
        features[loader.image_column] = datasets.Image()
    writer = ShardWriter(
        output_dir, features, rank=loader.rank, world_size=loader.world_size, rows_per_shard=rows_per_shard
    )

    def to_rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
        originals = None
        if loader.caption_column is not None:
            originals = [record[loader.caption_column] for record in batch["records"]]
        prompts = build_prompts(processor, len(batch["images"]), prompt, originals)
        captions = caption_images(model, processor, batch["images"], prompts, max_new_tokens)
        return [
            {**record, loader.image_column: _embed_image(record[loader.image_column]), output_column: caption}
            for record, caption in zip(batch["records"], captions)
        ]

    return write_loader(loader, writer, to_rows, max_samples)

"""The training stages of the paper as configs and entry points over the shared :class:`~.engine.Trainer`.

Stage 2, text-image alignment (paper section 2.2, Table 4): the T2I transformer at 256px, from a re-parameterized
stage-1 model or any PixArt checkpoint, on raw image-caption data or on precomputed features.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..data.features import FeatureLoader
from ..data.streaming import ImageTextLoader, load_streaming_dataset
from ..models.pixart_transformer import PixArtTransformer2DModel
from ..pipelines.pixart_alpha import PixArtAlphaPipeline
from .config import TrainingConfig, option, parse_config
from .engine import Trainer


@dataclass
class Stage2Config(TrainingConfig):
    """Options of stage 2 (text-image alignment): the engine's plus the model and the data."""

    pretrained_model_name_or_path: str = option(
        "", "Pipeline folder or Hub id giving the tokenizer, T5, VAE and scheduler (and the transformer by default)."
    )
    transformer: str | None = option(
        None, "Transformer folder or Hub id to start from (e.g. a re-parameterized stage-1 model)."
    )
    train_data: str | None = option(
        None, "Raw image-caption data: Hub dataset id or local imagefolder / webdataset / parquet source."
    )
    features: str | None = option(None, "A features folder of precomputed T5 embeddings and VAE latents instead.")
    image_column: str = option("image", "Image column of --train_data.")
    caption_column: str = option("text", "Caption column of --train_data.")
    shuffle_buffer_size: int = option(1000, "Streaming shuffle buffer (0 keeps the source order).")


def load_pipeline(config: Stage2Config) -> PixArtAlphaPipeline:
    """The pipeline to train: ``--pretrained_model_name_or_path``, with ``--transformer`` swapped in if given."""
    if not config.pretrained_model_name_or_path:
        raise ValueError("--pretrained_model_name_or_path is required: it gives the tokenizer, T5, VAE and scheduler.")
    kwargs = {}
    if config.transformer:
        kwargs["transformer"] = PixArtTransformer2DModel.from_pretrained(config.transformer)
    return PixArtAlphaPipeline.from_pretrained(config.pretrained_model_name_or_path, **kwargs)


def train_stage2(config: Stage2Config) -> Path:
    """Run stage 2; returns the saved pipeline folder."""
    if (config.train_data is None) == (config.features is None):
        raise ValueError("Give exactly one of --train_data (raw images and captions) and --features (precomputed).")
    trainer = Trainer(
        config,
        load_pipeline(config),
        card_info={"stage": "2: text-image alignment", "data": config.train_data or config.features},
    )
    acc = trainer.accelerator
    common = dict(
        batch_size=config.train_batch_size,
        shuffle_buffer_size=config.shuffle_buffer_size,
        seed=config.seed,
        rank=acc.process_index,
        world_size=acc.num_processes,
    )
    if config.features is not None:
        data = FeatureLoader(config.features, **common)
    else:
        data = ImageTextLoader(
            load_streaming_dataset(config.train_data),
            resolution=config.resolution,
            image_column=config.image_column,
            caption_column=config.caption_column,
            **common,
        )
    return trainer.train(data)


def main_stage2(argv: list[str] | None = None) -> int:
    """Command-line entry of stage 2: parse flags (and ``--config``), train; a bad input exits with status 2."""
    try:
        config = parse_config(Stage2Config, argv, description=__doc__.split("\n\n")[1])
        train_stage2(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

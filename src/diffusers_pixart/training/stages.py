"""The training stages of the paper as configs and entry points over the shared loop (:func:`~.engine.train`).

Stage 1, pixel dependency (paper section 2.2, Table 4): a class-conditional DiT (diffusers' ``DiTTransformer2DModel``)
on labelled images (ImageNet, or the toy world's labels) at 256px, with the engine's loop conditioned on the labels
(:class:`~.conditioning.ClassConditioning`); the result is re-parameterized into a PixArt transformer (section 2.3,
:meth:`PixArtTransformer2DModel.from_dit`) that stage 2 starts from.

Stage 2, text-image alignment (paper section 2.2, Table 4): the T2I transformer at 256px, from a re-parameterized
stage-1 model or any PixArt checkpoint, on raw image-caption data or on precomputed features.

Stage 3, high aesthetics (paper section 2.2, appendix A.5, Table 4): from stage 2, on high-quality image-caption data,
at 256px and then higher resolutions, with aspect-ratio buckets (one bucket per batch) and the micro-conditions (the
original size and the bucket ratio). The model is prepared by :func:`prepare_stage3_transformer`: its grid becomes
``--resolution`` (the position embeddings interpolated, DiffFit) and new micro-condition embedders start at zero.

PixArt-Σ's weak-to-strong training is these stages' options (:func:`load_pipeline`): the base pipeline loads as the
class its ``model_index.json`` names (α or Σ), ``--vae`` swaps the VAE, ``--kv_compress_*`` adds KV token compression
before the first step, the captions have the base family's length (:func:`with_sequence_length`: Σ's 300 tokens for
a Σ base, α's 120 otherwise, unless ``--max_sequence_length`` says), and stage 3's resolution raise gives Σ's
interpolation scales and its 2048 px bucket table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import datasets
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel, DPMSolverMultistepScheduler
from transformers import AutoConfig

from ..atomic import atomic_dir
from ..data.features import FeatureLoader, read_features_info
from ..data.streaming import DEFAULT_MIN_IMAGE_SIDE, ImageTextLoader, StreamingBatchLoader, load_streaming_dataset
from ..models.attention import KV_COMPRESS_SAMPLINGS
from ..models.conversion import REPARAM_TIMESTEP, load_dit
from ..models.pixart_transformer import PixArtTransformer2DModel, kv_compressed_layers
from ..pipelines.auto import family_of, pipeline_class
from ..pipelines.pixart_alpha import PixArtAlphaPipeline
from .conditioning import CaptionConditioning, ClassConditioning, Conditioning, micro_conditioned
from .config import TrainingConfig, option, run_command
from .diffusion import IDDPMDiffusion
from .engine import check_resolution, make_accelerator, train, vae_scale_factor
from .parameters import AllParameters, TrainedParameters

#: The ``--help`` descriptions of the stage scripts.
STAGE1_DESCRIPTION = (
    "PixArt-alpha stage 1, pixel dependency (paper section 2.2): train a class-conditional DiT on labelled images "
    "(ImageNet, or the toy world's labels) at 256px; the result is re-parameterized into a PixArt transformer "
    "(section 2.3) that stage 2 starts from."
)
STAGE2_DESCRIPTION = (
    "PixArt-alpha stage 2, text-image alignment (paper section 2.2): train the text-to-image transformer at 256px, "
    "from a re-parameterized stage-1 model or any PixArt checkpoint, on raw image-caption data or precomputed features."
)
STAGE3_DESCRIPTION = (
    "PixArt-alpha stage 3, high aesthetics (paper section 2.2, appendix A.5): from stage 2, on high-quality "
    "image-caption data, at 256px and then higher resolutions, with aspect-ratio buckets and the micro-conditions "
    "(original size and bucket ratio)."
)

logger = logging.getLogger(__name__)

#: Folder of a stage-1 run holding the re-parameterized PixArt transformer (next to the DiT's ``pipeline``).
PIXART_TRANSFORMER_DIR = "pixart_transformer"
#: Caption tokens of each family's pipeline (:func:`~diffusers_pixart.pipelines.auto.family_of`): the length of the
#: trainers built on :class:`Stage2Config` when ``--max_sequence_length`` is not given (:func:`with_sequence_length`).
FAMILY_SEQUENCE_LENGTHS = {"alpha": 120, "sigma": 300}


@dataclass
class StageConfig(TrainingConfig):
    """The options every stage adds to the engine's: the frozen parts and the data."""

    pretrained_model_name_or_path: str = option(
        "", "Pipeline folder or Hub id giving the tokenizer, T5, VAE and scheduler (and the transformer by default)."
    )
    train_data: str | None = option(
        None, "Raw image data: Hub dataset id or local imagefolder / webdataset / parquet source."
    )
    features: str | None = option(None, "A features folder of precomputed VAE latents (and T5 embeddings) instead.")
    image_column: str = option("image", "Image column of --train_data.")
    min_image_side: int = option(
        DEFAULT_MIN_IMAGE_SIDE,
        "Skip --train_data images whose shorter side is below this many pixels (counted in the run's data summary); "
        "0 keeps every image.",
    )
    shuffle_buffer_size: int = option(1000, "Streaming shuffle buffer (0 keeps the source order).")


@dataclass
class Stage1Config(StageConfig):
    """Options of stage 1 (pixel dependency): a class-conditional DiT on labelled images."""

    pretrained_model_name_or_path: str = option(
        "",
        "Pipeline folder or Hub id whose VAE and scheduler stage 1 uses; its text encoder's width is the "
        "re-parameterized model's caption_channels.",
    )
    label_column: str = option("label", "Integer class-label column of --train_data.")
    num_classes: int = option(1000, "Number of classes (ImageNet: 1000); labels must lie in [0, num_classes).")
    pretrained_dit: str | None = option(
        None,
        "DiT to continue from: diffusers folder (pipeline or transformer), Hub id (facebook/DiT-XL-2-256) or an "
        "original .pt file. Without it a new DiT is built from the size options.",
    )
    dit_config: str | None = option(
        None, "JSON file of DiTTransformer2DModel arguments for a new DiT; its entries override the size options."
    )
    dit_layers: int = option(28, "Transformer blocks of a new DiT (DiT-XL: 28).")
    dit_hidden: int = option(1152, "Hidden size of a new DiT (DiT-XL: 1152).")
    dit_heads: int = option(16, "Attention heads of a new DiT (DiT-XL: 16).")
    patch_size: int = option(2, "Patch size of a new DiT (DiT-XL/2: 2).")
    caption_dropout: float = option(0.1, "Probability of replacing a label with the null class (for CFG; DiT: 0.1).")
    validation_class_labels: list[int] = option([0, 1, 2, 3], "Classes rendered at validation, one image each.")
    validation_guidance_scale: float = option(
        1.0, "Guidance scale of the validation images; above 1 only with 1000 classes (DiTPipeline's null class)."
    )
    reparameterize: bool = option(
        True,
        f"Also save the re-parameterized PixArt transformer (paper section 2.3) as <output_dir>/"
        f"{PIXART_TRANSFORMER_DIR}: the --transformer of stage 2.",
    )
    reparam_timestep: int = option(REPARAM_TIMESTEP, "Timestep t* of the re-parameterization (the paper: 500).")


@dataclass
class Stage2Config(StageConfig):
    """Options of stage 2 (text-image alignment): the engine's plus the model and the data."""

    transformer: str | None = option(
        None, "Transformer folder or Hub id to start from (e.g. a re-parameterized stage-1 model)."
    )
    caption_column: str = option("text", "Caption column of --train_data.")
    max_sequence_length: int | None = option(
        None,
        "T5 tokens per caption; default: the base pipeline's family (PixArt-alpha 120, PixArt-Sigma 300, from its "
        "model_index.json). --features must be extracted with the same length.",
    )
    vae: str | None = option(
        None,
        "VAE replacing the pipeline's (PixArt-Sigma's weak-to-strong VAE swap, e.g. an SDXL VAE with scaling "
        "0.13025): an AutoencoderKL folder or Hub id, or a pipeline folder or Hub id with vae/. Its latent channels "
        "must be the transformer's in_channels; --features must be extracted with it. The saved pipeline keeps it.",
    )
    kv_compress_factor: int = option(
        1,
        "PixArt-Sigma's KV token compression, added to the loaded transformer before training: the self-attention "
        "keys and values of the image tokens are down-sampled R x R (R >= 2) in --kv_compress_layers, the new "
        "weights initialised as Sigma's code does (the convolution the window mean). 1: the model's own setting.",
    )
    kv_compress_layers: list[int] | None = option(
        None,
        "Blocks that compress keys and values (0-based; default: every block; Sigma's 2K/4K configs: the deep "
        "half, 14 .. 27 of 28). Needs --kv_compress_factor >= 2.",
    )
    kv_compress_sampling: str = option(
        "conv",
        "KV compression operator: conv (Sigma's: depthwise strided convolution + LayerNorm), conv_no_norm (the "
        "paper's formula), uniform (every R-th token, no weights).",
        choices=list(KV_COMPRESS_SAMPLINGS),
    )


@dataclass
class Stage3Config(Stage2Config):
    """Options of stage 3 (high aesthetics): stage 2's plus buckets, micro-conditions and the new resolution."""

    transformer: str | None = option(None, "Transformer folder or Hub id to start from (e.g. stage 2's transformer).")
    resolution: int = option(
        512,
        "Base resolution in pixels (the paper: 256, then 512 and 1024); the model's grid becomes resolution / VAE "
        "factor, and with --multi_scale it picks the bucket table (256/512/1024/2048, or 256 / 2^k for toy models).",
    )
    multi_scale: bool = option(
        True, "Aspect-ratio buckets for --train_data (paper A.5): each batch holds images of one bucket."
    )
    micro_conditions: bool | None = option(
        None,
        "Condition on the original image size and the bucket ratio; embedders the model lacks are added with their "
        "last linear at zero, so the loaded model's outputs are unchanged at the start. Default: on for a "
        "PixArt-alpha pipeline, and for a PixArt-Sigma one only if its model has them (the released Sigma models "
        "have none).",
    )
    interpolation_scale: float | None = option(
        None,
        "Position-embedding interpolation scale at --resolution. Default: the loaded model's scale x new / old grid, "
        "so the new grid spans the positions the model was trained on (DiffFit); the official 512px model used 1.",
    )


Stage2ConfigT = TypeVar("Stage2ConfigT", bound=Stage2Config)


def check_data_options(config: StageConfig) -> None:
    """Exactly one of ``--train_data`` and ``--features``."""
    if (config.train_data is None) == (config.features is None):
        raise ValueError("Give exactly one of --train_data (raw images) and --features (precomputed).")


def require_base_model(config: StageConfig) -> str:
    """``--pretrained_model_name_or_path``; a ``ValueError`` when it is not given."""
    if not config.pretrained_model_name_or_path:
        raise ValueError("--pretrained_model_name_or_path is required: it gives the tokenizer, T5, VAE and scheduler.")
    return config.pretrained_model_name_or_path


def with_sequence_length(config: Stage2ConfigT) -> Stage2ConfigT:
    """``config`` with its caption length: ``--max_sequence_length`` when given, else the base family's
    (:data:`FAMILY_SEQUENCE_LENGTHS`: 300 tokens for a base whose ``model_index.json`` names a PixArt-Σ pipeline, 120
    otherwise). The one rule of every trainer built on :class:`Stage2Config`; a copy, ``config`` is left as it is.

    Raises:
        ValueError: no ``--pretrained_model_name_or_path``, or a given length below 1.
    """
    length = config.max_sequence_length
    if length is None:
        family = family_of(pipeline_class(require_base_model(config)))
        return replace(config, max_sequence_length=FAMILY_SEQUENCE_LENGTHS[family])
    if length < 1:
        raise ValueError(f"--max_sequence_length must be at least 1, got {length}.")
    return config


def base_model_id(config: StageConfig) -> str | None:
    """The Hub id the run starts from (``--pretrained_model_name_or_path`` unless a local folder), for model cards."""
    source = config.pretrained_model_name_or_path
    return source if source and not Path(source).exists() else None


def loader_options(config: StageConfig, accelerator: Accelerator) -> dict[str, Any]:
    """The :class:`StreamingBatchLoader` arguments of the options: batch size, shuffle buffer, seed, this process's
    rank of the ``accelerator``'s world, and ``--dataloader_num_workers``."""
    if config.min_image_side < 0:
        raise ValueError(f"--min_image_side must be >= 0, got {config.min_image_side}.")
    if config.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers must be >= 0, got {config.dataloader_num_workers}.")
    return dict(
        batch_size=config.train_batch_size,
        shuffle_buffer_size=config.shuffle_buffer_size,
        seed=config.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        num_workers=config.dataloader_num_workers,
    )


def image_loader_options(config: StageConfig, accelerator: Accelerator) -> dict[str, Any]:
    """:func:`loader_options` plus the :class:`ImageTextLoader` ones: resolution, image column, minimum side."""
    return dict(
        loader_options(config, accelerator),
        resolution=config.resolution,
        image_column=config.image_column,
        min_size=config.min_image_side,
    )


def make_loader(
    config: StageConfig, accelerator: Accelerator, dataset: datasets.IterableDataset | None = None, **loader_kwargs
) -> StreamingBatchLoader:
    """This process's loader of ``--features``, or of ``--train_data`` (``dataset`` if already opened).

    ``loader_kwargs`` go to :class:`ImageTextLoader` (columns, ``multi_scale``).
    """
    if config.features is not None:
        return FeatureLoader(config.features, **loader_options(config, accelerator))
    if dataset is None:
        dataset = load_streaming_dataset(config.train_data)
    return ImageTextLoader(dataset, **image_loader_options(config, accelerator), **loader_kwargs)


def train_with_iddpm(
    config: StageConfig,
    accelerator: Accelerator,
    pipeline: Any,
    data: Any,
    conditioning: Conditioning,
    parameters: TrainedParameters,
    card_info: dict[str, Any],
    noise_offset: float = 0.0,
) -> Path:
    """The shared loop (:func:`~.engine.train`) with ``conditioning``, ``parameters`` and the paper's objective for
    ``pipeline`` (``--prediction_type``, ``--snr_gamma``, and ``noise_offset``); returns the saved result folder."""
    objective = IDDPMDiffusion.for_pipeline(pipeline, config.prediction_type, config.snr_gamma, noise_offset)
    result = train(
        config,
        pipeline,
        data,
        conditioning,
        parameters,
        objective,
        accelerator=accelerator,
        card_info=card_info,
        base_model=base_model_id(config),
    )
    return result.path


# ------------------------------------------------------------------------------------------------------ stage 1
def build_dit(config: Stage1Config, vae: AutoencoderKL) -> DiTTransformer2DModel:
    """The DiT to train: ``--pretrained_dit``, or a new one (DiT's initialisation) of the size options.

    The latent grid is ``--resolution`` / the VAE's down-sampling; the output has ``2 x`` the latent channels (the
    learned variance of the IDDPM loss).
    """
    factor = vae_scale_factor(vae)
    if config.resolution <= 0 or config.resolution % factor:
        raise ValueError(f"--resolution {config.resolution} must be a positive multiple of the VAE factor {factor}.")
    latent_size, channels = config.resolution // factor, vae.config.latent_channels
    if config.pretrained_dit:
        dit = load_dit(config.pretrained_dit)
        found = {
            "--num_classes": (dit.config.num_embeds_ada_norm, config.num_classes),
            "latent channels of the VAE": (dit.config.in_channels, channels),
            "latent size (--resolution / VAE factor)": (dit.config.sample_size, latent_size),
        }
        problems = [f"{what}: DiT {have} vs {want}" for what, (have, want) in found.items() if have != want]
        if problems:
            raise ValueError(f"--pretrained_dit {config.pretrained_dit} does not fit: {'; '.join(problems)}.")
        return dit.train()
    if config.num_classes < 1:
        raise ValueError(f"--num_classes must be at least 1, got {config.num_classes}.")
    if config.dit_heads < 1 or config.dit_hidden % config.dit_heads:
        raise ValueError(f"--dit_hidden {config.dit_hidden} must be a multiple of --dit_heads {config.dit_heads}.")
    arguments = dict(
        num_attention_heads=config.dit_heads,
        attention_head_dim=config.dit_hidden // config.dit_heads,
        num_layers=config.dit_layers,
        patch_size=config.patch_size,
        in_channels=channels,
        out_channels=2 * channels,
        sample_size=latent_size,
        num_embeds_ada_norm=config.num_classes,
    )
    if config.dit_config:
        path = Path(config.dit_config)
        if not path.is_file():
            raise FileNotFoundError(f"--dit_config {path}: no such file.")
        arguments.update(json.loads(path.read_text(encoding="utf-8")))
    torch.manual_seed(config.seed)
    try:
        dit = DiTTransformer2DModel(**arguments)
    except TypeError as error:
        raise ValueError(f"Cannot build the DiT from {arguments}: {error}") from error
    init_dit_weights(dit)
    return dit.train()


@torch.no_grad()
def init_dit_weights(dit: DiTTransformer2DModel) -> None:
    """DiT's initialisation (Peebles & Xie 2023), in place.

    Linears xavier-uniform with zero bias, the patch embedding as a linear, label tables and timestep MLPs
    normal(0.02), and adaLN-Zero: every modulation and the output layer zero, so that each block starts as the identity.
    """
    for module in dit.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            torch.nn.init.zeros_(module.bias)
    proj = dit.pos_embed.proj
    torch.nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    torch.nn.init.zeros_(proj.bias)
    for block in dit.transformer_blocks:
        emb = block.norm1.emb
        torch.nn.init.normal_(emb.class_embedder.embedding_table.weight, std=0.02)
        torch.nn.init.normal_(emb.timestep_embedder.linear_1.weight, std=0.02)
        torch.nn.init.normal_(emb.timestep_embedder.linear_2.weight, std=0.02)
        torch.nn.init.zeros_(block.norm1.linear.weight)
        torch.nn.init.zeros_(block.norm1.linear.bias)
    for linear in (dit.proj_out_1, dit.proj_out_2):
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)


def _class_names(dataset: datasets.IterableDataset, config: Stage1Config) -> dict[int, str] | None:
    """``{id: name}`` of a ``ClassLabel`` label column (checked against ``--num_classes``), else None."""
    feature = (dataset.features or {}).get(config.label_column)
    if not isinstance(feature, datasets.ClassLabel):
        return None
    if feature.num_classes > config.num_classes:
        raise ValueError(
            f"Column {config.label_column!r} has {feature.num_classes} classes but --num_classes is "
            f"{config.num_classes}."
        )
    return dict(enumerate(feature.names))


def train_stage1(config: Stage1Config) -> Path:
    """Run stage 1; returns the saved ``DiTPipeline`` folder (``<output_dir>/pipeline``).

    With ``--reparameterize`` the main process also writes ``<output_dir>/pixart_transformer``: the trained (EMA)
    DiT re-parameterized into a :class:`PixArtTransformer2DModel` whose ``caption_channels`` is the width of the
    pipeline's text encoder.
    """
    check_data_options(config)
    if not config.pretrained_model_name_or_path:
        raise ValueError("--pretrained_model_name_or_path is required: it gives the VAE and the scheduler.")
    source = config.pretrained_model_name_or_path
    caption_channels = None
    if config.reparameterize:
        try:
            caption_channels = AutoConfig.from_pretrained(source, subfolder="text_encoder").d_model
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(
                f"--reparameterize needs the text encoder config of {source} (its d_model): {error}"
            ) from error
    dataset = load_streaming_dataset(config.train_data) if config.train_data is not None else None
    id2label = _class_names(dataset, config) if dataset is not None else None
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    dit = build_dit(config, vae)
    pipeline = DiTPipeline(
        transformer=dit,
        vae=vae,
        scheduler=DPMSolverMultistepScheduler.from_pretrained(source, subfolder="scheduler"),
        id2label=id2label,
    )
    if id2label is not None:  # saved in model_index.json, passed back to DiTPipeline on load
        pipeline.register_to_config(id2label=id2label)
    conditioning = ClassConditioning(config, pipeline, validation_labels=config.validation_class_labels)
    accelerator = make_accelerator(config)
    data = make_loader(config, accelerator, dataset, caption_column=None, label_column=config.label_column)
    card_info = {"stage": "1: pixel dependency", "data": config.train_data or config.features}
    final = train_with_iddpm(config, accelerator, pipeline, data, conditioning, AllParameters(pipeline), card_info)
    if config.reparameterize and accelerator.is_main_process:
        model = PixArtTransformer2DModel.from_dit(
            str(final), reparam_timestep=config.reparam_timestep, caption_channels=caption_channels
        )
        with atomic_dir(Path(config.output_dir) / PIXART_TRANSFORMER_DIR) as tmp:
            model.save_pretrained(tmp)
    accelerator.wait_for_everyone()
    return final


def main_stage1(argv: list[str] | None = None) -> int:
    """Command-line entry of stage 1: parse flags (and ``--config``), train; a bad input exits with status 2."""
    return run_command(Stage1Config, train_stage1, argv, STAGE1_DESCRIPTION)


# ------------------------------------------------------------------------------------------------------ stage 2
def load_vae(source: str) -> AutoencoderKL:
    """The ``AutoencoderKL`` of ``--vae``: a VAE folder or Hub id, or a pipeline folder or Hub id with ``vae/``."""
    if (Path(source) / "vae" / "config.json").is_file():
        return AutoencoderKL.from_pretrained(source, subfolder="vae")
    try:
        return AutoencoderKL.from_pretrained(source)
    except (OSError, ValueError) as error:
        if Path(source).exists():
            raise ValueError(f"--vae {source}: not an AutoencoderKL folder nor a pipeline folder with vae/.") from error
        try:  # a pipeline repo on the Hub
            return AutoencoderKL.from_pretrained(source, subfolder="vae")
        except (OSError, ValueError):
            raise ValueError(f"--vae {source}: no AutoencoderKL there (nor in its vae/ subfolder): {error}") from error


def check_kv_options(config: Stage2Config) -> None:
    """Raise a ``ValueError`` for KV-compression options that cannot work (before anything loads)."""
    factor = config.kv_compress_factor
    if factor < 1:
        raise ValueError(f"--kv_compress_factor must be 1 (off) or an integer >= 2, got {factor}.")
    if factor == 1 and config.kv_compress_layers is not None:
        raise ValueError("--kv_compress_layers needs --kv_compress_factor >= 2 (Sigma's 2K/4K models: 2).")


def check_base_unchanged(config: Stage2Config, result: str = "", reason: str = "") -> None:
    """Raise a ``ValueError`` when ``--vae`` or ``--kv_compress_factor`` is given to a trainer whose ``result`` (an
    adapter, a ControlNet) holds neither: the base model it was trained with could not be rebuilt from it.
    ``reason``, when given, says instead why the trainer cannot change its base (e.g. a distillation's teacher)."""
    if config.vae or config.kv_compress_factor != 1:
        raise ValueError(
            f"--vae and --kv_compress_factor change the base model, {reason or f'which {result} does not hold'}: "
            "continue the full model with the stage scripts first (examples/train_stage2_alignment.py), then train "
            "on its result."
        )


def apply_kv_compression(transformer: PixArtTransformer2DModel, config: Stage2Config) -> None:
    """Add ``--kv_compress_*`` to ``transformer`` (:meth:`PixArtTransformer2DModel.enable_kv_compression`).

    A model that already compresses with exactly these settings keeps its (trained) weights; other settings would
    replace them and raise.
    """
    if config.kv_compress_factor == 1:
        return
    wanted = {
        "kv_compress_factor": config.kv_compress_factor,
        "kv_compress_layers": config.kv_compress_layers,
        "kv_compress_sampling": config.kv_compress_sampling,
    }
    num_layers = len(transformer.transformer_blocks)
    try:
        layers = kv_compressed_layers(wanted, num_layers)
    except ValueError as error:
        raise ValueError(f"--kv_compress_layers {config.kv_compress_layers}: {error}") from error
    own = transformer.config
    if (own.get("kv_compress_factor") or 1) > 1:
        same = (own.kv_compress_factor, own.kv_compress_sampling, kv_compressed_layers(own, num_layers)) == (
            config.kv_compress_factor,
            config.kv_compress_sampling,
            layers,
        )
        if not same:
            raise ValueError(
                f"The transformer already compresses keys and values (factor {own.kv_compress_factor}, "
                f"{own.kv_compress_sampling}, layers {own.kv_compress_layers}): other --kv_compress_* options would "
                "replace its trained weights. Give the same ones, or none."
            )
        logger.info("The transformer already has this KV compression: its weights are kept.")
        return
    transformer.enable_kv_compression(config.kv_compress_factor, config.kv_compress_layers, config.kv_compress_sampling)


def load_pipeline(config: Stage2Config, **from_pretrained_kwargs: Any) -> PixArtAlphaPipeline:
    """The pipeline to train: ``--pretrained_model_name_or_path`` as the pipeline class its ``model_index.json``
    names (PixArt-α or Σ: :func:`~diffusers_pixart.pipelines.auto.pipeline_class`), with ``--transformer`` and
    ``--vae`` swapped in and ``--kv_compress_*`` added if given. ``from_pretrained_kwargs`` go to the class's
    ``from_pretrained`` (e.g. ``text_encoder=None``: the pipeline without T5).

    Raises:
        ValueError: no ``--pretrained_model_name_or_path``, bad KV-compression options, a VAE whose latent
            channels are not the transformer's input channels, or ``--features`` that do not fit
            (:func:`check_features`), all before any weights train.
    """
    source = require_base_model(config)
    check_kv_options(config)
    kwargs = dict(from_pretrained_kwargs)
    if config.transformer:
        kwargs["transformer"] = PixArtTransformer2DModel.from_pretrained(config.transformer)
    if config.vae:
        kwargs["vae"] = load_vae(config.vae)
    pipeline = pipeline_class(source).from_pretrained(source, **kwargs)
    channels, wanted = pipeline.vae.config.latent_channels, pipeline.transformer.config.in_channels
    if channels != wanted:
        raise ValueError(
            f"The VAE{f' --vae {config.vae}' if config.vae else ''} has {channels} latent channels but the "
            f"transformer takes {wanted}: a VAE swap needs a VAE with the transformer's latent channels."
        )
    apply_kv_compression(pipeline.transformer, config)
    if config.features is not None:
        check_features(with_sequence_length(config), pipeline.vae)
    return pipeline


def check_features(config: Stage2Config, vae: AutoencoderKL) -> None:
    """Raise a ``ValueError`` when the ``--features`` folder does not fit the run: extracted with a VAE of another
    latent scaling than the pipeline's (after a VAE swap, extract the features again with the new VAE), or with
    captions of another length than ``config``'s (resolved) ``--max_sequence_length``."""
    features = config.features
    info = read_features_info(features)
    ours = (vae.config.scaling_factor, vae.config.get("shift_factor"))
    theirs = (info.get("scaling_factor"), info.get("shift_factor"))
    if theirs != ours:
        raise ValueError(
            f"--features {features} were extracted with a VAE of scaling/shift {theirs}, but the pipeline's VAE has "
            f"{ours}: extract them again with this VAE (examples/extract_features.py)."
        )
    length, wanted = info.get("max_length"), config.max_sequence_length
    if length is not None and length != wanted:
        raise ValueError(
            f"--features {features} hold captions of {length} T5 tokens, but this run uses {wanted} "
            "(--max_sequence_length; default: the base family's, PixArt-alpha 120, PixArt-Sigma 300): pass "
            f"--max_sequence_length {length}, or extract them again with --max_length {wanted}."
        )


def train_stage2(config: Stage2Config) -> Path:
    """Run stage 2; returns the saved pipeline folder."""
    check_data_options(config)
    config = with_sequence_length(config)
    pipeline = load_pipeline(config)
    accelerator = make_accelerator(config)
    data = make_loader(config, accelerator, caption_column=config.caption_column)
    card_info = {"stage": "2: text-image alignment", "data": config.train_data or config.features}
    conditioning, parameters = CaptionConditioning(config, pipeline), AllParameters(pipeline)
    return train_with_iddpm(config, accelerator, pipeline, data, conditioning, parameters, card_info)


def main_stage2(argv: list[str] | None = None) -> int:
    """Command-line entry of stage 2: parse flags (and ``--config``), train; a bad input exits with status 2."""
    return run_command(Stage2Config, train_stage2, argv, STAGE2_DESCRIPTION)


# ------------------------------------------------------------------------------------------------------ stage 3
def prepare_stage3_transformer(
    transformer: PixArtTransformer2DModel,
    sample_size: int,
    interpolation_scale: float | None = None,
    micro_conditions: bool = True,
) -> PixArtTransformer2DModel:
    """A copy of ``transformer`` for a new latent grid ``sample_size``, with micro-conditions if asked.

    Position embeddings (DiffFit, which the paper adopts): positions along each axis are
    ``arange(n) / (n / base_size) / interpolation_scale`` with ``base_size = sample_size // patch_size``. By default the
    new scale is the loaded model's times ``sample_size / old sample_size``, so the new grid covers the same position
    range as the grid the model was trained on, at a finer spacing (every other position of a grid twice as large is
    an old position). ``interpolation_scale`` sets it instead.

    Micro-conditions: a model without them gets ``resolution_embedder`` and ``aspect_ratio_embedder`` whose last
    linear is zero, so their sum added to the timestep embedding is zero and the outputs are the loaded model's;
    the first linears are freshly initialised. A model that has them keeps them.

    Raises:
        ValueError: the hidden size is not divisible by 3 (micro-conditions need it), or ``micro_conditions=False``
            for a model that has them (that would drop trained weights).
    """
    config = transformer.config
    if transformer.use_additional_conditions and not micro_conditions:
        raise ValueError(
            "The transformer has micro-conditions: --no-micro_conditions would drop their trained weights."
        )
    if interpolation_scale is None:
        interpolation_scale = transformer.pos_embed.interpolation_scale * sample_size / config.sample_size
    if interpolation_scale <= 0:
        raise ValueError(f"--interpolation_scale must be positive, got {interpolation_scale}.")
    if float(interpolation_scale).is_integer():
        interpolation_scale = int(interpolation_scale)
    model = PixArtTransformer2DModel.from_config(
        {
            **{key: value for key, value in config.items() if not key.startswith("_")},  # not `_use_default_values`
            "sample_size": sample_size,
            "interpolation_scale": interpolation_scale,
            "use_additional_conditions": micro_conditions,
        }
    )
    missing, unexpected = model.load_state_dict(transformer.state_dict(), strict=False)
    prefixes = ("adaln_single.emb.resolution_embedder.", "adaln_single.emb.aspect_ratio_embedder.")
    new = {key for key in model.state_dict() if key.startswith(prefixes)}
    if unexpected or not set(missing) <= new:
        raise RuntimeError(f"Stage-3 transfer left {sorted(set(missing) - new)}, unexpected {sorted(unexpected)}.")
    if missing:
        emb = model.adaln_single.emb
        with torch.no_grad():
            for embedder in (emb.resolution_embedder, emb.aspect_ratio_embedder):
                embedder.linear_2.weight.zero_()
                embedder.linear_2.bias.zero_()
    return model if model.dtype == transformer.dtype else model.to(transformer.dtype)


def train_stage3(config: Stage3Config) -> Path:
    """Run stage 3; returns the saved pipeline folder (its transformer's ``sample_size`` is ``--resolution``'s)."""
    check_data_options(config)
    config = with_sequence_length(config)
    pipeline = load_pipeline(config)
    vae_factor = vae_scale_factor(pipeline.vae)
    check_resolution(config.resolution, pipeline.transformer.config.patch_size, vae_factor)
    micro = config.micro_conditions
    if micro is None:  # α's recipe adds them; Σ's released models have none
        micro = family_of(pipeline) == "alpha" or micro_conditioned(pipeline.transformer)
    torch.manual_seed(config.seed)  # the first linears of new micro-condition embedders
    pipeline.transformer = prepare_stage3_transformer(
        pipeline.transformer, config.resolution // vae_factor, config.interpolation_scale, micro
    )
    accelerator = make_accelerator(config)
    data = make_loader(config, accelerator, caption_column=config.caption_column, multi_scale=config.multi_scale)
    card_info = {"stage": "3: high aesthetics", "data": config.train_data or config.features}
    conditioning, parameters = CaptionConditioning(config, pipeline), AllParameters(pipeline)
    return train_with_iddpm(config, accelerator, pipeline, data, conditioning, parameters, card_info)


def main_stage3(argv: list[str] | None = None) -> int:
    """Command-line entry of stage 3: parse flags (and ``--config``), train; a bad input exits with status 2."""
    return run_command(Stage3Config, train_stage3, argv, STAGE3_DESCRIPTION)

"""Every diffusers internal this package relies on, in one place.

diffusers promises its public API (the top-level classes, ``from_pretrained``/``save_pretrained``, the pipeline and
model base classes). The names below are not in that promise: private names, helpers and constants that live inside
one of its pipelines' modules, a registry, building blocks whose parameter names our checkpoints depend on. Each is
imported here only, with a comment saying what is relied on; ``tests/test_diffusers_compat.py`` checks each one, so
a diffusers upgrade that changes one fails there, naming it, instead of deep inside a pipeline call. Imports of
documented API stay where they are used (top-level classes, ``configuration_utils.register_to_config``,
``loaders.PeftAdapterMixin``, ``callbacks``, ``image_processor``, ``utils``).

Not routed through here, but checked by the same test: the members a subclass uses from its diffusers base class, as
every diffusers model and pipeline does — ``DiffusionPipeline._execution_device``, ``_optional_components``,
``model_cpu_offload_seq`` and ``_callback_tensor_inputs`` (pipelines), ``ModelMixin.gradient_checkpointing`` and
``_gradient_checkpointing_func`` (models, set by ``enable_gradient_checkpointing``).
"""

from __future__ import annotations

from typing import Any

from diffusers.configuration_utils import ConfigMixin
from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE, LoraBaseMixin
from diffusers.loaders.lora_pipeline import SanaLoraLoaderMixin
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import LabelEmbedding, TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES
from diffusers.pipelines.pixart_alpha import pipeline_pixart_alpha, pipeline_pixart_sigma
from diffusers.utils.peft_utils import get_peft_kwargs

__all__ = [
    "ASPECT_RATIO_256_BIN",
    "ASPECT_RATIO_512_BIN",
    "ASPECT_RATIO_1024_BIN",
    "ASPECT_RATIO_2048_BIN",
    "LORA_WEIGHT_NAME_SAFE",
    "Attention",
    "AttentionMixin",
    "CaptionProcessingMixin",
    "FeedForward",
    "LabelEmbedding",
    "SanaLoraLoaderMixin",
    "TimestepEmbedding",
    "Timesteps",
    "Transformer2DModelOutput",
    "config_init_keys",
    "enable_vae_tiling",
    "get_2d_sincos_pos_embed",
    "get_peft_kwargs",
    "register_component_library",
    "retrieve_timesteps",
    "write_lora_file",
]

# --- Pipeline loading ---------------------------------------------------------------------------------------------


def register_component_library(library: str) -> None:
    """Register the package ``library`` as a library of pipeline components, as diffusers registers transformers.

    Relies on ``diffusers.pipelines.pipeline_loading_utils.LOADABLE_CLASSES``, a dict ``{library: {base class name:
    [save method, load method]}}`` that ``DiffusionPipeline`` reads to save and load each component: a saved pipeline
    then records our transformer as ``["diffusers_pixart", "PixArtTransformer2DModel"]``, which diffusers imports and
    loads through its ``ModelMixin`` base, from a local folder and from the Hub alike.
    """
    LOADABLE_CLASSES.setdefault(library, {"ModelMixin": ["save_pretrained", "from_pretrained"]})


# --- diffusers' PixArt pipeline modules ---------------------------------------------------------------------------

#: Module-level helper of diffusers' PixArt-alpha pipeline: ``retrieve_timesteps(scheduler, num_inference_steps,
#: device, timesteps, sigmas)`` calls ``scheduler.set_timesteps`` (with custom ``timesteps`` or ``sigmas`` when given,
#: a ``ValueError`` when the scheduler takes neither) and returns ``(scheduler.timesteps, num_inference_steps)``.
retrieve_timesteps = pipeline_pixart_alpha.retrieve_timesteps

#: The aspect-ratio bucket tables ``{"0.25": [height, width], ...}`` of diffusers' PixArt-alpha (256/512/1024 px)
#: and PixArt-Sigma (2048 px) pipeline modules: resolution binning and bucketed training use these very tables.
ASPECT_RATIO_256_BIN = pipeline_pixart_alpha.ASPECT_RATIO_256_BIN
ASPECT_RATIO_512_BIN = pipeline_pixart_alpha.ASPECT_RATIO_512_BIN
ASPECT_RATIO_1024_BIN = pipeline_pixart_alpha.ASPECT_RATIO_1024_BIN
ASPECT_RATIO_2048_BIN = pipeline_pixart_sigma.ASPECT_RATIO_2048_BIN

_DiffusersPixArtAlphaPipeline = pipeline_pixart_alpha.PixArtAlphaPipeline


class CaptionProcessingMixin:
    """diffusers' PixArt caption cleaning, grafted onto our pipelines: a prompt becomes exactly the same tokens.

    Relies on three members of diffusers' ``PixArtAlphaPipeline``: the private methods ``_text_preprocessing(text,
    clean_caption)`` (a list of processed strings: cleaned with ``clean_caption``, else lower-cased and stripped)
    and ``_clean_caption(caption)`` (DeepFloyd-IF's recipe), and the class attribute ``bad_punct_regex`` that
    ``_clean_caption`` reads from ``self``. None of them uses other pipeline state.
    """

    bad_punct_regex = _DiffusersPixArtAlphaPipeline.bad_punct_regex
    _text_preprocessing = _DiffusersPixArtAlphaPipeline._text_preprocessing
    _clean_caption = _DiffusersPixArtAlphaPipeline._clean_caption


# --- Configs --------------------------------------------------------------------------------------------------------


def config_init_keys(cls: type[ConfigMixin]) -> set[str]:
    """The names of ``cls.__init__``'s parameters (``self`` included), as diffusers reads a config class's arguments.

    Relies on the private static method ``ConfigMixin._get_init_keys(input_class)``, which ``extract_init_dict`` uses
    to tell config arguments from unknown keys.
    """
    return cls._get_init_keys(cls)


# --- Model building blocks ------------------------------------------------------------------------------------------
# Our transformer is built from these layers, so its state-dict keys are theirs: ``Attention`` (``to_q``, ``to_k``,
# ``to_v``, ``to_out.0``; ``fuse_projections`` adds ``to_qkv``/``to_kv``), ``FeedForward`` (``net.0.proj``,
# ``net.2``), ``TimestepEmbedding`` (``linear_1``, ``linear_2``), ``Timesteps`` (no parameters) and the training
# engine's ``LabelEmbedding`` (``embedding_table``, one extra row for the dropped label). ``AttentionMixin`` gives
# the transformer ``attn_processors``/``set_attn_processor``. ``get_2d_sincos_pos_embed(embed_dim, grid_size,
# base_size=, interpolation_scale=, device=, output_type="pt")`` is the position table of PixArt-alpha's patch
# embedding; ``Transformer2DModelOutput(sample=...)`` is the transformer's return type.


def enable_vae_tiling(vae: Any, tile_size: int, scale_factor: int) -> None:
    """Let ``vae`` (an ``AutoencoderKL``) encode and decode images larger than ``tile_size`` pixels in overlapping
    tiles of that size, one image of a batch at a time.

    ``enable_tiling``/``enable_slicing`` are public but set no tile size: this relies on the attributes
    ``tile_sample_min_size`` (pixels) and ``tile_latent_min_size`` (latents) that its tiled encode and decode read.
    """
    vae.enable_tiling()
    vae.enable_slicing()
    vae.tile_sample_min_size = tile_size
    vae.tile_latent_min_size = tile_size // scale_factor


# --- LoRA -------------------------------------------------------------------------------------------------------------
# ``SanaLoraLoaderMixin`` is the transformer-only ``LoraBaseMixin`` of diffusers' other PixArt-family pipeline
# (``_lora_loadable_modules == ["transformer"]``); our loader subclasses it and calls its classmethods
# ``lora_state_dict(..., return_lora_metadata=True)`` and ``load_lora_into_transformer(state_dict, transformer,
# adapter_name=, _pipeline=, low_cpu_mem_usage=, hotswap=, metadata=)``. ``get_peft_kwargs(rank_dict,
# network_alpha_dict, peft_state_dict, is_unet=True)`` turns ranks and alphas into ``LoraConfig`` arguments.
# ``LORA_WEIGHT_NAME_SAFE`` is the file name of pipeline LoRA weights, ``pytorch_lora_weights.safetensors``.


def write_lora_file(
    save_directory: str, state_dict: dict[str, Any], config: dict[str, Any], weight_name: str, prefix: str
) -> None:
    """Write LoRA tensors and their ``LoraConfig`` as diffusers' pipelines do: keys prefixed ``<prefix>.``, the
    config (prefixed too) in the safetensors metadata, so ``load_lora_adapter(..., prefix=prefix)`` rebuilds it.

    Relies on the static methods ``LoraBaseMixin.pack_weights(layers, prefix)`` and
    ``LoraBaseMixin.write_lora_layers(state_dict, save_directory, is_main_process, weight_name, save_function,
    safe_serialization, lora_adapter_metadata)``.
    """
    LoraBaseMixin.write_lora_layers(
        state_dict=LoraBaseMixin.pack_weights(state_dict, prefix),
        save_directory=save_directory,
        is_main_process=True,
        weight_name=weight_name,
        save_function=None,
        safe_serialization=True,
        lora_adapter_metadata=LoraBaseMixin.pack_weights(config, prefix),
    )

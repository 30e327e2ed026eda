"""Low-memory generation: an int8 T5 encoder, dropped before denoising, and a tiled VAE decode.

PixArt-alpha's T5-XXL encoder (4.8 B parameters, 9.5 GB in bf16) is most of the pipeline's memory, and it serves only
to encode the prompts. The low-memory mode of :class:`~diffusers_pixart.pipelines.pixart_alpha.PixArtAlphaPipeline`
(``PixArtAlphaPipeline.from_pretrained(..., low_memory=True)``, or ``pipe.enable_low_memory()`` on a loaded one):

1. **int8 T5**: the encoder's linear weights are int8 with one float scale per output row (torchao's int8
   weight-only quantization, on CPU and CUDA; activations and matmuls stay in the model's dtype), about half of bf16.
   ``from_pretrained(low_memory=True)`` quantizes while loading, so the bf16 encoder is never resident as a whole.
2. **Encode, then drop**: the text encoder is dropped from the pipeline (``pipe.text_encoder`` becomes ``None`` and
   its memory is freed) when the transformer first runs, so the two are never resident together while denoising.
   The next call that has prompts to encode loads it again with the mode's ``text_encoder_loader`` (by default from
   the pipeline's folder or Hub repo, int8 again). Calls with ``prompt_embeds`` never load it.
3. **Tiled VAE decode**: images larger than ``vae_tile_size`` pixels are decoded in overlapping tiles of that size,
   and a batch one image at a time (diffusers' VAE tiling and slicing). Smaller images decode exactly as before.
"""

from __future__ import annotations

import gc
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from transformers import T5EncoderModel

from ..diffusers_compat import enable_vae_tiling

if TYPE_CHECKING:
    from .pixart_alpha import PixArtAlphaPipeline

#: Image side (pixels) above which the low-memory mode decodes in tiles: the side of each tile.
DEFAULT_VAE_TILE_SIZE = 512

#: Keyword arguments of a pipeline's ``from_pretrained`` that also apply to loading the text encoder on its own.
_LOADING_KWARGS = (
    "cache_dir",
    "force_download",
    "local_files_only",
    "token",
    "revision",
    "variant",
    "use_safetensors",
)


def _import_torchao() -> None:
    """Import torchao, without its warnings about the CUDA-only kernels that a CPU machine cannot load."""
    torchao_logger = logging.getLogger("torchao")
    level = torchao_logger.level
    torchao_logger.setLevel(logging.ERROR)
    try:
        import torchao  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The int8 text encoder of the low-memory mode needs torchao: pip install 'diffusers_pixart[lowmem]'."
        ) from error
    finally:
        torchao_logger.setLevel(level)


def int8_weight_only_config():
    """torchao's int8 weight-only config (per-row scales), leaving torch.compile's global settings alone."""
    _import_torchao()
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig(set_inductor_config=False)


def is_int8(text_encoder: torch.nn.Module) -> bool:
    """Whether ``text_encoder``'s linear weights are already quantized (by torchao)."""
    _import_torchao()
    from torchao.utils import TorchAOBaseTensor

    return any(
        isinstance(module.weight, TorchAOBaseTensor)
        for module in text_encoder.modules()
        if isinstance(module, torch.nn.Linear)
    )


def quantize_text_encoder(text_encoder: T5EncoderModel) -> T5EncoderModel:
    """Quantize ``text_encoder``'s linear weights to int8 in place (per output row scales); returns it.

    The embedding table stays in its dtype. An encoder already quantized is returned as it is.
    """
    if not is_int8(text_encoder):
        from torchao.quantization import quantize_

        quantize_(text_encoder, int8_weight_only_config())
    return text_encoder


def load_text_encoder(
    pretrained_model_name_or_path: str | os.PathLike, subfolder: str = "text_encoder", **kwargs: Any
) -> T5EncoderModel:
    """``T5EncoderModel.from_pretrained`` with the linear weights quantized to int8 while loading.

    Layer by layer, so the peak is the int8 model plus one layer, never the whole bf16 model. ``kwargs`` go to
    ``from_pretrained`` (``dtype``, ``revision``, ``local_files_only``, ...).
    """
    from transformers import TorchAoConfig

    config = TorchAoConfig(int8_weight_only_config())
    return T5EncoderModel.from_pretrained(
        pretrained_model_name_or_path, subfolder=subfolder, quantization_config=config, **kwargs
    )


def pretrained_text_encoder_loader(
    pretrained_model_name_or_path: str | os.PathLike, pipeline_kwargs: dict[str, Any]
) -> Callable[[], T5EncoderModel]:
    """:func:`load_text_encoder` from a pipeline folder or Hub repo with the applicable ``from_pretrained`` arguments
    of the pipeline (download options, ``dtype``: a dtype, or a dict by component with ``"default"``)."""
    kwargs = {key: pipeline_kwargs[key] for key in _LOADING_KWARGS if key in pipeline_kwargs}
    dtype = pipeline_kwargs.get("dtype", pipeline_kwargs.get("torch_dtype"))
    if isinstance(dtype, dict):
        dtype = dtype.get("text_encoder", dtype.get("default"))
    if dtype is not None:
        kwargs["dtype"] = dtype
    return partial(load_text_encoder, pretrained_model_name_or_path, **kwargs)


@dataclass
class LowMemoryMode:
    """What :func:`enable_low_memory` set up on a pipeline (kept as ``pipe._low_memory``).

    Attributes:
        text_encoder_loader: returns a text encoder for the next prompts once the mode has dropped it; ``None`` when
            the encoder is kept.
        int8_text_encoder: quantize encoders that ``text_encoder_loader`` returns unquantized.
        device: where the dropped encoder was, and where a reloaded one goes.
        hook: the transformer's forward pre-hook that drops the encoder.
    """

    text_encoder_loader: Callable[[], T5EncoderModel] | None
    int8_text_encoder: bool
    device: torch.device | None = None
    hook: torch.utils.hooks.RemovableHandle | None = None

    def reload_text_encoder(self, pipe: PixArtAlphaPipeline) -> None:
        """Put a text encoder back into ``pipe`` (which has none) for prompts to encode; a clear error if it can't."""
        if self.text_encoder_loader is None:
            raise ValueError(
                "The pipeline has no text encoder: pass `prompt_embeds` and masks, or set `pipe.text_encoder`."
            )
        text_encoder = self.text_encoder_loader()
        if self.int8_text_encoder:
            quantize_text_encoder(text_encoder)
        if self.device is not None:
            text_encoder = text_encoder.to(self.device)
        pipe.register_modules(text_encoder=text_encoder.eval())

    def drop_text_encoder(self, pipe: PixArtAlphaPipeline) -> None:
        """Remove the text encoder from ``pipe`` and free its memory (nothing else in the pipeline refers to it)."""
        if pipe.text_encoder is None:
            return
        self.device = pipe.text_encoder.device
        pipe.register_modules(text_encoder=None)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def default_text_encoder_loader(pipe: PixArtAlphaPipeline) -> Callable[[], T5EncoderModel] | None:
    """A loader of the int8 text encoder from the folder or Hub repo ``pipe`` was loaded from, in its dtype.

    ``None`` for a pipeline built in code (no ``text_encoder`` folder to load from).
    """
    source = getattr(pipe.config, "_name_or_path", None)
    if not source or pipe.text_encoder is None:
        return None
    if os.path.isdir(source) and not os.path.isdir(os.path.join(source, "text_encoder")):
        return None
    return partial(load_text_encoder, source, dtype=pipe.text_encoder.dtype)


def enable_low_memory(
    pipe: PixArtAlphaPipeline,
    text_encoder_loader: Callable[[], T5EncoderModel] | None = None,
    int8_text_encoder: bool = True,
    drop_text_encoder: bool = True,
    vae_tile_size: int | None = DEFAULT_VAE_TILE_SIZE,
) -> LowMemoryMode:
    """Switch ``pipe`` to low-memory generation (see the module docstring); each option can be left off.

    Args:
        pipe: the pipeline, changed in place.
        text_encoder_loader: returns the text encoder again after it was dropped (e.g.
            ``partial(load_text_encoder, "PixArt-alpha/PixArt-XL-2-1024-MS", dtype=torch.bfloat16)``). Default: from
            the folder or Hub repo the pipeline was loaded from. A pipeline built in code needs one to drop its
            encoder.
        int8_text_encoder: quantize the text encoder's linear weights to int8 (now, and on every reload).
        drop_text_encoder: drop the text encoder when the transformer first runs.
        vae_tile_size: decode images larger than this (pixels) in tiles of this size, and batches one image at a
            time; ``None`` leaves the VAE as it is.

    Raises:
        ValueError: dropping asked for without a way to load the encoder again, a non-positive tile size, or a
            second call (the mode is already on).
    """
    if pipe._low_memory is not None:
        raise ValueError("The low-memory mode is already enabled on this pipeline.")
    if vae_tile_size is not None and vae_tile_size <= 0:
        raise ValueError(f"`vae_tile_size` must be positive, got {vae_tile_size}.")
    if drop_text_encoder:
        text_encoder_loader = text_encoder_loader or default_text_encoder_loader(pipe)
        if text_encoder_loader is None and pipe.text_encoder is not None:
            raise ValueError(
                "This pipeline was not loaded from a folder with a text_encoder: pass `text_encoder_loader` so that "
                "the dropped text encoder can be loaded again, or `drop_text_encoder=False`."
            )
    mode = LowMemoryMode(text_encoder_loader if drop_text_encoder else None, int8_text_encoder)
    if int8_text_encoder and pipe.text_encoder is not None:
        quantize_text_encoder(pipe.text_encoder)
    if drop_text_encoder:
        pipe_ref = weakref.ref(pipe)  # the hook lives on the transformer: no reference cycle through it

        def drop_before_forward(module: torch.nn.Module, args: tuple) -> None:
            pipeline = pipe_ref()
            if pipeline is not None:
                mode.drop_text_encoder(pipeline)

        mode.hook = pipe.transformer.register_forward_pre_hook(drop_before_forward)
    if vae_tile_size is not None:
        enable_vae_tiling(pipe.vae, vae_tile_size, pipe.vae_scale_factor)
    pipe._low_memory = mode
    return mode

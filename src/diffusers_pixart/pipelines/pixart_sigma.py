"""Text-to-image generation with PixArt-Σ: :class:`PixArtAlphaPipeline`'s code with Σ's defaults.

PixArt-Σ ("Weak-to-Strong Training of Diffusion Transformer for 4K Text-to-Image Generation", 2024) runs the same
transformer as PixArt-α; what a pipeline sees of the difference is in the components and one default:

- captions of up to 300 T5 tokens (``max_sequence_length=300``, the default of ``__call__`` and ``encode_prompt``);
- the SDXL VAE (latent scaling 0.13025), read from the VAE's own config;
- interpolation scales 0.5 / 1 / 2 / 4 at 256 / 512 / 1024 / 2048 px, read from the transformer's config;
- the 2048 px aspect-ratio table for models of sample size 256 (resolution binning picks the table by the model's
  native size, so the α pipeline has it too: :func:`~diffusers_pixart.data.buckets.bucket_table`);
- no micro-conditions on the released models (their configs say ``use_additional_conditions: false``; the pipeline
  follows the model's own setting, as the α one does).

Everything else (the call signature, caption cleaning, binning, guidance, samplers by name, ``callback_on_step_end``,
the fixes listed in :mod:`.pixart_alpha`, LoRA loading, low-memory mode) is the α pipeline's code. With the same
components and seed the images equal those of diffusers' ``PixArtSigmaPipeline``.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

import torch

from .pixart_alpha import PixArtAlphaPipeline

#: Caption tokens of PixArt-Σ (the T5 sequence length of its training and of diffusers' pipeline).
SIGMA_MAX_SEQUENCE_LENGTH = 300


def with_defaults(function: Callable[..., Any], **defaults: Any) -> Callable[..., Any]:
    """A copy of the plain function ``function`` whose named keyword defaults are replaced by ``defaults``.

    Same code, same closure; only the defaults differ, so ``inspect.signature`` shows the new ones. Unwrap decorators
    first (``f.__wrapped__``) and re-apply them to the copy.
    """
    parameters = inspect.signature(function).parameters
    unknown = sorted(set(defaults) - {n for n, p in parameters.items() if p.default is not inspect.Parameter.empty})
    if unknown:
        raise ValueError(f"{function.__qualname__} has no keyword arguments with defaults named {unknown}.")
    positional = [
        p
        for p in parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    ]
    copy = types.FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        tuple(defaults.get(p.name, p.default) for p in positional),
        function.__closure__,
    )
    copy.__kwdefaults__ = {
        name: defaults.get(name, value) for name, value in (function.__kwdefaults__ or {}).items()
    } or None
    copy.__doc__, copy.__qualname__, copy.__module__ = function.__doc__, function.__qualname__, function.__module__
    copy.__annotations__ = dict(function.__annotations__)
    return copy


class PixArtSigmaPipeline(PixArtAlphaPipeline):
    """PixArt-Σ text-to-image pipeline: the α pipeline with 300 caption tokens by default (see the module docstring).

    Args:
        tokenizer: the T5 tokenizer.
        text_encoder: the T5 encoder (t5-v1_1-xxl for the official models; use bfloat16 or float32, not float16).
        vae: the ``AutoencoderKL`` (the SDXL VAE for the official models).
        transformer: our :class:`~diffusers_pixart.PixArtTransformer2DModel` (any official Σ layout loads as it,
            whatever class ``model_index.json`` names).
        scheduler: DPM-Solver by default; :meth:`set_scheduler` switches to SA-Solver or IDDPM by name.
    """

    __call__ = torch.no_grad()(
        with_defaults(PixArtAlphaPipeline.__call__.__wrapped__, max_sequence_length=SIGMA_MAX_SEQUENCE_LENGTH)
    )
    encode_prompt = with_defaults(PixArtAlphaPipeline.encode_prompt, max_sequence_length=SIGMA_MAX_SEQUENCE_LENGTH)

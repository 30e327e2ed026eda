"""Which PixArt pipeline a folder or Hub repo needs (α or Σ), from the ``_class_name`` of its ``model_index.json``.

The generic entry points (``pixart generate --model``, the Space's ``PIXART_MODEL``, ``pixart convert --pipeline``)
load through :func:`pipeline_class`, so a Σ folder gets :class:`PixArtSigmaPipeline` (300 caption tokens) and
everything else :class:`PixArtAlphaPipeline`. The official Σ repos and the folders diffusers or this package save
record ``PixArtSigmaPipeline``; α ones record ``PixArtAlphaPipeline``.
"""

from __future__ import annotations

import os
from typing import Any

from diffusers import DiffusionPipeline

from .pixart_alpha import PixArtAlphaPipeline
from .pixart_sigma import PixArtSigmaPipeline

#: The model families, by the short name used in tags and records, with the name a reader is shown.
FAMILY_NAMES = {"alpha": "PixArt-α", "sigma": "PixArt-Σ"}


def family_of(pipeline_or_class_name: Any) -> str:
    """``"sigma"`` for a Σ pipeline (ours or diffusers'), its class or its class name; ``"alpha"`` otherwise."""
    if isinstance(pipeline_or_class_name, str):
        name = pipeline_or_class_name
    elif isinstance(pipeline_or_class_name, type):
        name = pipeline_or_class_name.__name__
    else:
        name = type(pipeline_or_class_name).__name__
    return "sigma" if "Sigma" in name else "alpha"


def pipeline_class(model: str | os.PathLike, **hub_kwargs: Any) -> type[PixArtAlphaPipeline]:
    """The pipeline class for the folder or Hub id ``model``: Σ when its ``model_index.json`` names a Σ pipeline.

    ``hub_kwargs`` (``revision``, ``token``, ``cache_dir``, ...) are passed to ``DiffusionPipeline.load_config``.
    """
    config = DiffusionPipeline.load_config(model, **hub_kwargs)
    name = config.get("_class_name")
    if isinstance(name, (list, tuple)):  # a custom pipeline: ["module", "Class"]
        name = name[-1]
    return PixArtSigmaPipeline if family_of(str(name or "")) == "sigma" else PixArtAlphaPipeline

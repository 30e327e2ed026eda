"""PixArt-alpha on diffusers' base classes: transformer, pipelines, conversion, training and tools."""

# diffusers resolves a component recorded as ("diffusers_pixart...", Class) through the base class of that module.
from diffusers import ModelMixin

from .models.pixart_transformer import PixArtTransformer2DModel
from .pipelines.pixart_alpha import PixArtAlphaPipeline

__version__ = "0.1.0"

__all__ = ["ModelMixin", "PixArtAlphaPipeline", "PixArtTransformer2DModel", "__version__"]

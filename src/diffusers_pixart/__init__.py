"""PixArt-alpha and PixArt-Sigma on diffusers' base classes: transformer, pipelines, conversion, training and tools."""

from diffusers import ModelMixin

from .default_model import TOY_MODEL_PATH
from .diffusers_compat import register_component_library
from .models.controlnet import PixArtControlNetModel
from .models.pixart_transformer import PixArtTransformer2DModel
from .pipelines.pixart_alpha import PixArtAlphaPipeline
from .pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline
from .pipelines.pixart_img2img import (
    PixArtAlphaImg2ImgPipeline,
    PixArtAlphaInpaintPipeline,
    PixArtSigmaImg2ImgPipeline,
    PixArtSigmaInpaintPipeline,
)
from .pipelines.pixart_sigma import PixArtSigmaPipeline

__version__ = "0.1.0"

# Register this package as a library of pipeline components, as diffusers registers transformers: a saved pipeline
# then records our transformer as ["diffusers_pixart", "PixArtTransformer2DModel"], which diffusers resolves through
# the ``ModelMixin`` above (so it stays exported), from a local folder and from the Hub alike.
register_component_library(__name__)

__all__ = [
    "TOY_MODEL_PATH",
    "ModelMixin",
    "PixArtAlphaControlNetPipeline",
    "PixArtAlphaImg2ImgPipeline",
    "PixArtAlphaInpaintPipeline",
    "PixArtAlphaPipeline",
    "PixArtControlNetModel",
    "PixArtSigmaImg2ImgPipeline",
    "PixArtSigmaInpaintPipeline",
    "PixArtSigmaPipeline",
    "PixArtTransformer2DModel",
    "__version__",
]

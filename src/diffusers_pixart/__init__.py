"""PixArt-alpha and PixArt-Sigma on diffusers' base classes: transformer, pipelines, conversion, training and tools."""

from diffusers import ModelMixin
from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES

from .default_model import TOY_MODEL_PATH
from .models.controlnet import PixArtControlNetModel
from .models.pixart_transformer import PixArtTransformer2DModel
from .pipelines.pixart_alpha import PixArtAlphaPipeline
from .pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline
from .pipelines.pixart_sigma import PixArtSigmaPipeline

__version__ = "0.1.0"

# Register this package as a library of pipeline components, as diffusers registers transformers: a saved pipeline
# then records our transformer as ["diffusers_pixart", "PixArtTransformer2DModel"], which diffusers resolves through
# the ``ModelMixin`` above, from a local folder and from the Hub alike.
LOADABLE_CLASSES.setdefault(__name__, {"ModelMixin": ["save_pretrained", "from_pretrained"]})

__all__ = [
    "TOY_MODEL_PATH",
    "ModelMixin",
    "PixArtAlphaControlNetPipeline",
    "PixArtAlphaPipeline",
    "PixArtControlNetModel",
    "PixArtSigmaPipeline",
    "PixArtTransformer2DModel",
    "__version__",
]

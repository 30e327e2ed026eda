"""Aspect-ratio buckets: the official 40-bucket tables per base resolution (PixArt-alpha and -Sigma)."""

from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
    ASPECT_RATIO_256_BIN,
    ASPECT_RATIO_512_BIN,
    ASPECT_RATIO_1024_BIN,
)
from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

#: Base resolution in pixels -> {ratio string: [height, width]}.
ASPECT_RATIO_BINS: dict[int, dict[str, list[float]]] = {
    256: ASPECT_RATIO_256_BIN,
    512: ASPECT_RATIO_512_BIN,
    1024: ASPECT_RATIO_1024_BIN,
    2048: ASPECT_RATIO_2048_BIN,
}

"""Edge maps for ControlNet training and inference: Canny, offline and deterministic.

The paper trains its ControlNet on HED edges; HED needs a network and its weights, which are not available offline
here, so Canny (OpenCV's, as the original ControlNet's Canny models use) is the edge detector of this package. Edge
maps are single-channel ``L`` images (255 on edges), the form ``PixArtAlphaControlNetPipeline`` takes as ``image``.
"""

from __future__ import annotations

import numpy as np
import PIL.Image


def canny_edges(
    image: PIL.Image.Image | np.ndarray, low_threshold: int = 100, high_threshold: int = 200
) -> PIL.Image.Image:
    """The Canny edge map of an image, as an ``L`` image of the same size (255 on edges, 0 elsewhere).

    Args:
        image: a PIL image (converted to RGB) or a uint8 array (H, W) or (H, W, 3).
        low_threshold, high_threshold: the hysteresis thresholds on the gradient magnitude (0 < low <= high).

    Raises:
        ValueError: thresholds out of order, or an array of another dtype or shape.
        ImportError: OpenCV is not installed (``pip install opencv-python-headless``).
    """
    if not 0 < low_threshold <= high_threshold:
        raise ValueError(f"Canny thresholds must satisfy 0 < low <= high, got {low_threshold} and {high_threshold}.")
    try:
        import cv2
    except ImportError as error:
        raise ImportError("Canny edges need OpenCV: `pip install opencv-python-headless`.") from error
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"Canny needs a uint8 image (H, W) or (H, W, 3), got {image.dtype} {image.shape}.")
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return PIL.Image.fromarray(cv2.Canny(gray, low_threshold, high_threshold), mode="L")

"""Edge maps for ControlNet training and inference: Canny (offline, deterministic) and HED (with its weights).

The paper trains its ControlNet on HED edges (Xie & Tu 2015). HED is a network: :class:`HEDEdgeDetector` is the
architecture of the ControlNet annotators' HED (``ControlNetHED.pth`` of ``lllyasviel/Annotators``, RGB input), and
runs where the user has that weights file. Without it, Canny (OpenCV's, as the original ControlNet's Canny models use)
is the edge detector. Edge maps are single-channel ``L`` images (255 on edges), the form
``PixArtAlphaControlNetPipeline`` takes as ``image``; :func:`make_edge_detector` picks one by name.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn

#: The edge detectors :func:`make_edge_detector` knows.
EDGE_DETECTORS = ("canny", "hed")

#: (input channels, output channels, convolutions) of HED's five VGG-16 stages; each stage but the first starts with
#: a 2x2 max-pooling and ends with a 1x1 side-output projection to one channel.
HED_STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))

EdgeDetector = Callable[[PIL.Image.Image], PIL.Image.Image]


def check_canny_thresholds(low_threshold: int, high_threshold: int) -> None:
    """Raise a ``ValueError`` unless the Canny hysteresis thresholds satisfy 0 < low <= high."""
    if not 0 < low_threshold <= high_threshold:
        raise ValueError(f"Canny thresholds must satisfy 0 < low <= high, got {low_threshold} and {high_threshold}.")


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
    check_canny_thresholds(low_threshold, high_threshold)
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


class HEDStage(nn.Module):
    """One VGG stage of HED: 3x3 convolutions with ReLU, and the 1x1 side output of its features."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int):
        super().__init__()
        self.convs = nn.Sequential(
            *[nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1) for i in range(num_convs)]
        )
        self.projection = nn.Conv2d(out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, C_out, h, w) and side logits (B, 1, h, w) of x (B, C_in, h, w)."""
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HEDEdgeDetector(nn.Module):
    """Holistically-nested edge detection with the layout of the ControlNet annotators' ``ControlNetHED.pth``.

    Five VGG-16 stages (:data:`HED_STAGES`), each giving side logits; the edge probability is the sigmoid of the mean
    of the five side logits, each upsampled (bilinear) to the input size. The input is RGB in [0, 255] minus a learned
    per-channel offset ``norm``. Load the weights with :meth:`from_file`.
    """

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for index, (in_channels, out_channels, num_convs) in enumerate(HED_STAGES, start=1):
            self.add_module(f"block{index}", HEDStage(in_channels, out_channels, num_convs))

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> HEDEdgeDetector:
        """The detector with the weights of ``path`` (a ``.pth`` state dict such as ``ControlNetHED.pth``, or
        ``.safetensors``), in eval mode on ``device``.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file does not hold this network's weights (the missing/unexpected keys are named).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"HED weights {path}: no such file (ControlNetHED.pth of lllyasviel/Annotators).")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        detector = cls()
        expected = detector.state_dict()
        missing = sorted(expected.keys() - state.keys())
        unexpected = sorted(state.keys() - expected.keys())
        shapes = [k for k in expected.keys() & state.keys() if tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or shapes:
            raise ValueError(
                f"{path} does not hold the weights of the ControlNet annotators' HED (ControlNetHED.pth): "
                f"missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {sorted(shapes)[:4]}."
            )
        detector.load_state_dict(state)
        return detector.eval().requires_grad_(False).to(device)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Edge probabilities (B, 1, H, W) in [0, 1] of RGB pixels (B, 3, H, W) in [0, 255]."""
        size = pixels.shape[-2:]
        x, sides = pixels - self.norm, []
        for index in range(1, len(HED_STAGES) + 1):
            if index > 1:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            x, side = getattr(self, f"block{index}")(x)
            sides.append(F.interpolate(side, size=size, mode="bilinear", align_corners=False))
        return torch.sigmoid(torch.stack(sides).mean(dim=0))

    @torch.no_grad()
    def edge_map(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """The HED edge map of an image, as an ``L`` image of the same size (edge probability x 255)."""
        param = self.norm
        array = np.asarray(image.convert("RGB"), dtype=np.float32)
        pixels = torch.from_numpy(array).permute(2, 0, 1)[None].to(param.device, param.dtype)
        edges = (self(pixels)[0, 0].float() * 255.0).clamp(0, 255).round().to(torch.uint8)
        return PIL.Image.fromarray(edges.cpu().numpy(), mode="L")


def make_edge_detector(
    name: str = "canny",
    *,
    hed_weights: str | os.PathLike | None = None,
    low_threshold: int = 100,
    high_threshold: int = 200,
    device: str | torch.device = "cpu",
) -> EdgeDetector:
    """An edge detector by name: image (PIL) -> edge map (PIL ``L``, same size).

    Args:
        name: ``"canny"`` (:func:`canny_edges` with the thresholds) or ``"hed"`` (:class:`HEDEdgeDetector` with the
            ``hed_weights`` file, run on ``device``).

    Raises:
        ValueError: an unknown name, or ``"hed"`` without ``hed_weights``; the errors of
            :meth:`HEDEdgeDetector.from_file` and of the Canny thresholds.
    """
    if name == "canny":
        check_canny_thresholds(low_threshold, high_threshold)
        return functools.partial(canny_edges, low_threshold=low_threshold, high_threshold=high_threshold)
    if name == "hed":
        if hed_weights is None:
            raise ValueError(
                "The HED edge detector needs its weights: pass the ControlNetHED.pth file of lllyasviel/Annotators "
                "(--hed_weights), or use --edge_detector canny."
            )
        return HEDEdgeDetector.from_file(hed_weights, device=device).edge_map
    raise ValueError(f"Unknown edge detector {name!r}: choose one of {EDGE_DETECTORS}.")

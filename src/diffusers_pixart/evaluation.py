"""Image-generation metrics: Fréchet distance on the features of a pluggable network (FID), CLIP score, contact sheets.

The paper reports FID-30K on MSCOCO with Inception features and alignment on T2I-CompBench (its toy analogue is
:mod:`diffusers_pixart.toy.compbench`). No weights can be downloaded here, so every network is passed in: the FID
Inception network from a local TorchScript file (:func:`load_inception`) or any callable mapping images to features;
CLIP from a local folder or a Hub id (:func:`load_clip`) or as a model and processor built in code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

#: A feature network: images (B, 3, H, W) float in [0, 1] -> features (B, D).
FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def sample_images(
    pipe: Any,
    prompts: Sequence[str],
    *,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 4.5,
    resolution: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    per_prompt: Mapping[str, Sequence[Any]] | None = None,
    **pipeline_kwargs: Any,
) -> list[Image.Image]:
    """Images of ``prompts`` from a PixArt pipeline, ``batch_size`` at a time; image ``i`` uses the seed ``seed + i``.

    Args:
        resolution: the square side in pixels (default: the transformer's ``sample_size`` x the VAE factor).
        per_prompt: pipeline arguments with one entry per prompt (e.g. a ControlNet's ``image``), batched like the
            prompts.
        pipeline_kwargs: further pipeline arguments, the same for every batch (``controlnet_conditioning_scale``).
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    per_prompt = dict(per_prompt or {})
    for name, values in per_prompt.items():
        if len(values) != len(prompts):
            raise ValueError(f"`per_prompt[{name!r}]` has {len(values)} entries for {len(prompts)} prompts.")
    resolution = resolution or pipe.transformer.config.sample_size * pipe.vae_scale_factor
    images = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        generators = [torch.Generator(device).manual_seed(seed + start + i) for i in range(len(batch))]
        extra = {name: list(values[start : start + batch_size]) for name, values in per_prompt.items()}
        images += pipe(
            batch,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=resolution,
            width=resolution,
            generator=generators,
            use_resolution_binning=False,
            **extra,
            **pipeline_kwargs,
        ).images
    return images


def check_images(images: Sequence[Image.Image], name: str = "images") -> None:
    """Raise ValueError unless ``images`` is a non-empty sequence of RGB PIL images."""
    if len(images) == 0:
        raise ValueError(f"`{name}` is empty.")
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"`{name}[{index}]` is a {type(image).__name__}, not a PIL image.")
        if image.mode != "RGB":
            raise ValueError(f"`{name}[{index}]` has mode {image.mode!r}; convert it with image.convert('RGB').")


def images_to_tensor(images: Sequence[Image.Image], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Stack RGB images into a float tensor (B, 3, H, W) in [0, 1].

    Args:
        size: (height, width) to resize every image to (bicubic); ``None`` requires all images to share one size.
    """
    check_images(images)
    if size is not None:
        images = [image.resize((size[1], size[0]), Image.Resampling.BICUBIC) for image in images]
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        raise ValueError(f"Images of different sizes {sorted(sizes)}: pass a `size` to resize them to.")
    array = np.stack([np.asarray(image) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def extract_features(
    images: Sequence[Image.Image],
    feature_extractor: FeatureExtractor,
    batch_size: int = 32,
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Features of ``images`` from ``feature_extractor``, batch by batch.

    Returns:
        float64 array (N, D).
    """
    check_images(images)
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    features = []
    for start in range(0, len(images), batch_size):
        batch = images_to_tensor(images[start : start + batch_size], image_size)
        output = feature_extractor(batch)
        if output.ndim != 2 or output.shape[0] != batch.shape[0]:
            raise ValueError(f"The feature network must return (B, D) features; got shape {tuple(output.shape)}.")
        features.append(output.double().cpu().numpy())
    return np.concatenate(features)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D); needs N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"Need features (N, D) with N >= 2 to estimate a covariance, got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))``. The trace of the square root is the sum
    of the square roots of the eigenvalues of ``sigma1 @ sigma2``, which are real and non-negative for covariance
    matrices (the product is similar to ``sigma1^(1/2) sigma2 sigma1^(1/2)``); round-off below zero is clipped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    dim = mu1.shape[0]
    if mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"Mismatched statistics: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}."
        )
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues.real, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid(
    generated: Sequence[Image.Image],
    reference: Sequence[Image.Image],
    feature_extractor: FeatureExtractor,
    batch_size: int = 32,
    image_size: tuple[int, int] | None = None,
) -> float:
    """Fréchet distance between the features of generated and reference images (FID with an Inception network).

    Each set needs at least two images; the sets may differ in size and count (``image_size`` resizes them all).
    """
    check_images(generated, "generated")
    check_images(reference, "reference")
    stats = [
        feature_statistics(extract_features(images, feature_extractor, batch_size, image_size))
        for images in (generated, reference)
    ]
    return frechet_distance(*stats[0], *stats[1])


def load_inception(path: str | os.PathLike) -> FeatureExtractor:
    """The FID Inception-v3 network from a local TorchScript file (``inception-2015-12-05.pt`` of NVIDIA's StyleGAN
    metrics, the TF-FID network, whose ``forward(images_uint8, return_features=True)`` gives 2048 pool features and
    resizes internally).

    Returns:
        A :data:`FeatureExtractor`: images (B, 3, H, W) in [0, 1] -> (B, 2048).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No Inception TorchScript file at {path}.")
    network = torch.jit.load(str(path), map_location="cpu").eval()

    def inception_features(images: torch.Tensor) -> torch.Tensor:
        return network((images * 255).round().clamp(0, 255).to(torch.uint8), return_features=True)

    return inception_features


def load_clip(name_or_path: str | os.PathLike):
    """A ``transformers`` CLIP model (in eval mode) and its processor from a local folder or a Hub id."""
    from transformers import AutoProcessor, CLIPModel

    return CLIPModel.from_pretrained(name_or_path).eval(), AutoProcessor.from_pretrained(name_or_path)


def _embedding(output) -> torch.Tensor:
    """``get_image_features``/``get_text_features`` give a tensor or (transformers 5) an output with the pooled one."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def clip_scores(
    images: Sequence[Image.Image], prompts: Sequence[str], model, processor, batch_size: int = 32
) -> np.ndarray:
    """CLIP score of each image-prompt pair: ``100 * max(cos(image embedding, text embedding), 0)``.

    Prompts longer than the text encoder's positions are truncated. ``model`` is a ``transformers`` CLIP model and
    ``processor`` its processor (text and images).

    Returns:
        float64 array (N,).
    """
    check_images(images)
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    max_length = model.config.text_config.max_position_embeddings
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(images), batch_size):
        inputs = processor(
            text=list(prompts[start : start + batch_size]),
            images=list(images[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        ).to(device)
        image_embeds = _embedding(model.get_image_features(pixel_values=inputs["pixel_values"]))
        text_embeds = _embedding(
            model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
        )
        cosine = torch.nn.functional.cosine_similarity(image_embeds, text_embeds, dim=-1)
        scores.append((100.0 * cosine.clamp(min=0)).double().cpu().numpy())
    return np.concatenate(scores)


def contact_sheet(
    images: Sequence[Image.Image],
    columns: int | None = None,
    padding: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """One RGB image with ``images`` in a grid, row by row (``columns`` defaults to a near-square grid).

    Each cell is as large as the largest image; smaller images are centred in theirs.
    """
    if len(images) == 0:
        raise ValueError("No images for a contact sheet.")
    columns = columns or math.ceil(math.sqrt(len(images)))
    if columns < 1 or padding < 0:
        raise ValueError(f"Need columns >= 1 and padding >= 0, got {columns} and {padding}.")
    rows = math.ceil(len(images) / columns)
    cell_w, cell_h = max(im.width for im in images), max(im.height for im in images)
    sheet = Image.new(
        "RGB", (columns * cell_w + (columns + 1) * padding, rows * cell_h + (rows + 1) * padding), background
    )
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        x = padding + col * (cell_w + padding) + (cell_w - image.width) // 2
        y = padding + row * (cell_h + padding) + (cell_h - image.height) // 2
        sheet.paste(image.convert("RGB"), (x, y))
    return sheet

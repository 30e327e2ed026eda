"""Image-to-image and inpainting: the three places where they change the text-to-image sampling loop.

**img2img** (SDEdit, Meng et al. 2022): the image's latents are noised to the step where sampling starts, and only the
last ``int(num_inference_steps * strength)`` steps run (diffusers' img2img rule): ``strength`` 1 starts from pure
noise, small strengths keep the image's layout and colours.

**Inpainting** with a text-to-image model (no extra mask channels, as in diffusers' Stable Diffusion inpainting with a
4-channel UNet): the same start, and after every step the latents outside the mask are replaced by the image's
latents noised to the next step, so that the model repaints only the masked region, in the context of the rest.
After the last step they are the image's latents, so that decoded, pixels away from the mask are what the VAE round
trip ``vae.decode(vae.encode(image))`` gives (near the mask the decoder mixes both sides).

:class:`ImageEdit` holds what a call needs (the image's latents, the noise, the strength, the latent-resolution mask)
and does the three steps. ``PixArtAlphaImg2ImgPipeline`` and ``PixArtAlphaInpaintPipeline`` pass the user's inputs
as an :class:`EditRequest` to the text-to-image pipeline's ``__call__``, which turns it into an :class:`ImageEdit`
once it knows the generation size (after resolution binning).
Shapes: ``B`` images, ``C`` latent channels, ``h x w`` the latent grid (pixels / VAE factor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import SchedulerMixin
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from PIL import ImageFilter


def check_strength(strength: float, num_inference_steps: int) -> None:
    """``strength`` must be in (0, 1] and leave at least one of the ``num_inference_steps`` to run."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"`strength` must be in (0, 1], got {strength}.")
    if int(num_inference_steps * strength) < 1:
        raise ValueError(
            f"`strength` {strength} x `num_inference_steps` {num_inference_steps} leaves no step to run "
            f"(int({num_inference_steps} * {strength}) = 0): raise one of them."
        )


def image_size(image: PipelineImageInput) -> tuple[int, int]:
    """(height, width) in pixels of the first image of a PIL image, array (H, W, C) / (B, H, W, C), tensor
    (C, H, W) / (B, C, H, W), or a list of them."""
    first = image[0] if isinstance(image, list) else image
    if isinstance(first, PIL.Image.Image):
        return first.height, first.width
    if isinstance(first, np.ndarray):
        return tuple(first.shape[-3:-1]) if first.ndim >= 3 else tuple(first.shape)
    if isinstance(first, torch.Tensor):
        return tuple(first.shape[-2:])
    raise ValueError(f"`image` must be a PIL image, a numpy array or a torch tensor (or a list), got {type(first)}.")


def prepare_image(
    processor: VaeImageProcessor,
    image: PipelineImageInput,
    height: int,
    width: int,
    crop: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """The image(s) as (B, 3, height, width) in [-1, 1], resized (after cropping to ``crop`` = (x1, y1, x2, y2))."""
    resize_mode = "fill" if crop is not None else "default"
    return processor.preprocess(image, height=height, width=width, crops_coords=crop, resize_mode=resize_mode)


def mask_to_pil(mask_image: PipelineImageInput) -> PIL.Image.Image:
    """One mask as a single-channel PIL image ("L"): a PIL image, an array (H, W), (H, W, 1|3|4) or a tensor
    (H, W), (1|3|4, H, W), (1, 1|3|4, H, W), in [0, 1] or [0, 255]; colour masks are averaged over RGB.
    A ``ValueError`` names anything else."""
    mask = mask_image[0] if isinstance(mask_image, list) and len(mask_image) == 1 else mask_image
    if isinstance(mask, PIL.Image.Image):
        return mask.convert("L")
    if isinstance(mask, torch.Tensor):
        array = mask.detach().cpu().float().numpy()
        array = array[0] if array.ndim == 4 and array.shape[0] == 1 else array
        mask = np.moveaxis(array, 0, -1) if array.ndim == 3 else array
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"`mask_image` must be one PIL image, numpy array or torch tensor, got {type(mask_image)}.")
    if mask.ndim == 3 and mask.shape[-1] in (1, 3, 4):
        mask = mask[..., :3].mean(axis=-1)
    if mask.ndim != 2:
        raise ValueError(f"`mask_image` must be one single-channel (or RGB/RGBA) image, got shape {mask.shape}.")
    scale = 255.0 if mask.max(initial=0.0) <= 1.0 else 1.0
    return PIL.Image.fromarray(np.clip(mask * scale, 0, 255).astype(np.uint8), mode="L")


def prepare_mask(
    mask: PIL.Image.Image,
    height: int,
    width: int,
    vae_scale_factor: int,
    blur: float = 0.0,
    crop: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """The mask (white = repaint) at the latent grid: (1, 1, height / f, width / f) in [0, 1].

    Without ``blur`` it is binary (pixels above half grey repaint); with it, a Gaussian blur of that radius in pixels
    makes a soft edge, which the latents blend across.
    """
    if blur < 0:
        raise ValueError(f"`mask_blur` must be >= 0 pixels, got {blur}.")
    if crop is not None:
        mask = mask.crop(crop)
    binary = mask.point(lambda value: 255 if value >= 128 else 0)
    soft = binary.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else binary
    pixels = torch.from_numpy(np.asarray(soft.resize((width, height), PIL.Image.BILINEAR), dtype=np.float32) / 255.0)
    latent_size = (height // vae_scale_factor, width // vae_scale_factor)
    latent_mask = F.interpolate(pixels[None, None], size=latent_size, mode="area")
    return latent_mask if blur > 0 else (latent_mask > 0).float()


def encode_image(vae, pixels: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Latents (B, C, h, w) of images (B, 3, H, W) in [-1, 1]: a sample of the VAE's posterior times its scaling
    factor (one generator per image when a list is given), as diffusers' img2img pipelines encode."""
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    if isinstance(generator, list):
        if len(generator) != pixels.shape[0]:
            raise ValueError(f"`generator` is a list of {len(generator)} generators for {pixels.shape[0]} images.")
        latents = torch.cat(
            [vae.encode(pixels[i : i + 1]).latent_dist.sample(g) for i, g in enumerate(generator)], dim=0
        )
    else:
        latents = vae.encode(pixels).latent_dist.sample(generator)
    return latents * vae.config.scaling_factor


@dataclass
class ImageEdit:
    """An img2img or inpainting call's changes to the sampling loop.

    Args:
        image_latents: the image's latents (B, C, h, w), already scaled.
        noise: the noise they are noised with (B, C, h, w), one draw for the whole call.
        strength: in (0, 1]: the share of the schedule that runs.
        mask: (B or 1, 1, h, w) in [0, 1], 1 where the model repaints; ``None`` for img2img.
    """

    image_latents: torch.Tensor
    noise: torch.Tensor
    strength: float
    mask: torch.Tensor | None = None

    def timesteps(
        self, scheduler: SchedulerMixin, timesteps: torch.Tensor, num_inference_steps: int
    ) -> tuple[torch.Tensor, int]:
        """The steps that run: the last ``int(num_inference_steps * strength)`` of the schedule (and their count).
        The sampling loop then tells the scheduler where its schedule begins (``set_begin_index``)."""
        run = min(int(num_inference_steps * self.strength), num_inference_steps)
        return timesteps[(num_inference_steps - run) * scheduler.order :], run

    def _noised(self, scheduler: SchedulerMixin, timestep: torch.Tensor) -> torch.Tensor:
        """The image's latents at ``timestep`` of the forward process (the scheduler's own ``add_noise``)."""
        steps = timestep.reshape(1).repeat(self.image_latents.shape[0])
        return scheduler.add_noise(self.image_latents, self.noise, steps)

    def initial_latents(self, scheduler: SchedulerMixin, first_timestep: torch.Tensor) -> torch.Tensor:
        """Where sampling starts: the image's latents noised to the first step that runs (B, C, h, w)."""
        return self._noised(scheduler, first_timestep)

    def after_step(
        self, scheduler: SchedulerMixin, latents: torch.Tensor, next_timestep: torch.Tensor | None
    ) -> torch.Tensor:
        """Inpainting: outside the mask, the image's latents at the next step (clean after the last one)."""
        if self.mask is None:
            return latents
        known = self.image_latents if next_timestep is None else self._noised(scheduler, next_timestep)
        mask = self.mask.to(latents.dtype)
        return (1.0 - mask) * known.to(latents.dtype) + mask * latents


@dataclass
class EditRequest:
    """The user's img2img / inpainting inputs, before the generation size is known.

    Args:
        image: the image(s) to edit (PIL, array or tensor in [0, 1] / [-1, 1], or a list; one per prompt, or one).
        strength: in (0, 1]: how much of the schedule runs (1: from pure noise).
        mask_image: for inpainting, one mask of the image's size (white = repaint).
        mask_blur: Gaussian blur of the mask's edge in pixels (0: a hard edge).
        crop: (x1, y1, x2, y2) in the image's pixels: only this region is edited, at the generation size
            (``padding_mask_crop``), or None.
    """

    image: PipelineImageInput
    strength: float
    mask_image: PipelineImageInput | None = None
    mask_blur: float = 0.0
    crop: tuple[int, int, int, int] | None = None

    def check(self, num_inference_steps: int) -> None:
        """Named errors for a strength outside (0, 1] or leaving no step, a mask that is not one image, or an image
        and a mask of different sizes."""
        check_strength(self.strength, num_inference_steps)
        if self.mask_image is not None:
            image, mask = image_size(self.image), image_size(self.mask_image)
            if image != mask:
                raise ValueError(f"`image` is {image[0]}x{image[1]} (HxW) but `mask_image` is {mask[0]}x{mask[1]}.")
            mask_to_pil(self.mask_image)

    def prepare(
        self,
        pipeline: Any,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        noise: torch.Tensor | None = None,
    ) -> ImageEdit:
        """The :class:`ImageEdit` of a call generating ``batch_size`` images of ``height`` x ``width`` pixels: the
        image(s) resized and encoded (repeated to the batch), the noise (``noise``, else drawn from ``generator``),
        and the mask at the latent grid."""
        pixels = prepare_image(pipeline.image_processor, self.image, height, width, self.crop)
        if batch_size % pixels.shape[0]:
            raise ValueError(f"{pixels.shape[0]} images for a batch of {batch_size}: pass one, or one per prompt.")
        pixels = pixels.repeat_interleave(batch_size // pixels.shape[0], dim=0)
        latents = encode_image(pipeline.vae, pixels, generator).to(device=device, dtype=dtype)
        if noise is None:
            noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=dtype)
        elif noise.shape != latents.shape:
            raise ValueError(f"`latents` has shape {tuple(noise.shape)}, expected {tuple(latents.shape)}.")
        mask = None
        if self.mask_image is not None:
            mask_pil = mask_to_pil(self.mask_image)
            mask = prepare_mask(mask_pil, height, width, pipeline.vae_scale_factor, self.mask_blur, self.crop)
            mask = mask.to(device=device, dtype=dtype)
        return ImageEdit(latents, noise.to(device=device, dtype=dtype), self.strength, mask)

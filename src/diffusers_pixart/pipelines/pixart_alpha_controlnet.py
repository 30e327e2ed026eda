"""Text-to-image with a control image (edges, ...) through PixArt-alpha's ControlNet (paper appendix A.9).

:class:`PixArtAlphaControlNetPipeline` is :class:`PixArtAlphaPipeline` plus a ``controlnet`` component and two call
arguments, ``image`` and ``controlnet_conditioning_scale``. Everything else (prompt encoding, binning, guidance,
schedulers, decoding) is the base pipeline's: only its per-step :meth:`~PixArtAlphaPipeline.predict` is overridden to
add the ControlNet's block residuals. The control image is encoded by the pipeline's VAE (the latent mean, scaled by
the VAE factor) at the size the latents are generated at, and controls both branches of classifier-free guidance.

A call's control image travels with the call (a :class:`Control` handed to ``predict``), never through the pipeline
object, so one pipeline serves concurrent calls (threads) with different control images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, SchedulerMixin
from transformers import T5EncoderModel, T5Tokenizer

from ..models.controlnet import PixArtControlNetModel
from ..models.pixart_transformer import PixArtTransformer2DModel
from .pixart_alpha import PixArtAlphaPipeline

#: PIL modes accepted as control images (grayscale edge maps become RGB).
CONTROL_IMAGE_MODES = ("RGB", "L")

ControlImage = PIL.Image.Image | np.ndarray | torch.Tensor | list


def control_image_to_tensor(image: ControlImage) -> torch.Tensor:
    """A control image (or a list of them) as a float tensor (n, 3, H, W) in [0, 1].

    Accepts PIL images of mode RGB or L, arrays (H, W), (H, W, C) or (n, H, W, C) and tensors (C, H, W) or
    (n, C, H, W) with C = 1 or 3 and values in [0, 1] (uint8 arrays in [0, 255]).

    Raises:
        ValueError: another PIL mode, another channel count or layout, values out of range, or images of
            different sizes.
    """
    parts = []
    for item in image if isinstance(image, list) else [image]:
        if isinstance(item, PIL.Image.Image):
            if item.mode not in CONTROL_IMAGE_MODES:
                raise ValueError(
                    f"Control image of PIL mode {item.mode!r}: use one of {CONTROL_IMAGE_MODES} "
                    "(e.g. `image.convert('RGB')`)."
                )
            item = np.asarray(item.convert("RGB"))
        if isinstance(item, np.ndarray):
            array = item.astype(np.float32) / 255.0 if item.dtype == np.uint8 else item.astype(np.float32)
            array = array[..., None] if array.ndim == 2 else array
            array = array[None] if array.ndim == 3 else array
            if array.ndim != 4:
                raise ValueError(f"A control image array has shape {item.shape}: (H, W, C) or (n, H, W, C) expected.")
            item = torch.from_numpy(array).permute(0, 3, 1, 2)
        if not isinstance(item, torch.Tensor):
            raise ValueError(f"A control image is a {type(item).__name__}: a PIL image, array or tensor expected.")
        tensor = item[None] if item.ndim == 3 else item
        if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
            raise ValueError(
                f"A control image has shape {tuple(item.shape)}: 1 or 3 channels expected, as (C, H, W) or "
                "(n, C, H, W) tensors and (H, W, C) arrays."
            )
        tensor = tensor.float()
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
            raise ValueError(
                f"Control image values span [{tensor.min():.3g}, {tensor.max():.3g}]: [0, 1] expected "
                "(or uint8 arrays in [0, 255])."
            )
        parts.append(tensor.expand(-1, 3, -1, -1))
    sizes = sorted({tuple(part.shape[-2:]) for part in parts})
    if len(sizes) > 1:
        raise ValueError(f"The control images have different sizes (height, width) {sizes}: give one size.")
    return torch.cat(parts)


@dataclass
class Control:
    """One call's control: its pixels (n, 3, H, W) in [0, 1], one per generated image, and the ControlNet's weight.

    ``latents`` holds their VAE latents once the denoising loop has asked for them at its latent size.
    """

    pixels: torch.Tensor
    scale: float = 1.0
    latents: torch.Tensor | None = None


class PixArtAlphaControlNetPipeline(PixArtAlphaPipeline):
    """PixArt-alpha text-to-image guided by a control image.

    Args:
        tokenizer, text_encoder, vae, transformer, scheduler: as for :class:`PixArtAlphaPipeline`.
        controlnet: a :class:`PixArtControlNetModel` trained for ``transformer``.
    """

    model_cpu_offload_seq = "text_encoder->controlnet->transformer->vae"

    def __init__(
        self,
        tokenizer: T5Tokenizer | None,
        text_encoder: T5EncoderModel | None,
        vae: AutoencoderKL,
        transformer: PixArtTransformer2DModel,
        controlnet: PixArtControlNetModel,
        scheduler: SchedulerMixin,
    ):
        super().__init__(tokenizer, text_encoder, vae, transformer, scheduler)
        self.register_modules(controlnet=controlnet)
        controlnet.check_transformer(transformer)

    def control_latents(self, pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """VAE latents (n, C, height / f, width / f) of control pixels (n, 3, H, W) in [0, 1], resized to the size.

        The latent mean (no sampling noise), times the VAE's scaling factor, as the latents of the base model.
        """
        if tuple(pixels.shape[-2:]) != (height, width):
            pixels = F.interpolate(pixels, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        pixels = (2 * pixels - 1).to(device=self.vae.device, dtype=self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor

    def predict(
        self,
        model_input: torch.Tensor,
        t: torch.Tensor,
        prompt_embeds: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor | None],
        block_residuals: list[torch.Tensor] | None = None,
        control: Control | None = None,
    ) -> torch.Tensor:
        """The base prediction with the ControlNet's residuals for ``control`` (without one, the base prediction);
        see :meth:`PixArtAlphaPipeline.predict`."""
        if control is None:
            return super().predict(
                model_input, t, prompt_embeds, prompt_attention_mask, added_cond_kwargs, block_residuals
            )
        if control.latents is None or tuple(control.latents.shape[-2:]) != tuple(model_input.shape[-2:]):
            size = tuple(s * self.vae_scale_factor for s in model_input.shape[-2:])
            control.latents = self.control_latents(control.pixels, *size)
        latents = control.latents.to(model_input.device, model_input.dtype)
        latents = torch.cat([latents] * (model_input.shape[0] // latents.shape[0]))  # both branches of CFG
        residuals = self.controlnet(
            self.transformer,
            model_input,
            latents,
            prompt_embeds,
            t.expand(model_input.shape[0]).to(model_input.device),
            added_cond_kwargs=added_cond_kwargs,
            encoder_attention_mask=prompt_attention_mask,
            conditioning_scale=control.scale,
        )
        return super().predict(model_input, t, prompt_embeds, prompt_attention_mask, added_cond_kwargs, residuals)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: ControlImage | None = None,
        controlnet_conditioning_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        **kwargs: Any,
    ):
        """Generate images from text and a control image.

        Args:
            prompt: the prompt(s) (or ``prompt_embeds`` in ``kwargs``).
            image: the control image(s): one for all prompts or one per prompt; PIL (RGB or L), arrays or tensors
                in [0, 1] (see :func:`control_image_to_tensor`).
            controlnet_conditioning_scale: weight of the control (0 gives the base model's images).
            height, width: output size; default to the control image's size, and must equal it when given.
            num_images_per_prompt: images per prompt, all with the prompt's control image.
            kwargs: every other argument of :meth:`PixArtAlphaPipeline.__call__`.

        Returns:
            As :meth:`PixArtAlphaPipeline.__call__`.
        """
        if image is None:
            raise ValueError("`image` (the control image) is required.")
        pixels = control_image_to_tensor(image)
        image_height, image_width = pixels.shape[-2:]
        height, width = height or image_height, width or image_width
        if (height, width) != (image_height, image_width):
            raise ValueError(
                f"The control image is {image_height}x{image_width} (height x width) but {height}x{width} was asked: "
                "resize the control image, or leave `height`/`width` out."
            )
        prompt_embeds = kwargs.get("prompt_embeds")
        batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else len(prompt_embeds)
        if pixels.shape[0] not in (1, batch):
            raise ValueError(f"{pixels.shape[0]} control images for {batch} prompts: give one, or one per prompt.")
        pixels = pixels.expand(batch, -1, -1, -1).repeat_interleave(num_images_per_prompt, dim=0)
        control = Control(pixels, controlnet_conditioning_scale)
        return super().__call__(
            prompt,
            height=height,
            width=width,
            num_images_per_prompt=num_images_per_prompt,
            predict=functools.partial(self.predict, control=control),
            **kwargs,
        )

"""Image-to-image and inpainting with PixArt-α and PixArt-Σ: the text-to-image pipelines given an image (and a mask).

Each class only turns its arguments into an :class:`~.editing.EditRequest` and calls the text-to-image pipeline's
``__call__``, whose sampling loop starts from the noised image and, for inpainting, keeps the image outside the mask
(:mod:`.editing`). Everything else — caption handling, samplers by name, guidance, resolution binning, LoRA, low-memory
mode, callbacks — is the text-to-image pipeline's. The Σ classes combine the same code with Σ's defaults (300 caption
tokens) through the class order: ``PixArtSigmaImg2ImgPipeline`` is the img2img part over ``PixArtSigmaPipeline``.

    pipe = PixArtAlphaImg2ImgPipeline.from_pretrained("PixArt-alpha/PixArt-XL-2-1024-MS", torch_dtype=torch.float16)
    image = pipe("a watercolour of a lighthouse", image=photo, strength=0.6).images[0]
    pipe = PixArtAlphaInpaintPipeline.from_pipe(pipe)  # same weights, same dtype
    image = pipe("a red sailing boat", image=photo, mask_image=mask, strength=0.9).images[0]

The size defaults to the image's own; with resolution binning the model generates at the nearest size of its table and
the result is resized back.
"""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from diffusers import ImagePipelineOutput
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor

from .editing import EditRequest, image_size, mask_to_pil
from .pixart_alpha import PixArtAlphaPipeline
from .pixart_sigma import PixArtSigmaPipeline


def _size(image: PipelineImageInput | None, height: int | None, width: int | None) -> tuple[int, int]:
    """The generation size: ``height`` x ``width`` where given, else the image's."""
    if image is None:
        raise ValueError("`image` is required: the image to start from.")
    image_height, image_width = image_size(image)
    return height or image_height, width or image_width


class PixArtAlphaImg2ImgPipeline(PixArtAlphaPipeline):
    """PixArt-α image-to-image (SDEdit): the text-to-image pipeline started from a noised image.

    Same components and loading as :class:`PixArtAlphaPipeline`; ``__call__`` takes its arguments plus ``image`` and
    ``strength``.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PipelineImageInput | None = None,
        strength: float = 0.8,
        height: int | None = None,
        width: int | None = None,
        **kwargs: Any,
    ) -> ImagePipelineOutput | tuple:
        """Edit ``image`` towards ``prompt``.

        Args:
            prompt: the prompt(s) (or ``prompt_embeds``, as for text-to-image).
            image: the image(s) to start from: PIL, numpy (H, W, C) in [0, 1], tensor (C, H, W) in [-1, 1], or a
                list (one, or one per prompt).
            strength: in (0, 1]: ``int(num_inference_steps * strength)`` steps run, from the image noised to the
                first of them; 1 starts from (almost) pure noise.
            height, width: the output size (default: the image's).
            kwargs: every argument of :meth:`PixArtAlphaPipeline.__call__` (steps, guidance, sampler, seed, ...).
        """
        height, width = _size(image, height, width)
        request = EditRequest(image, strength)
        return super().__call__(prompt, height=height, width=width, image_edit=request, **kwargs)


class PixArtAlphaInpaintPipeline(PixArtAlphaPipeline):
    """PixArt-α inpainting: repaint the white part of a mask, keep the rest (a text-to-image model, no mask channels).

    Same components and loading as :class:`PixArtAlphaPipeline`; ``__call__`` takes its arguments plus ``image``,
    ``mask_image``, ``strength``, ``mask_blur`` and ``padding_mask_crop``.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PipelineImageInput | None = None,
        mask_image: PipelineImageInput | None = None,
        strength: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        mask_blur: float = 0.0,
        padding_mask_crop: int | None = None,
        **kwargs: Any,
    ) -> ImagePipelineOutput | tuple:
        """Repaint the masked part of ``image`` as ``prompt`` describes.

        Args:
            prompt: the prompt(s) (or ``prompt_embeds``).
            image: the image(s) to edit (as for img2img).
            mask_image: one mask of the image's size, white (> half grey) where the model repaints; PIL, numpy
                (H, W) / (H, W, 1|3|4) or tensor, in [0, 1] or [0, 255].
            strength: in (0, 1]: 1 repaints the masked region from noise; lower keeps more of what was there.
            height, width: the output size (default: the image's).
            mask_blur: Gaussian blur of the mask's edge in pixels (0: a hard edge).
            padding_mask_crop: if set, only the region around the mask (its bounding box grown by this many pixels,
                to the output's aspect ratio) is generated, at the full output size, and pasted back into the
                original image (PIL output only), as diffusers' inpainting pipelines do.
            kwargs: every argument of :meth:`PixArtAlphaPipeline.__call__`.
        """
        height, width = _size(image, height, width)
        if mask_image is None:
            raise ValueError("`mask_image` is required: white where the model repaints.")
        crop = None
        if padding_mask_crop is not None:
            if padding_mask_crop < 0:
                raise ValueError(f"`padding_mask_crop` must be >= 0 pixels, got {padding_mask_crop}.")
            if not isinstance(image, PIL.Image.Image) or kwargs.get("output_type", "pil") != "pil":
                raise ValueError("`padding_mask_crop` needs one PIL `image` and `output_type='pil'`.")
            crop = VaeImageProcessor.get_crop_region(mask_to_pil(mask_image), width, height, pad=padding_mask_crop)
        request = EditRequest(image, strength, mask_image, mask_blur, crop)
        output = super().__call__(prompt, height=height, width=width, image_edit=request, **kwargs)
        if crop is None:
            return output
        images = output.images if isinstance(output, ImagePipelineOutput) else output[0]
        mask = mask_to_pil(mask_image)
        pasted = [self.image_processor.apply_overlay(mask, image, generated, crop) for generated in images]
        return ImagePipelineOutput(images=pasted) if isinstance(output, ImagePipelineOutput) else (pasted,)


class PixArtSigmaImg2ImgPipeline(PixArtAlphaImg2ImgPipeline, PixArtSigmaPipeline):
    """PixArt-Σ image-to-image: :class:`PixArtAlphaImg2ImgPipeline` over :class:`PixArtSigmaPipeline`'s defaults."""


class PixArtSigmaInpaintPipeline(PixArtAlphaInpaintPipeline, PixArtSigmaPipeline):
    """PixArt-Σ inpainting: :class:`PixArtAlphaInpaintPipeline` over :class:`PixArtSigmaPipeline`'s defaults."""

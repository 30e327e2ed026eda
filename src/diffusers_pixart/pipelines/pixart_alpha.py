"""Text-to-image generation with PixArt-alpha: T5 caption, DPM-Solver (or SA-Solver, IDDPM), VAE decode.

The call signature and defaults are those of diffusers' ``PixArtAlphaPipeline`` (20 steps, guidance 4.5, 120 caption
tokens, caption cleaning, resolution binning), and with the same components and seed the images are the same.
Differences, all fixes of known defects: the final latents are cast to the VAE's dtype before decoding; one-step
sampling works with every scheduler; with IDDPM the learned variance is used; micro-conditions follow the model's own
``use_additional_conditions``; ``callback_on_step_end`` is supported.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, SchedulerMixin
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PixArtImageProcessor
from diffusers.utils import deprecate, logging
from diffusers.utils.torch_utils import randn_tensor
from transformers import T5EncoderModel, T5Tokenizer

from ..data.buckets import bucket_table
from ..diffusers_compat import retrieve_timesteps
from ..loaders import PixArtLoraLoaderMixin
from ..models.attention import caption_cache
from ..models.pixart_transformer import PixArtTransformer2DModel
from ..schedulers import make_scheduler, uses_learned_variance
from ..text import CaptionProcessingMixin, TextEncodingCache
from .editing import EditRequest
from .low_memory import DEFAULT_VAE_TILE_SIZE, LowMemoryMode, enable_low_memory, pretrained_text_encoder_loader

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")

#: diffusers' warning for the ``mask_feature`` argument, which it accepts and ignores.
MASK_FEATURE_DEPRECATION = (
    "The use of `mask_feature` is deprecated. It is no longer used in any computation and that doesn't affect the end "
    "results. It will be removed in a future version."
)


def check_deprecated_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    """diffusers' deprecated ``mask_feature=`` passes with its ``FutureWarning``; any other unknown keyword raises.

    Raises:
        TypeError: a keyword argument that ``method`` does not take.
    """
    if "mask_feature" in kwargs:
        deprecate("mask_feature", "1.0.0", MASK_FEATURE_DEPRECATION, standard_warn=False)
    unknown = sorted(set(kwargs) - {"mask_feature"})
    if unknown:
        raise TypeError(f"{method}() got unexpected keyword arguments {unknown}")


class PixArtAlphaPipeline(DiffusionPipeline, PixArtLoraLoaderMixin, CaptionProcessingMixin):
    """PixArt-alpha text-to-image pipeline.

    Args:
        tokenizer: the T5 tokenizer (120 tokens).
        text_encoder: the T5 encoder (t5-v1_1-xxl for the official models; use bfloat16 or float32, not float16).
        vae: the ``AutoencoderKL`` (sd-vae-ft-ema for the official models).
        transformer: our :class:`PixArtTransformer2DModel`.
        scheduler: DPM-Solver by default; :meth:`set_scheduler` switches to SA-Solver or IDDPM by name.
    """

    _optional_components = ["tokenizer", "text_encoder"]
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "prompt_attention_mask"]
    #: The low-memory mode's state, once :meth:`enable_low_memory` has switched it on.
    _low_memory: LowMemoryMode | None = None

    def __init__(
        self,
        tokenizer: T5Tokenizer | None,
        text_encoder: T5EncoderModel | None,
        vae: AutoencoderKL,
        transformer: PixArtTransformer2DModel,
        scheduler: SchedulerMixin,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
        self.image_processor = PixArtImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self._text_cache = TextEncodingCache()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> PixArtAlphaPipeline:
        """Load a pipeline folder or Hub repo; the transformer is always ours, whatever ``model_index.json`` names.

        The official repos name diffusers' legacy ``Transformer2DModel``; loading them here gives our
        :class:`PixArtTransformer2DModel` (same config and weights; see :meth:`load_config`), and ``save_pretrained``
        then records ours. Every keyword argument of ``DiffusionPipeline.from_pretrained`` is accepted, and diffusers
        loads every component, ours too (with its variant checks, dtypes, device maps and "Loaded ..." log lines).
        ``low_memory=True`` loads the T5 encoder int8-quantized and switches on :meth:`enable_low_memory` (the
        encoder reloads from the same place).
        """
        low_memory = kwargs.pop("low_memory", False)
        if not low_memory:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        loader = pretrained_text_encoder_loader(pretrained_model_name_or_path, kwargs)
        if "text_encoder" not in kwargs:
            kwargs["text_encoder"] = loader()
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        pipe.enable_low_memory(text_encoder_loader=loader)
        return pipe

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs: Any) -> DiffusionPipeline:
        """diffusers' ``from_pipe`` (a pipeline of this class on ``pipeline``'s components, e.g. inpainting from
        text-to-image), keeping ``pipeline``'s dtype unless ``dtype=`` is given: diffusers' casts the shared weights
        to float32 by default, which would silently convert a bfloat16 pipeline's weights in place."""
        if "dtype" not in kwargs and "torch_dtype" not in kwargs:
            kwargs["dtype"] = pipeline.dtype
        return super().from_pipe(pipeline, **kwargs)

    @classmethod
    def load_config(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        return_unused_kwargs: bool = False,
        return_commit_hash: bool = False,
        **kwargs,
    ) -> dict[str, Any] | tuple:
        """``model_index.json`` as ``ConfigMixin.load_config`` reads it, with a transformer entry naming ours.

        ``DiffusionPipeline.from_pretrained`` loads each component by the ``[library, class]`` of this config, so
        any transformer (diffusers' ``Transformer2DModel`` or ``PixArtTransformer2DModel``) loads as our
        :class:`PixArtTransformer2DModel`. A missing one (``[null, null]``) stays missing.
        """
        loaded = super().load_config(
            pretrained_model_name_or_path,
            return_unused_kwargs=return_unused_kwargs,
            return_commit_hash=return_commit_hash,
            **kwargs,
        )
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        entry = config.get("transformer")
        if isinstance(entry, (list, tuple)) and entry[0] is not None:
            config["transformer"] = [
                PixArtTransformer2DModel.__module__.split(".")[0],
                PixArtTransformer2DModel.__name__,
            ]
        return loaded

    def enable_low_memory(
        self,
        text_encoder_loader: Callable[[], T5EncoderModel] | None = None,
        int8_text_encoder: bool = True,
        drop_text_encoder: bool = True,
        vae_tile_size: int | None = DEFAULT_VAE_TILE_SIZE,
    ) -> None:
        """Low-memory generation: int8 T5, dropped before denoising and reloaded for new prompts, tiled VAE decode.

        See :func:`~diffusers_pixart.pipelines.low_memory.enable_low_memory` for the options. For the lowest peak,
        load with ``from_pretrained(..., low_memory=True)``, which quantizes T5 while loading it.
        """
        enable_low_memory(self, text_encoder_loader, int8_text_encoder, drop_text_encoder, vae_tile_size)

    def set_scheduler(self, name: str) -> None:
        """Switch the sampler by name (``dpm``, ``sa`` or ``iddpm``), keeping the noise schedule of the current one."""
        self.scheduler = make_scheduler(name, dict(self.scheduler.config))

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] = "",
        num_images_per_prompt: int = 1,
        device: torch.device | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        clean_caption: bool = False,
        max_sequence_length: int = 120,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Encode prompts (and, for guidance, the negative prompts) with T5.

        Returns ``(prompt_embeds (B*K, L, C), prompt_mask (B*K, L), negative_embeds, negative_mask)`` with ``K`` images
        per prompt; the negative ones are ``None`` without guidance. Precomputed embeddings and masks are passed
        through (repeated ``K`` times). diffusers' deprecated ``mask_feature`` is accepted and ignored.
        """
        check_deprecated_kwargs("encode_prompt", kwargs)
        device = device or self._execution_device
        if prompt_embeds is None:
            prompt_embeds, prompt_attention_mask = self._encode_text(prompt, clean_caption, max_sequence_length, device)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            if isinstance(negative_prompt, str):
                negative_prompt = [negative_prompt] * prompt_embeds.shape[0]
            negative_prompt_embeds, negative_prompt_attention_mask = self._encode_text(
                negative_prompt, clean_caption, prompt_embeds.shape[1], device
            )

        dtype = self.text_encoder.dtype if self.text_encoder is not None else self.transformer.dtype

        def repeat(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            embeds = embeds.to(dtype=dtype, device=device).repeat_interleave(num_images_per_prompt, dim=0)
            return embeds, mask.to(device).repeat_interleave(num_images_per_prompt, dim=0)

        prompt_embeds, prompt_attention_mask = repeat(prompt_embeds, prompt_attention_mask)
        if not do_classifier_free_guidance:
            return prompt_embeds, prompt_attention_mask, None, None
        negative_prompt_embeds, negative_prompt_attention_mask = repeat(
            negative_prompt_embeds, negative_prompt_attention_mask
        )
        return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask

    def _encode_text(
        self, texts: str | list[str], clean_caption: bool, max_length: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 features (B, max_length, C) and keep-mask (B, max_length) of texts, padded to ``max_length`` tokens.

        Each distinct text is encoded once (the negative prompt of a whole batch, repeated prompts), and recent texts
        are not encoded again in later calls (:class:`~diffusers_pixart.text.TextEncodingCache`). T5 runs on its own
        device (it may stay on the CPU while the transformer runs on a GPU); the results go to ``device``.
        """
        if self.text_encoder is None and self._low_memory is not None:
            self._low_memory.reload_text_encoder(self)
        if self.tokenizer is None or self.text_encoder is None:
            raise ValueError("This pipeline has no tokenizer/text encoder: pass `prompt_embeds` and masks instead.")
        texts = self._text_preprocessing(texts, clean_caption=clean_caption)
        full_length = self.tokenizer(texts, padding="longest", return_tensors="pt").input_ids.shape[-1]
        if full_length > max_length:
            logger.warning(f"A prompt is longer than {max_length} tokens and was truncated.")
        embeds, mask = self._text_cache.encode(self.tokenizer, self.text_encoder, texts, max_length)
        return embeds.to(device), mask.to(device)

    def check_inputs(
        self,
        prompt: str | list[str] | None,
        height: int,
        width: int,
        negative_prompt: str | list[str] | None,
        num_inference_steps: int,
        guidance_scale: float,
        output_type: str,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> None:
        """Raise a ``ValueError`` naming the argument for any input the pipeline cannot use."""
        multiple = self.vae_scale_factor * self.transformer.config.patch_size
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ValueError(
                f"`height` and `width` must be positive and divisible by {multiple} (VAE factor x patch size), "
                f"got {height} and {width}."
            )
        if num_inference_steps is None or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}.")
        if guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be >= 0, got {guidance_scale}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Pass either `prompt` or `prompt_embeds`, not both.")
        if prompt is None and prompt_embeds is None:
            raise ValueError("Provide either `prompt` or `prompt_embeds`.")
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise ValueError(f"`prompt` has to be a str or a list of str, got {type(prompt)}.")
        if prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass either `prompt` or `negative_prompt_embeds`, not both.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass either `negative_prompt` or `negative_prompt_embeds`, not both.")
        for name, embeds, mask in (
            ("prompt", prompt_embeds, prompt_attention_mask),
            ("negative_prompt", negative_prompt_embeds, negative_prompt_attention_mask),
        ):
            if embeds is None:
                continue
            if mask is None:
                raise ValueError(f"Must provide `{name}_attention_mask` when specifying `{name}_embeds`.")
            if embeds.ndim != 3 or tuple(mask.shape) != tuple(embeds.shape[:2]):
                raise ValueError(
                    f"`{name}_attention_mask` {tuple(mask.shape)} must have the shape (batch, tokens) of "
                    f"`{name}_embeds` {tuple(embeds.shape)}."
                )
        if prompt_embeds is not None and negative_prompt_embeds is not None:
            if prompt_embeds.shape != negative_prompt_embeds.shape:
                raise ValueError(
                    f"`prompt_embeds` {tuple(prompt_embeds.shape)} and `negative_prompt_embeds` "
                    f"{tuple(negative_prompt_embeds.shape)} must have the same shape."
                )
        unknown = set(callback_on_step_end_tensor_inputs or ()) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has {sorted(unknown)}; allowed: {self._callback_tensor_inputs}."
            )

    def prepare_latents(
        self,
        batch_size: int,
        num_channels_latents: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
        scheduler: SchedulerMixin | None = None,
    ) -> torch.Tensor:
        """Initial noise (B, C, height / f, width / f), scaled by the initial sigma of ``scheduler`` (default: the
        pipeline's)."""
        shape = (batch_size, num_channels_latents, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"`generator` is a list of {len(generator)} generators for a batch of {batch_size}.")
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape}.")
        return latents.to(device) * (scheduler or self.scheduler).init_noise_sigma

    def prepare_extra_step_kwargs(
        self, generator: torch.Generator | list[torch.Generator] | None, eta: float
    ) -> dict[str, Any]:
        """The ``eta`` and ``generator`` arguments, for the schedulers whose ``step`` takes them (diffusers' name)."""
        accepted = inspect.signature(self.scheduler.step).parameters
        candidates = {"eta": eta, "generator": generator}
        return {key: value for key, value in candidates.items() if key in accepted}

    def _micro_conditions(
        self, height: int, width: int, batch: int, dtype: torch.dtype, device: torch.device
    ) -> dict[str, torch.Tensor | None]:
        """``resolution`` (batch, 2) and ``aspect_ratio`` (batch, 1) for models trained with micro-conditions."""
        if not self.transformer.use_additional_conditions:
            return {"resolution": None, "aspect_ratio": None}
        resolution = torch.tensor([[height, width]], dtype=dtype, device=device).repeat(batch, 1)
        aspect_ratio = torch.tensor([[height / width]], dtype=dtype, device=device).repeat(batch, 1)
        return {"resolution": resolution, "aspect_ratio": aspect_ratio}

    def predict(
        self,
        model_input: torch.Tensor,
        t: torch.Tensor,
        prompt_embeds: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor | None],
        block_residuals: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The transformer's output (B, out_channels, h, w) for the latents ``model_input`` (B, C, h, w) at step ``t``.

        The denoising loop's one call of the transformer; the ControlNet pipeline overrides it to add its residuals.
        """
        return self.transformer(
            model_input,
            encoder_hidden_states=prompt_embeds,
            encoder_attention_mask=prompt_attention_mask,
            timestep=t.expand(model_input.shape[0]).to(model_input.device),
            added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
            block_residuals=block_residuals,
        )[0]

    def _guide(self, model_output: torch.Tensor, guidance_scale: float, guided: bool) -> torch.Tensor:
        """Classifier-free guidance on every latent channel of the noise prediction, then the channels to sample with.

        The batch is ``[negative, positive]``. The predicted variance (second half of the channels) is kept, from the
        positive branch, only for schedulers that use it.
        """
        latent_channels = self.transformer.config.in_channels
        learned_sigma = model_output.shape[1] == 2 * latent_channels
        eps, variance = model_output.split(latent_channels, dim=1) if learned_sigma else (model_output, None)
        if guided:
            eps_uncond, eps_text = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
            variance = variance.chunk(2)[1] if variance is not None else None
        if variance is not None and uses_learned_variance(self.scheduler):
            return torch.cat([eps, variance], dim=1)
        return eps

    @property
    def guidance_scale(self) -> float:
        """The guidance scale of the running (or last) call."""
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        """The number of denoising steps of the running (or last) call."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set to True from a step-end callback to stop denoising after that step."""
        return self._interrupt

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str = "",
        num_inference_steps: int = 20,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 4.5,
        num_images_per_prompt: int | None = 1,
        height: int | None = None,
        width: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        callback_steps: int = 1,
        clean_caption: bool = True,
        use_resolution_binning: bool = True,
        max_sequence_length: int = 120,
        callback_on_step_end: Callable[..., dict[str, torch.Tensor]] | PipelineCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        *,
        image_edit: EditRequest | None = None,
        predict: Callable[..., torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> ImagePipelineOutput | tuple:
        """Generate images from text.

        Args:
            prompt: the prompt(s); or pass ``prompt_embeds`` (B, L, C) with ``prompt_attention_mask`` (B, L).
            negative_prompt: the unconditional prompt(s) of classifier-free guidance ("" for PixArt-alpha).
            num_inference_steps: denoising steps (>= 1).
            timesteps, sigmas: custom schedules, for schedulers whose ``set_timesteps`` accepts them.
            guidance_scale: classifier-free guidance weight; guidance is on when it is > 1. A model with a
                guidance-scale embedding (a consistency student, ``transformer.config.guidance_embedding``) gets it
                as its input instead, without classifier-free guidance's second batch.
            num_images_per_prompt: images per prompt.
            height, width: image size in pixels; defaults to the model's training size.
            eta: DDIM's eta, for schedulers that take it.
            generator: torch generator(s) for reproducible noise.
            latents: initial noise (B*K, C, height / 8, width / 8).
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask:
                precomputed T5 features and keep-masks.
            output_type: "pil", "np", "pt" or "latent".
            return_dict: return an ``ImagePipelineOutput`` rather than a tuple.
            callback, callback_steps: legacy per-step callback ``callback(step, t, latents)``.
            clean_caption: clean prompts as in training (needs ``beautifulsoup4`` and ``ftfy``).
            use_resolution_binning: generate at the nearest size of the model's aspect-ratio table, then resize and
                centre-crop to ``height`` x ``width`` (which may then be any positive size).
            max_sequence_length: caption tokens (120 for PixArt-alpha).
            callback_on_step_end: ``fn(pipeline, step, t, tensors) -> dict`` called after each step with the
                tensors named in ``callback_on_step_end_tensor_inputs``; returned tensors replace them.
            image_edit: start from an image (img2img) and keep what is outside a mask (inpainting): what
                ``PixArtAlphaImg2ImgPipeline`` and ``PixArtAlphaInpaintPipeline`` pass (:mod:`.editing`); ``latents``
                is then the noise the image is noised with.
            predict: the model call of each step, with the arguments of :meth:`predict` (the default); the ControlNet
                pipeline passes its ``predict`` bound to the call's control image.
            kwargs: only diffusers' deprecated ``mask_feature``, accepted with a ``FutureWarning`` and ignored.

        Returns:
            ``ImagePipelineOutput(images=...)`` or a one-element tuple.
        """
        check_deprecated_kwargs("__call__", kwargs)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        default_size = self.transformer.config.sample_size * self.vae_scale_factor
        height = default_size if height is None else height
        width = default_size if width is None else width
        if height <= 0 or width <= 0:
            raise ValueError(f"`height` and `width` must be positive, got {height} and {width}.")
        orig_height, orig_width = height, width
        if use_resolution_binning:
            base = self.transformer.config.sample_size * self.vae_scale_factor
            try:
                bins = bucket_table(base, multiple=self.vae_scale_factor * self.transformer.config.patch_size)
            except ValueError as error:
                raise ValueError(f"{error} Pass `use_resolution_binning=False` for this model.") from error
            height, width = self.image_processor.classify_height_width_bin(height, width, ratios=bins)
        self.check_inputs(
            prompt,
            height,
            width,
            negative_prompt,
            num_inference_steps,
            guidance_scale,
            output_type,
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
            callback_on_step_end_tensor_inputs,
        )
        if image_edit is not None:
            image_edit.check(num_inference_steps)
        self._guidance_scale = guidance_scale
        self._interrupt = False
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        device = self._execution_device
        embedded = self.transformer.config.get("guidance_embedding", False)
        guided = guidance_scale > 1.0 and not embedded

        prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = (
            self.encode_prompt(
                prompt,
                guided,
                negative_prompt=negative_prompt,
                num_images_per_prompt=num_images_per_prompt,
                device=device,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                prompt_attention_mask=prompt_attention_mask,
                negative_prompt_attention_mask=negative_prompt_attention_mask,
                clean_caption=clean_caption,
                max_sequence_length=max_sequence_length,
            )
        )
        if guided:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
            prompt_attention_mask = torch.cat([negative_prompt_attention_mask, prompt_attention_mask], dim=0)

        # The call samples with its own copy of the scheduler (whose state changes every step) and passes everything
        # per call explicitly, so that one pipeline serves concurrent calls (threads).
        scheduler = copy.deepcopy(self.scheduler)
        predict = predict or self.predict
        timesteps, num_inference_steps = retrieve_timesteps(scheduler, num_inference_steps, device, timesteps, sigmas)
        images = batch_size * num_images_per_prompt
        latent_channels = self.transformer.config.in_channels
        begin_index = 0
        if image_edit is None:
            latents = self.prepare_latents(
                images, latent_channels, height, width, prompt_embeds.dtype, device, generator, latents, scheduler
            )
        else:
            edit = image_edit.prepare(self, images, height, width, prompt_embeds.dtype, device, generator, latents)
            full = len(timesteps)
            timesteps, num_inference_steps = edit.timesteps(scheduler, timesteps, num_inference_steps)
            begin_index = full - len(timesteps)
            latents = edit.initial_latents(scheduler, timesteps[0])
        self._num_timesteps = len(timesteps)
        step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        added_cond_kwargs = self._micro_conditions(height, width, prompt_embeds.shape[0], prompt_embeds.dtype, device)
        if embedded:
            added_cond_kwargs["guidance"] = torch.full((prompt_embeds.shape[0],), float(guidance_scale), device=device)

        warmup_steps = max(len(timesteps) - num_inference_steps * scheduler.order, 0)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin_index)
        # caption_cache: the caption projection and cross-attention keys/values are computed once, not every step.
        with self.progress_bar(total=num_inference_steps) as progress_bar, caption_cache():
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                model_input = torch.cat([latents] * 2) if guided else latents
                model_input = scheduler.scale_model_input(model_input, t)
                model_output = predict(model_input, t, prompt_embeds, prompt_attention_mask, added_cond_kwargs)
                noise_pred = self._guide(model_output, guidance_scale, guided)
                latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
                if image_edit is not None:  # inpainting: the image outside the mask, noised to the next step
                    following = timesteps[i + 1] if i + 1 < len(timesteps) else None
                    latents = edit.after_step(scheduler, latents, following)
                if callback_on_step_end is not None:
                    available = {
                        "latents": latents,
                        "prompt_embeds": prompt_embeds,
                        "prompt_attention_mask": prompt_attention_mask,
                    }
                    tensors = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    updated = callback_on_step_end(self, i, t, tensors)
                    latents = updated.pop("latents", latents)
                    prompt_embeds = updated.pop("prompt_embeds", prompt_embeds)
                    prompt_attention_mask = updated.pop("prompt_attention_mask", prompt_attention_mask)
                if i == len(timesteps) - 1 or ((i + 1) > warmup_steps and (i + 1) % scheduler.order == 0):
                    progress_bar.update()
                    if callback is not None and i % callback_steps == 0:
                        callback(i // getattr(scheduler, "order", 1), t, latents)

        if output_type == "latent":
            image = latents
        else:
            latents = latents.to(self.vae.dtype)
            image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
            if use_resolution_binning:
                image = self.image_processor.resize_and_crop_tensor(image, orig_width, orig_height)
            image = self.image_processor.postprocess(image, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

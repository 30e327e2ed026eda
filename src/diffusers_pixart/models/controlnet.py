"""PixArt-alpha's ControlNet (paper appendix A.9, "ControlNet-Half" of the official code).

Trainable copies of the first N blocks of a frozen base transformer (N = 13 for XL/2's 28 blocks) read the base's
own embeddings. The control image is encoded by the same VAE as the latents and then by the base's frozen patch
embedding (with its position table). Data flow, with ``x_1`` the output of base block 0:

    c_0 = x_1 + before_proj(patch_embed(control_latents))     # before_proj starts at zero
    c_k = copy_k(c_{k-1} or c_0)                                # copy k is initialised from base block k
    residual_k = after_proj_k(c_k)                              # after_proj_k starts at zero

and ``residual_k`` is added to the output of base block k (the input of base block k + 1), k = 0 .. N-1, which is
``PixArtTransformer2DModel.forward(..., block_residuals=...)``. With the zero-initialised projections a new ControlNet
changes nothing, so training starts from the base model's behaviour.

This is the forward of the original code's ``ControlPixArtHalf`` (``diffusion/model/nets/pixart_controlnet.py``), whose
checkpoints :meth:`PixArtControlNetModel.from_original` reads.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .pixart_transformer import PixArtTransformer2DModel, make_blocks

#: Config keys that the block copies share with the base transformer.
BLOCK_CONFIG_KEYS = (
    "num_attention_heads",
    "attention_head_dim",
    "cross_attention_dim",
    "dropout",
    "activation_fn",
    "attention_bias",
    "upcast_attention",
    "norm_elementwise_affine",
    "norm_eps",
)


class PixArtControlNetModel(ModelMixin, ConfigMixin):
    """The trainable half of PixArt-alpha's ControlNet: N block copies with zero-initialised projections.

    Build it from a base transformer with :meth:`from_transformer`; ``save_pretrained``/``from_pretrained`` work as
    for any diffusers model. Calling it gives the ``block_residuals`` of the base transformer's forward.

    Args:
        num_layers: number of block copies N (13 in the paper for the 28-block XL/2).
        num_attention_heads, attention_head_dim, cross_attention_dim, dropout, activation_fn, attention_bias,
            upcast_attention, norm_elementwise_affine, norm_eps: the base transformer's block settings.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["PixArtBlock"]
    _repeated_blocks = ["PixArtBlock"]

    @register_to_config
    def __init__(
        self,
        num_layers: int = 13,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        cross_attention_dim: int | None = 1152,
        dropout: float = 0.0,
        activation_fn: str = "gelu-approximate",
        attention_bias: bool = True,
        upcast_attention: bool = False,
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"A ControlNet needs at least one block copy, got num_layers={num_layers}.")
        dim = num_attention_heads * attention_head_dim
        self.inner_dim = dim
        self.gradient_checkpointing = False
        self.before_proj = nn.Linear(dim, dim)
        self.controlnet_blocks = make_blocks(self.config, num_layers)
        self.after_proj = nn.ModuleList([nn.Linear(dim, dim) for _ in range(num_layers)])
        # Zero projections: a new ControlNet adds exactly nothing to the base model.
        for proj in (self.before_proj, *self.after_proj):
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    @classmethod
    def from_transformer(cls, transformer: PixArtTransformer2DModel, num_layers: int = 13) -> PixArtControlNetModel:
        """A new ControlNet whose N block copies start as the base's blocks 0 .. N-1 (projections at zero).

        Raises:
            ValueError: ``num_layers`` is not in 1 .. (base blocks - 1) (the last copy feeds base block N).
        """
        available = len(transformer.transformer_blocks)
        if not 1 <= num_layers < available:
            raise ValueError(
                f"num_layers={num_layers} block copies do not fit a base of {available} blocks: use 1 to "
                f"{available - 1} (copy k feeds base block k + 1; the paper copies 13 of XL/2's 28 blocks)."
            )
        controlnet = cls(num_layers=num_layers, **{key: transformer.config[key] for key in BLOCK_CONFIG_KEYS})
        for copy, block in zip(controlnet.controlnet_blocks, transformer.transformer_blocks):
            copy.load_state_dict(block.state_dict())
        if controlnet.dtype != transformer.dtype:
            controlnet.to(dtype=transformer.dtype)
        return controlnet.to(transformer.device)

    @classmethod
    def from_original(
        cls,
        path_or_state_dict: str | os.PathLike | dict,
        transformer: PixArtTransformer2DModel | None = None,
        ema: bool | None = None,
        **overrides: Any,
    ) -> PixArtControlNetModel:
        """The ControlNet of an official checkpoint (``PixArt-XL-2-1024-ControlNet.pth``, original ``.pth`` layout).

        Pass the ``transformer`` it will run with to take its block settings and to have weights for another base
        refused with a ``ValueError`` naming the difference. The base saved in the same file is left out; to load it
        too, use :func:`diffusers_pixart.models.conversion.controlnet_from_original` (or ``pixart convert
        controlnet``), which documents the arguments.
        """
        from .conversion import controlnet_from_original

        return controlnet_from_original(
            cls, path_or_state_dict, transformer=transformer, ema=ema, load_base=False, **overrides
        )[0]

    def to_original(
        self, transformer: PixArtTransformer2DModel | None = None, null_caption: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """This ControlNet (and its base ``transformer``, when given) in the official ``.pth`` layout.

        See :func:`diffusers_pixart.models.conversion.controlnet_to_original`.
        """
        from .conversion import controlnet_to_original

        return controlnet_to_original(self, transformer, null_caption=null_caption)

    def check_transformer(self, transformer: PixArtTransformer2DModel) -> None:
        """Raise a ``ValueError`` unless ``transformer`` is a base this ControlNet fits (width and depth)."""
        if transformer.inner_dim != self.inner_dim:
            raise ValueError(
                f"The ControlNet is for another base: its hidden size {self.inner_dim} does not match the "
                f"transformer's {transformer.inner_dim}."
            )
        if self.config.num_layers >= len(transformer.transformer_blocks):
            raise ValueError(
                f"The ControlNet is for another base: it has {self.config.num_layers} block copies, too many for a "
                f"transformer of {len(transformer.transformer_blocks)} blocks (copy k feeds base block k + 1)."
            )

    def forward(
        self,
        transformer: PixArtTransformer2DModel,
        hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        added_cond_kwargs: dict[str, Any] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        conditioning_scale: float = 1.0,
    ) -> list[torch.Tensor]:
        """The block residuals of ``transformer(hidden_states, ..., block_residuals=...)``.

        Args:
            transformer: the frozen base; its embeddings, patch embedding and block 0 are used (not trained).
            hidden_states: noisy latents (B, C, H, W).
            controlnet_cond: the control image's VAE latents (B, C, H, W), scaled like the latents.
            encoder_hidden_states, timestep, added_cond_kwargs, encoder_attention_mask: as for the transformer.
            conditioning_scale: factor on every residual (0 turns the control off).

        Returns:
            N residuals (B, N_tokens, D), the k-th for the output of base block k.
        """
        if controlnet_cond.shape != hidden_states.shape:
            raise ValueError(
                f"The control latents {tuple(controlnet_cond.shape)} must have the shape of the latents "
                f"{tuple(hidden_states.shape)}."
            )
        self.check_transformer(transformer)
        x, caption, t, _, caption_bias = transformer.embed(
            hidden_states, encoder_hidden_states, timestep, added_cond_kwargs, encoder_attention_mask
        )
        x = transformer.run_block(transformer.transformer_blocks[0], x, caption, t, caption_bias)  # (B, N, D)
        c = x + self.before_proj(transformer.pos_embed(controlnet_cond.to(x.dtype)))
        residuals = []
        for block, proj in zip(self.controlnet_blocks, self.after_proj):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                c = self._gradient_checkpointing_func(block, c, caption, t, caption_bias, None)
            else:
                c = block(c, caption, t, caption_bias)
            residuals.append(proj(c) * conditioning_scale)
        return residuals

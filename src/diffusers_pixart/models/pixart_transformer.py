"""PixArt-alpha's text-to-image diffusion transformer (paper section 2.3, figure 4).

Read top to bottom in the order of the figure: the patch embedding with its sin-cos position table, adaLN-single (one
global timestep MLP; every block adds its own ``scale_shift_table``), the caption projection, the T2I block
(self-attention, cross-attention to the caption, feed-forward), the output layer, and the model. Names and shapes match
diffusers' ``PixArtTransformer2DModel`` so that the official Hub checkpoints load with ``strict`` keys.

Shapes: ``B`` batch, ``C`` latent channels, ``H x W`` latent grid, ``p`` patch size, ``N = (H/p)(W/p)`` image tokens,
``L`` caption tokens, ``D`` hidden size.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.loaders import PeftAdapterMixin
from torch import nn

from ..diffusers_compat import (
    Attention,
    AttentionMixin,
    FeedForward,
    TimestepEmbedding,
    Timesteps,
    Transformer2DModelOutput,
    get_2d_sincos_pos_embed,
)
from .attention import (
    KVCompression,
    PixArtAttnProcessor,
    active_caption_cache,
    fuse_projections,
    unfuse_projections,
)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; ``x`` is (B, N, D), ``shift``/``scale`` broadcast as (B, 1, D)."""
    return x * (1 + scale) + shift


class PatchEmbed(nn.Module):
    """Latent image (B, C, H, W) to patch tokens (B, N, D) plus a sin-cos position table.

    The table is recomputed for any grid: positions are ``arange(n) / (n / base_size) / interpolation_scale`` (the
    DiffFit trick the paper adopts for multi-scale training), ``base_size`` being the training grid
    ``sample_size // patch_size``. It is a cache, never saved. The sizes are kept as attributes rather than read from
    ``proj``, which a LoRA adapter may wrap.
    """

    def __init__(self, sample_size: int, patch_size: int, in_channels: int, dim: int, interpolation_scale: float):
        super().__init__()
        self.patch_size = patch_size
        self.dim = dim
        self.base_size = sample_size // patch_size
        self.interpolation_scale = interpolation_scale
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=True)
        self._tables: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def position_table(self, grid_h: int, grid_w: int, device: torch.device) -> torch.Tensor:
        """The (1, grid_h * grid_w, D) float32 sin-cos table of a grid."""
        key = (grid_h, grid_w, device)
        if key not in self._tables:
            table = get_2d_sincos_pos_embed(
                self.dim,
                (grid_h, grid_w),
                base_size=self.base_size,
                interpolation_scale=self.interpolation_scale,
                device=device,
                output_type="pt",
            )
            self._tables[key] = table.float().unsqueeze(0)
        return self._tables[key]

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        grid_h, grid_w = latents.shape[-2] // self.patch_size, latents.shape[-1] // self.patch_size
        tokens = self.proj(latents).flatten(2).transpose(1, 2)  # (B, N, D), a transposed view of (B, D, N)
        # Contiguous: elementwise ops keep their input's layout, so the transposed one would run through every block
        # (each LayerNorm and Linear then copies it; 30% slower on a GPU).
        return (tokens + self.position_table(grid_h, grid_w, latents.device)).to(tokens.dtype).contiguous()


class MicroConditionEmbedding(nn.Module):
    """Timestep embedding t (B, D), plus, for the multi-scale models, the image size and aspect ratio.

    Each scalar goes through the 256-channel frequency embedding and an MLP; the size (h, w) gives 2 x D/3 channels,
    the aspect ratio D/3, and their concatenation is added to the timestep embedding (so 3 * (D // 3) must equal D).
    """

    def __init__(self, dim: int, use_additional_conditions: bool):
        super().__init__()
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim)
        self.use_additional_conditions = use_additional_conditions
        if use_additional_conditions:
            if 3 * (dim // 3) != dim:
                raise ValueError(f"Micro-conditions need a hidden size divisible by 3, got {dim}.")
            self.additional_condition_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
            self.resolution_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim // 3)
            self.aspect_ratio_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim // 3)

    def forward(
        self,
        timestep: torch.Tensor,
        resolution: torch.Tensor | None,
        aspect_ratio: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        emb = self.timestep_embedder(self.time_proj(timestep).to(dtype))  # (B, D)
        if not self.use_additional_conditions:
            return emb
        if resolution is None or aspect_ratio is None:
            raise ValueError(
                "This model uses micro-conditions: pass `added_cond_kwargs` with 'resolution' (B, 2) and "
                "'aspect_ratio' (B, 1)."
            )
        batch = emb.shape[0]
        size = self.resolution_embedder(self.additional_condition_proj(resolution.flatten()).to(dtype))
        ratio = self.aspect_ratio_embedder(self.additional_condition_proj(aspect_ratio.flatten()).to(dtype))
        return emb + torch.cat([size.reshape(batch, -1), ratio.reshape(batch, -1)], dim=1)


class GuidanceEmbedding(nn.Module):
    """A guidance scale w (B,) to an embedding (B, D) added to the timestep embedding (LCM's w-conditioning).

    ``w * scale`` (``scale`` = 1000, as LCM embeds w) through the 256-channel frequency embedding and an MLP whose last
    layer starts at zero: a model that gets one computes exactly what it computed before, for every w, until trained.
    """

    scale = 1000.0

    def __init__(self, dim: int):
        super().__init__()
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim)
        nn.init.zeros_(self.embedder.linear_2.weight)
        nn.init.zeros_(self.embedder.linear_2.bias)

    def forward(self, guidance: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        if guidance is None:
            raise ValueError(
                "This model has a guidance-scale embedding: pass `added_cond_kwargs` with 'guidance' (B,), the scale "
                "to sample at (its pipeline passes `guidance_scale`)."
            )
        return self.embedder(self.time_proj(guidance.flatten().float() * self.scale).to(dtype))


class AdaLayerNormSingle(nn.Module):
    """adaLN-single: one global MLP S = f(t) of shape (B, 6D), shared by every block (paper eq. in section 2.3).

    Returns ``(S, t_emb)``: the six shifts/scales/gates for all blocks, and the embedding before the SiLU + Linear,
    which the output layer uses. With a guidance embedding (a distilled student's, :class:`GuidanceEmbedding`),
    ``t_emb`` also holds the embedding of ``added_cond_kwargs["guidance"]``.
    """

    def __init__(self, dim: int, use_additional_conditions: bool = False, guidance_embedding: bool = False):
        super().__init__()
        self.emb = MicroConditionEmbedding(dim, use_additional_conditions)
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 6 * dim, bias=True)
        self.guidance_embedder = GuidanceEmbedding(dim) if guidance_embedding else None

    def forward(
        self, timestep: torch.Tensor, added_cond_kwargs: dict[str, torch.Tensor] | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        added = added_cond_kwargs or {}
        t_emb = self.emb(timestep, added.get("resolution"), added.get("aspect_ratio"), dtype)  # (B, D)
        if self.guidance_embedder is not None:
            t_emb = t_emb + self.guidance_embedder(added.get("guidance"), dtype)
        return self.linear(self.silu(t_emb)), t_emb  # (B, 6D), (B, D)


class CaptionProjection(nn.Module):
    """T5 features (B, L, caption_channels) to the hidden size (B, L, D): Linear, GELU(tanh), Linear."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim, bias=True)
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(dim, dim, bias=True)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(caption)))


class PixArtBlock(nn.Module):
    """The T2I block: adaLN-modulated self-attention, cross-attention to the caption, adaLN-modulated FFN.

    ``S(i) = S + E(i)``: the global modulation ``S`` (B, 6D) plus this block's ``scale_shift_table`` E(i) (6, D).
    The cross-attention has neither norm nor gate; its output projection starts at zero in training so that a
    pre-trained DiT block is preserved (paper section 2.3). With ``cross_attention_dim=None`` the block has no
    cross-attention (``attn2`` is None), as diffusers' block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        cross_attention_dim: int | None,
        dropout: float = 0.0,
        activation_fn: str = "gelu-approximate",
        attention_bias: bool = True,
        upcast_attention: bool = False,
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        attention = dict(heads=num_heads, dim_head=head_dim, dropout=dropout, bias=attention_bias, out_bias=True)
        attention.update(upcast_attention=upcast_attention, processor=PixArtAttnProcessor())
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine, eps=norm_eps)
        self.attn1 = Attention(query_dim=dim, cross_attention_dim=None, **attention)
        # norm2 is the FFN's norm; created before attn2, as in diffusers, so the parameters are listed in its order.
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine, eps=norm_eps)
        self.attn2 = (
            Attention(query_dim=dim, cross_attention_dim=cross_attention_dim, **attention)
            if cross_attention_dim is not None
            else None
        )
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn, bias=True)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        caption: torch.Tensor,
        t: torch.Tensor,
        caption_bias: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """``x`` (B, N, D), ``caption`` (B, L, D), ``t`` the global modulation (B, 6D), ``caption_bias`` (B, 1, L)."""
        attention_kwargs = attention_kwargs or {}
        modulation = self.scale_shift_table[None] + t.reshape(x.shape[0], 6, -1)  # (B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)
        x = x + gate_msa * self.attn1(modulate(self.norm1(x), shift_msa, scale_msa), **attention_kwargs)
        if self.attn2 is not None:
            x = x + self.attn2(x, encoder_hidden_states=caption, attention_mask=caption_bias, **attention_kwargs)
        return x + gate_mlp * self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp))


def kv_compressed_layers(config: Any, num_layers: int) -> list[int]:
    """The blocks whose self-attention compresses keys and values, by a config's ``kv_compress_*`` keys.

    None without compression (``kv_compress_factor`` 1, or a config without the keys, such as the ControlNet's);
    ``kv_compress_layers=None`` means every block.
    """
    if (config.get("kv_compress_factor") or 1) <= 1:
        return []
    layers = config.get("kv_compress_layers")
    layers = list(range(num_layers)) if layers is None else [int(i) for i in layers]
    if any(i < 0 or i >= num_layers for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"`kv_compress_layers` {layers} must be distinct block indices in [0, {num_layers}).")
    return sorted(layers)


def make_blocks(config: Any, num_layers: int) -> nn.ModuleList:
    """``num_layers`` T2I blocks as a model ``config`` with PixArt's keys describes them (heads, sizes, norms, FFN,
    and KV compression: :func:`kv_compressed_layers`)."""
    blocks = nn.ModuleList(
        PixArtBlock(
            config.num_attention_heads * config.attention_head_dim,
            config.num_attention_heads,
            config.attention_head_dim,
            config.cross_attention_dim,
            dropout=config.dropout,
            activation_fn=config.activation_fn,
            attention_bias=config.attention_bias,
            upcast_attention=config.upcast_attention,
            norm_elementwise_affine=config.norm_elementwise_affine,
            norm_eps=config.norm_eps,
        )
        for _ in range(num_layers)
    )
    for i in kv_compressed_layers(config, num_layers):
        dim = config.num_attention_heads * config.attention_head_dim
        blocks[i].attn1.kv_compress = KVCompression(dim, config.kv_compress_factor, config.kv_compress_sampling)
    return blocks


class PixArtTransformer2DModel(ModelMixin, AttentionMixin, ConfigMixin, PeftAdapterMixin):
    """PixArt-alpha transformer: noisy latent (B, C, H, W), timestep and T5 caption to (B, out_channels, H, W).

    The config is diffusers' ``PixArtTransformer2DModel`` config, key for key, with the same defaults and fallbacks
    (``interpolation_scale = max(sample_size // 64, 1)``, micro-conditions on only for ``sample_size == 128``), so
    the official Hub folders and diffusers-saved folders load here and the other way round. ``norm_num_groups`` and
    ``attention_type`` are kept for that compatibility and have no effect.

    With ``out_channels = 2 * in_channels`` the model predicts the noise and, in the second half, the interpolation
    coefficient of the learned variance (IDDPM).

    ``compile_repeated_blocks(fullgraph=True)`` (diffusers' regional compilation) compiles the blocks only: one graph
    serves every block, and the caption projection and padding drop around them stay eager and cached by
    :func:`~diffusers_pixart.models.attention.caption_cache` (the compiled blocks recompute their caption keys and
    values, on the trimmed caption).

    PixArt-Σ's KV token compression and a distilled student's guidance-scale embedding (``guidance_embedding``,
    :meth:`enable_guidance_embedding`) are the additions to diffusers' config, off by default (so every α and Σ
    checkpoint loads unchanged): ``kv_compress_factor`` R >= 2 compresses the self-attention keys and values of the
    blocks ``kv_compress_layers`` (None: every block; the Σ code's 2K/4K configs use the deep half, 14-27 of 28) R x R
    with the operator ``kv_compress_sampling`` (:class:`~diffusers_pixart.models.attention.KVCompression`: ``"conv"``,
    Σ's, by default). :meth:`enable_kv_compression` adds it to a trained model.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["PixArtBlock", "PatchEmbed"]
    _repeated_blocks = ["PixArtBlock"]
    _skip_layerwise_casting_patterns = ["pos_embed", "norm", "adaln_single"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        out_channels: int | None = 8,
        num_layers: int = 28,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        cross_attention_dim: int | None = 1152,
        attention_bias: bool = True,
        sample_size: int = 128,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        num_embeds_ada_norm: int | None = 1000,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_single",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        interpolation_scale: int | None = None,
        use_additional_conditions: bool | None = None,
        caption_channels: int | None = None,
        attention_type: str | None = "default",
        kv_compress_factor: int = 1,
        kv_compress_layers: list[int] | None = None,
        kv_compress_sampling: str = "conv",
        guidance_embedding: bool = False,
    ):
        super().__init__()
        if norm_type != "ada_norm_single":
            raise ValueError(f"PixArt-alpha uses norm_type 'ada_norm_single', got {norm_type!r}.")
        if num_embeds_ada_norm is None:
            raise ValueError("`num_embeds_ada_norm` cannot be None for adaLN-single.")
        if sample_size % patch_size != 0:
            raise ValueError(f"`sample_size` {sample_size} is not divisible by `patch_size` {patch_size}.")
        dim = num_attention_heads * attention_head_dim
        self.inner_dim = dim
        self.out_channels = in_channels if out_channels is None else out_channels
        self.use_additional_conditions = (
            sample_size == 128 if use_additional_conditions is None else use_additional_conditions
        )
        self.gradient_checkpointing = False

        self.pos_embed = PatchEmbed(
            sample_size,
            patch_size,
            in_channels,
            dim,
            interpolation_scale if interpolation_scale is not None else max(sample_size // 64, 1),
        )
        self.transformer_blocks = make_blocks(self.config, num_layers)
        # Output layer: LayerNorm, modulation by the timestep embedding and a final table, Linear to patches.
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.proj_out = nn.Linear(dim, patch_size * patch_size * self.out_channels)
        # The conditioning embeddings come last, in diffusers' order of creation: after the same torch.manual_seed
        # both classes draw the same random weights (and list their parameters in the same order).
        self.adaln_single = AdaLayerNormSingle(dim, self.use_additional_conditions, guidance_embedding)
        self.caption_projection = CaptionProjection(caption_channels, dim) if caption_channels is not None else None

    @staticmethod
    def mask_to_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """A keep-mask (B, L) of 1/0 to the additive attention bias (B, 1, L) of 0/-10000; a bias passes through."""
        if mask is None or mask.ndim != 2:
            return mask
        return ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)

    def unpatchify(self, x: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        """Patch tokens (B, N, p*p*C) to the image layout (B, C, H, W)."""
        p, c = self.config.patch_size, self.out_channels
        x = x.reshape(-1, grid_h, grid_w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(-1, c, grid_h * p, grid_w * p)

    def embed(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The inputs of the first block: ``(x (B, N, D), caption (B, L, D), t (B, 6D), t_emb (B, D), bias (B, 1, L))``.

        Shared with the ControlNet, whose trainable block copies read the same embeddings.
        """
        if self.use_additional_conditions and added_cond_kwargs is None:
            raise ValueError("`added_cond_kwargs` cannot be None when using additional conditions for `adaln_single`.")
        if encoder_hidden_states is None or timestep is None:
            raise ValueError("`encoder_hidden_states` and `timestep` are required.")
        p = self.config.patch_size
        if hidden_states.shape[-2] % p or hidden_states.shape[-1] % p:
            raise ValueError(f"Latent size {tuple(hidden_states.shape[-2:])} is not divisible by the patch size {p}.")
        x = self.pos_embed(hidden_states)  # (B, N, D)
        t, t_emb = self.adaln_single(timestep, added_cond_kwargs, dtype=x.dtype)  # (B, 6D), (B, D)
        caption, caption_bias = self.embed_caption(encoder_hidden_states, encoder_attention_mask, x.shape[0], x.dtype)
        return x, caption, t, t_emb, caption_bias

    def embed_caption(
        self, encoder_hidden_states: torch.Tensor, mask: torch.Tensor | None, batch: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Caption features (B, L, C) and keep-mask (B, L) to the blocks' caption (B, L', D) and bias (B, 1, L').

        Inside :func:`~diffusers_pixart.models.attention.caption_cache` this runs once per caption and, when the
        context asks for it, drops the tokens that are padding in every row (L' <= L; the bias is None when no
        padding is left). Otherwise L' = L, as in diffusers.
        """
        cache = active_caption_cache()
        if cache is None:
            return self._project_caption(encoder_hidden_states, mask, batch, dtype)
        return cache.get(
            self,
            (encoder_hidden_states, mask),
            lambda: self._project_caption(*cache.trim(encoder_hidden_states, mask), batch, dtype),
        )

    def _project_caption(
        self, caption: torch.Tensor, mask: torch.Tensor | None, batch: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The caption projection (B, L, D) and the additive bias (B, 1, L) of a keep-mask."""
        if self.caption_projection is not None:
            caption = self.caption_projection(caption).view(batch, -1, self.inner_dim)  # (B, L, D)
        return caption, self.mask_to_bias(mask, dtype)

    def set_default_attn_processor(self) -> None:
        """Give every attention layer the default processor again, :class:`~.attention.PixArtAttnProcessor`.

        diffusers' method of the same name sets its ``AttnProcessor``, of the same math.
        """
        self.set_attn_processor(PixArtAttnProcessor())

    def fuse_qkv_projections(self) -> None:
        """Fuse the self-attention q/k/v and cross-attention k/v projections (:func:`.attention.fuse_projections`).

        Opt-in: the fused copies cost memory. Unfuse before training or saving.
        """
        fuse_projections(self)

    def unfuse_qkv_projections(self) -> None:
        """Undo :meth:`fuse_qkv_projections`, restoring diffusers' state-dict keys."""
        unfuse_projections(self)

    def enable_kv_compression(self, factor: int = 2, layers: list[int] | None = None, sampling: str = "conv") -> None:
        """Add PixArt-Σ's KV token compression to this model (the weak-to-strong step from a model without it).

        The blocks ``layers`` (None: every block) compress their self-attention keys and values ``factor`` x
        ``factor`` with ``sampling`` (see :class:`~diffusers_pixart.models.attention.KVCompression`), whose new
        weights start as the Σ code starts them (the convolution the window mean); blocks that had compression get a
        new one. The config records it, so ``save_pretrained`` / ``from_pretrained`` keep it.
        """
        config = {"kv_compress_factor": factor, "kv_compress_layers": layers, "kv_compress_sampling": sampling}
        chosen = kv_compressed_layers(config, len(self.transformer_blocks))
        if not chosen:
            raise ValueError(f"KV compression needs a factor >= 2 and at least one layer, got {factor} and {layers}.")
        param = next(self.parameters())
        for i, block in enumerate(self.transformer_blocks):
            compress = KVCompression(self.inner_dim, factor, sampling) if i in chosen else None
            block.attn1.kv_compress = None if compress is None else compress.to(param.device, param.dtype)
        self.register_to_config(**{**config, "kv_compress_layers": None if layers is None else chosen})

    def enable_guidance_embedding(self) -> None:
        """Add a guidance-scale embedding (:class:`GuidanceEmbedding`, zero-initialised: the outputs are unchanged)
        to the timestep embedding, for a consistency student that learns a range of guidance scales.

        The model then takes ``added_cond_kwargs["guidance"]`` (B,), which its pipeline fills with ``guidance_scale``
        (and runs no classifier-free guidance). The config records it, so ``save_pretrained`` / ``from_pretrained``
        keep it.
        """
        if self.adaln_single.guidance_embedder is not None:
            raise ValueError("This model already has a guidance-scale embedding.")
        param = next(self.parameters())
        self.adaln_single.guidance_embedder = GuidanceEmbedding(self.inner_dim).to(param.device, param.dtype)
        self.register_to_config(guidance_embedding=True)

    def run_block(
        self,
        block: nn.Module,
        x: torch.Tensor,
        caption: torch.Tensor,
        t: torch.Tensor,
        caption_bias: torch.Tensor | None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """One block (B, N, D) -> (B, N, D), through gradient checkpointing when it is on and gradients are needed."""
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, x, caption, t, caption_bias, attention_kwargs)
        return block(x, caption, t, caption_bias, attention_kwargs)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        timestep: torch.LongTensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
        block_residuals: list[torch.Tensor] | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict the noise (and the variance interpolation) of a noisy latent.

        Args:
            hidden_states: noisy latents (B, C, H, W); H and W divisible by the patch size.
            encoder_hidden_states: caption features (B, L, caption_channels).
            timestep: diffusion timesteps (B,).
            added_cond_kwargs: micro-conditions ``{"resolution": (B, 2), "aspect_ratio": (B, 1)}``, for models that
                use them.
            cross_attention_kwargs: extra keyword arguments for the attention processors.
            attention_mask: unused by PixArt (self-attention sees every patch); accepted for diffusers compatibility.
            encoder_attention_mask: caption keep-mask (B, L) of 1/0, or an additive bias (B, 1, L).
            return_dict: return a ``Transformer2DModelOutput`` rather than a tuple.
            block_residuals: ControlNet features (B, N, D), the i-th added to the output of block i.

        Returns:
            The prediction (B, out_channels, H, W).
        """
        x, caption, t, t_emb, caption_bias = self.embed(
            hidden_states, encoder_hidden_states, timestep, added_cond_kwargs, encoder_attention_mask
        )
        if (self.config.kv_compress_factor or 1) > 1:  # compressed self-attentions need the token grid
            grid = tuple(side // self.config.patch_size for side in hidden_states.shape[-2:])
            cross_attention_kwargs = {**(cross_attention_kwargs or {}), "grid_size": grid}
        residuals = block_residuals or []
        if len(residuals) > len(self.transformer_blocks):
            raise ValueError(f"{len(residuals)} block residuals for {len(self.transformer_blocks)} blocks.")
        for i, block in enumerate(self.transformer_blocks):
            x = self.run_block(block, x, caption, t, caption_bias, cross_attention_kwargs)
            if i < len(residuals):
                x = x + residuals[i]

        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)  # (B, 1, D) each
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))  # (B, N, p*p*out)
        p = self.config.patch_size
        output = self.unpatchify(x, hidden_states.shape[-2] // p, hidden_states.shape[-1] // p)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    @classmethod
    def from_dit(cls, dit, reparam_timestep: int = 500, caption_channels: int = 4096, **overrides):
        """Stage-1 init from a class-conditional DiT by the re-parameterization of section 2.3.

        See :func:`diffusers_pixart.models.conversion.from_dit`.
        """
        from .conversion import from_dit

        return from_dit(cls, dit, reparam_timestep=reparam_timestep, caption_channels=caption_channels, **overrides)

    @classmethod
    def from_original(cls, path_or_state_dict, sample_size: int | None = None, **overrides):
        """Load an official PixArt-alpha ``.pth`` checkpoint.

        See :func:`diffusers_pixart.models.conversion.from_original`.
        """
        from .conversion import from_original

        return from_original(cls, path_or_state_dict, sample_size=sample_size, **overrides)

    def to_original(self, null_caption: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """This model's weights in the official PixArt layout.

        See :func:`diffusers_pixart.models.conversion.to_original`.
        """
        from .conversion import to_original

        return to_original(self, null_caption=null_caption)

    def get_adapter_state_dict(self, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
        """The LoRA weights of one attached PEFT adapter (the first active one by default), as peft names them."""
        from peft.utils import get_peft_model_state_dict

        if not getattr(self, "_hf_peft_config_loaded", False):
            raise ValueError("No adapter is attached to this model: call `add_adapter` or `load_lora_adapter` first.")
        return get_peft_model_state_dict(self, adapter_name=adapter_name or self.active_adapters()[0])

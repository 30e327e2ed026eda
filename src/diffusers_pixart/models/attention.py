"""Attention for PixArt-alpha: one SDPA processor, fused projections and a per-generation caption cache.

During sampling the caption is the same at every denoising step, so everything computed from it alone is computed
once per generation rather than once per step: the caption projection, the keys and values of every
cross-attention, and the attention bias. This is bit-exact. Opt-in (``caption_cache(drop_padding=True)``), the model
also drops the caption columns that are padding in every row of the batch and runs the cross-attention without a
mask when no padding is left: mathematically exact (diffusers' ``-10000`` bias gives them a softmax weight of
``exp(-10000)``, 0 in float32 and bfloat16) but the shorter softmax sums in another order, so results move by float
rounding (about 4e-7 relative). Outside the context, and in a model compiled with ``torch.compile``, nothing is cached
and the model computes exactly what diffusers' model computes. With regional compilation (``compile_repeated_blocks``)
the caption projection and padding drop, outside the compiled blocks, are cached; the keys and values, inside them,
are not.

PixArt-Σ's key-value token compression (:class:`KVCompression`) is part of the self-attention here: a block's
``attn1.kv_compress``, applied by the processor to the keys and values of the image tokens before the product.

Shapes: ``B`` batch, ``N`` image tokens, ``L`` caption tokens, ``h`` heads, ``d`` head size, ``D = h * d``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusers_compat import Attention

T = TypeVar("T")


class CaptionCache:
    """Results of caption-only computations, each valid while its input tensors are unchanged.

    An entry is keyed by the module that computed it and remembers its inputs by identity and in-place version
    counter, so a new caption (for example one replaced by a step-end callback) or an in-place edit recomputes it.
    Entries are stored only when gradients are off: with autograd on, every call computes afresh.

    Args:
        drop_padding: let the model drop caption tokens that are padding in every row (see :func:`drop_padding`).
    """

    def __init__(self, drop_padding: bool = False) -> None:
        self.drop_padding = drop_padding
        self._entries: dict[int, tuple[tuple[torch.Tensor | None, ...], tuple[int, ...], Any]] = {}

    def trim(self, caption: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``caption`` (B, L, C) and ``mask`` (B, L), through :func:`drop_padding` when this cache asks for it."""
        return drop_padding(caption, mask) if self.drop_padding else (caption, mask)

    def get(self, owner: nn.Module, inputs: tuple[torch.Tensor | None, ...], compute: Callable[[], T]) -> T:
        """``compute()``, or its stored result for ``owner`` when ``inputs`` are the same tensors, unmodified."""
        versions = tuple(-1 if t is None else t._version for t in inputs)
        entry = self._entries.get(id(owner))
        if entry is not None and entry[1] == versions and all(a is b for a, b in zip(entry[0], inputs)):
            return entry[2]
        result = compute()
        if not torch.is_grad_enabled():
            self._entries[id(owner)] = (inputs, versions, result)
        return result


class _ActiveCache(threading.local):
    """Holder of the cache in use, one per thread: concurrent generations (threads) each use their own context's."""

    cache: CaptionCache | None = None


_active = _ActiveCache()


@contextmanager
def caption_cache(drop_padding: bool | None = None) -> Iterator[CaptionCache]:
    """Within this context, PixArt models compute caption-only work once per caption tensor (see module docstring).

    The pipeline wraps its denoising loop in it; wrap a pipeline call in ``caption_cache(drop_padding=True)`` to
    also drop padded caption tokens. Contexts nest and the innermost one is used; ``drop_padding=None`` takes the
    setting of the enclosing context (False outside any).
    """
    previous = _active.cache
    if drop_padding is None:
        drop_padding = previous is not None and previous.drop_padding
    _active.cache = CaptionCache(drop_padding)
    try:
        yield _active.cache
    finally:
        _active.cache = previous


def active_caption_cache() -> CaptionCache | None:
    """The cache of the innermost :func:`caption_cache` context; None outside any and while ``torch.compile`` traces
    (its lookups by tensor identity would break the graph: a compiled model computes everything at every call)."""
    if torch.compiler.is_compiling():
        return None
    return _active.cache


def drop_padding(caption: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop the caption tokens that are padding in every row: ``caption`` (B, L, C), keep-``mask`` (B, L) of 1/0.

    Returns ``(caption (B, L', C), mask (B, L') or None)``, the mask being None when no padding is left. Exact for
    the attention: the dropped keys had zero weight. Rows without any kept token (whose attention diffusers spreads
    evenly over all padding) and additive-bias masks (ndim 3) are returned unchanged.
    """
    if mask is None or mask.ndim != 2:
        return caption, mask
    keep = mask.bool()
    if not keep.any(dim=1).all():
        return caption, mask
    if keep.all():
        return caption, None
    columns = keep.any(dim=0).nonzero().squeeze(1)
    return caption.index_select(1, columns), mask.index_select(1, columns)


def scaled_dot_product_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` of (B, h, N, d) queries and (B, h, L, d) keys/values -> (B, h, N, d).

    Under CPU autocast (mixed-precision training on CPU) it runs in float32: the bfloat16 CPU kernels' backward is
    about 2x slower than float32's at PixArt's head sizes, while the projections around it keep the autocast dtype.
    """
    if query.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            mask = None if mask is None else mask.float()
            return F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=mask)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)


def _plain_linear(layer: nn.Module) -> bool:
    """True for an ``nn.Linear`` without an adapter (PEFT wraps adapted layers in its own module types)."""
    return type(layer) is nn.Linear


def _uses_fused(attn: Attention, layers: tuple[nn.Module, ...]) -> bool:
    """Whether to use ``attn``'s fused projection for ``layers``: fused, no gradients, and no adapter on a layer.

    With gradients on, the original layers are used so that training updates the real weights.
    """
    fused = getattr(attn, "fused_projections", False) and not torch.is_grad_enabled()
    return fused and all(_plain_linear(layer) for layer in layers)


#: The down-sampling operators of :class:`KVCompression`.
KV_COMPRESS_SAMPLINGS = ("conv", "conv_no_norm", "uniform")


class KVCompression(nn.Module):
    """PixArt-Σ's key-value token compression: keys or values of an H x W token grid down-sampled R x R.

    Self-attention then attends from all N queries to N / R^2 keys and values, so its two products cost R^2 times
    less (the Σ paper's KV token compression, used in the deep half of the blocks for 2K and 4K images).
    ``sampling`` chooses the operator, as in the Σ training code:

    - ``"conv"``: a depthwise R x R convolution of stride R, then a LayerNorm over the channels (its default eps),
      the operator of PixArt-Σ's training code, whose checkpoints store ``sr`` and ``norm`` (here ``conv`` and
      ``norm``). The convolution starts as the mean of each window ("Conv Avg Init": weights 1 / R^2, bias 0), the
      LayerNorm as the plain normalisation (weight 1, bias 0).
    - ``"conv_no_norm"``: the same convolution without the LayerNorm, the paper's formula. At its initialisation it
      is exactly the window mean, so where keys and values are constant over each R x R window the attention output
      is unchanged (each window's logit and value are those of its R^2 equal tokens: the same softmax weights).
    - ``"uniform"``: the first token of each window (the Σ code's ``uniform``; its ``ave``, nearest-neighbour
      interpolation by 1 / R, picks the same token). No weights; unchanged output on window-constant keys and values.

    A grid side not divisible by R loses its last partial window (``conv``) or keeps it (``uniform``), as in Σ.
    """

    def __init__(self, dim: int, factor: int, sampling: str = "conv"):
        super().__init__()
        if sampling not in KV_COMPRESS_SAMPLINGS:
            raise ValueError(f"Unknown KV compression sampling {sampling!r}: choose one of {KV_COMPRESS_SAMPLINGS}.")
        if int(factor) != factor or factor < 2:
            raise ValueError(f"The KV compression factor must be an integer >= 2, got {factor}.")
        self.factor, self.sampling = int(factor), sampling
        self.conv = nn.Conv2d(dim, dim, self.factor, stride=self.factor, groups=dim) if sampling != "uniform" else None
        self.norm = nn.LayerNorm(dim) if sampling == "conv" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of the Σ code: the convolution is the window mean, the LayerNorm the identity affine."""
        if self.conv is not None:
            nn.init.constant_(self.conv.weight, 1.0 / self.factor**2)
            nn.init.zeros_(self.conv.bias)
        if self.norm is not None:
            self.norm.reset_parameters()

    def forward(self, tokens: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, N, D) of a ``grid_size`` (H, W) grid, N = H * W, to (B, N', D) of the (H / R, W / R) grid."""
        height, width = grid_size
        batch, count, dim = tokens.shape
        if count != height * width:
            raise ValueError(f"KV compression of {count} tokens as a {height} x {width} grid.")
        grid = tokens.transpose(1, 2).reshape(batch, dim, height, width)  # (B, D, H, W)
        if self.conv is None:
            grid = grid[:, :, :: self.factor, :: self.factor]
        else:
            grid = self.conv(grid)  # (B, D, H / R, W / R)
        out = grid.flatten(2).transpose(1, 2)  # (B, N', D)
        return out if self.norm is None else self.norm(out)


class PixArtAttnProcessor:
    """Scaled-dot-product attention for PixArt's self- and cross-attention.

    Compared with diffusers' ``AttnProcessor2_0`` (same math): the caption bias (B, 1, L) is broadcast over heads
    instead of copied ``h`` times; fused ``to_qkv`` / ``to_kv`` projections are used when the model has them (see
    :func:`fuse_projections`) and no adapter is attached; inside :func:`caption_cache` the cross-attention keys and
    values are computed once per caption. A self-attention with ``attn.kv_compress`` (:class:`KVCompression`)
    compresses its keys and values, which needs the token grid, ``grid_size``.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        grid_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``hidden_states`` (B, N, D), ``encoder_hidden_states`` (B, L, D) or None, mask (B, 1, L) -> (B, N, D).

        ``grid_size``: the (H, W) token grid of ``hidden_states``, for KV compression. Extra keyword arguments (for
        example PEFT's ``scale``) are accepted and ignored, as diffusers' processor does.
        """
        batch = hidden_states.shape[0]
        compress = getattr(attn, "kv_compress", None) if encoder_hidden_states is None else None
        if compress is not None:
            if grid_size is None:
                raise ValueError("This self-attention compresses keys and values: pass its token grid `grid_size`.")
            query, key, value = self._project(attn, hidden_states, (attn.to_q, attn.to_k, attn.to_v), "to_qkv", False)
            key, value = compress(key, grid_size), compress(value, grid_size)  # (B, N / R^2, D)
            query, key, value = (self._heads(attn, x) for x in (query, key, value))
        elif encoder_hidden_states is None:
            query, key, value = self._project(attn, hidden_states, (attn.to_q, attn.to_k, attn.to_v), "to_qkv")
        else:
            query = self._heads(attn, attn.to_q(hidden_states))
            cache = active_caption_cache()
            if cache is None:
                key, value = self._project(attn, encoder_hidden_states, (attn.to_k, attn.to_v), "to_kv")
            else:
                key, value = cache.get(
                    attn,
                    (encoder_hidden_states,),
                    lambda: self._project(attn, encoder_hidden_states, (attn.to_k, attn.to_v), "to_kv"),
                )
        if attention_mask is not None:
            if attention_mask.ndim != 3:
                raise ValueError(f"Expected an additive attention mask of shape (B, 1, L), got {attention_mask.shape}.")
            attention_mask = attention_mask.unsqueeze(1).to(query.dtype)  # (B, 1, 1, L): broadcast over heads
        out = scaled_dot_product_attention(query, key, value, attention_mask)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * out.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))

    @staticmethod
    def _heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
        """(B, S, h*d) to (B, h, S, d)."""
        return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)

    def _project(
        self, attn: Attention, x: torch.Tensor, layers: tuple[nn.Module, ...], fused_name: str, heads: bool = True
    ) -> tuple[torch.Tensor, ...]:
        """Apply ``layers`` to ``x`` (B, S, D), through the fused ``fused_name`` when usable; each (B, h, S, d), or
        (B, S, D) with ``heads=False``."""
        if _uses_fused(attn, layers):
            outputs = getattr(attn, fused_name)(x).chunk(len(layers), dim=-1)
        else:
            outputs = [layer(x) for layer in layers]
        return tuple(self._heads(attn, out) if heads else out for out in outputs)


def fuse_projections(model: nn.Module) -> None:
    """Fuse the query/key/value (self-attention) and key/value (cross-attention) projections of every attention.

    Uses diffusers' ``Attention.fuse_projections``: it adds ``to_qkv`` / ``to_kv`` copies of the weights (so it
    costs their memory) that :class:`PixArtAttnProcessor` then uses while no adapter is attached. The copies are
    frozen snapshots: unfuse before training or saving (:func:`unfuse_projections`).
    """
    for module in model.modules():
        if isinstance(module, Attention) and not getattr(module, "fused_projections", False):
            module.fuse_projections(fuse=True)


def unfuse_projections(model: nn.Module) -> None:
    """Remove the fused copies added by :func:`fuse_projections`; the state dict is diffusers' again."""
    for module in model.modules():
        if isinstance(module, Attention) and getattr(module, "fused_projections", False):
            for name in ("to_qkv", "to_kv"):
                if hasattr(module, name):
                    delattr(module, name)
            module.fused_projections = False

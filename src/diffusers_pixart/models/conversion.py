"""Checkpoint conversion: the official PixArt-α and PixArt-Σ ``.pth`` files, and a DiT as the stage-1 init.

Two directions for the official layout (``diffusion/model/nets/PixArt.py`` / ``PixArtMS.py`` of PixArt-alpha and of
PixArt-sigma, which share it): :func:`from_original` reads a training checkpoint into
:class:`PixArtTransformer2DModel`, :func:`to_original` writes one back. Fused tensors split and join along their first
dimension: ``attn.qkv`` is ``[q; k; v]`` and ``cross_attn.kv_linear`` is ``[k; v]`` (the original reshapes them to
``(B, N, 3 or 2, heads, head_dim)``). PixArt-Σ's files differ only in values and in the blocks with KV token
compression, whose self-attention holds ``attn.sr`` (the depthwise R x R convolution, weight (D, 1, R, R)) and
``attn.norm`` (its LayerNorm), ours ``attn1.kv_compress.conv`` / ``.norm``; their null caption
``y_embedder.y_embedding`` has 300 rows (120 for α) and their ``pos_embed`` is built at interpolation scale 0.5 / 1 /
2 / 4 for 256 / 512 / 1024 / 2048 px.
:func:`controlnet_from_original` / :func:`controlnet_to_original` do the same for the released ControlNet checkpoints
(``diffusion/model/nets/pixart_controlnet.py``): block copies under ``controlnet.N.``, the base under ``base_model.``.

:func:`from_dit` is the re-parameterization of paper section 2.3, which the original authors never released. A DiT
block ``i`` computes its adaLN parameters with its own MLP, ``S(i) = f(i)(c + t)``; adaLN-single computes one global
``S = f(t)`` and adds a per-block table, ``S(i) = S + E(i)``. The global linear ``f`` starts as the mean of the DiT's
block linears (the choice that minimises the summed squared error ``sum_i |(f - f(i)) u|^2`` over blocks for any
change ``u`` of the SiLU-ed timestep embedding), and every ``E(i) = f(i)(t*) - f(t*)`` at the chosen timestep ``t*``
(500 in the paper), without the class condition: at ``t*`` the converted model is the DiT minus its class embedding.
The output layer gets the same treatment: PixArt modulates it with ``table + t_emb``, so ``table = g(t*) - t_emb(t*)``
where ``g`` is the DiT's final adaLN MLP. New parts start as the official recipe does: cross-attention output
projection zero (so each block is the DiT block, whatever the caption), query/key/value xavier-uniform, caption
projection normal(0.02) with zero biases.

Loading is safe: ``torch.load(weights_only=True)`` (safetensors when the file is one), and a file that is not a
checkpoint, a truncated file or a state dict of another architecture raises ``ValueError`` naming what is wrong.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel
from diffusers.utils import logging
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..diffusers_compat import config_init_keys, get_2d_sincos_pos_embed
from .pixart_transformer import kv_compressed_layers

if TYPE_CHECKING:
    from .controlnet import PixArtControlNetModel
    from .pixart_transformer import PixArtTransformer2DModel

logger = logging.get_logger(__name__)

#: Attention heads of the named DiT / PixArt sizes (S, B, L, XL), by hidden size: the weights do not record them.
HEADS_BY_HIDDEN_SIZE = {384: 6, 768: 12, 1024: 16, 1152: 16}
#: Timestep of the re-parameterization (paper section 2.3: "empirically, we use t = 500").
REPARAM_TIMESTEP = 500
#: Attribute of a model read by :func:`from_original` that holds the original fixed null caption (L, C).
NULL_CAPTION_ATTRIBUTE = "null_caption"
#: File written beside a converted transformer with the original null caption, under the key ``"null_caption"``.
NULL_CAPTION_FILE = "null_caption.safetensors"
#: Latent pixels per image pixel of the VAE every official checkpoint was trained with.
_VAE_SCALE = 8
#: Largest difference between a saved sin-cos position table and the one recomputed at the derived scale: the original
#: computes it in float64 and stores float32, diffusers computes it in float32 (sin of positions up to ~64: ~1e-5).
_POSITION_TABLE_ATOL = 1e-4


# --------------------------------------------------------------------------------------------------------------------
# Reading checkpoint files safely
# --------------------------------------------------------------------------------------------------------------------


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.safetensors`` file, or a PyTorch file with ``torch.load(weights_only=True)``, on the CPU.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one that is not a readable checkpoint
    (another kind of file, a truncated or corrupted one, or a pickle that needs arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{path} is not a readable safetensors checkpoint: {error}") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint (not a checkpoint, truncated, or needs code to load): {error}"
        ) from error


def select_state_dict(checkpoint: dict[str, Any], ema: bool | None = None, source: str = "checkpoint") -> dict:
    """The tensors of a checkpoint: a plain state dict, or a training dict holding one.

    Training dicts keep the weights under ``state_dict`` (PixArt) or ``model`` (DiT) and the EMA weights under
    ``state_dict_ema`` / ``ema``. ``ema=None`` takes the EMA weights when present, ``True`` requires them, ``False``
    takes the raw ones.
    """
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(f"{source} is not a state dict (got {type(checkpoint).__name__}).")
    raw = next((checkpoint[k] for k in ("state_dict", "model") if isinstance(checkpoint.get(k), dict)), None)
    averaged = next((checkpoint[k] for k in ("state_dict_ema", "ema") if isinstance(checkpoint.get(k), dict)), None)
    if raw is None and averaged is None:
        state_dict = checkpoint
        if ema:
            raise ValueError(f"EMA weights were asked for, but {source} is a plain state dict without them.")
    elif ema is False:
        if raw is None:
            raise ValueError(f"Raw weights were asked for, but {source} holds only EMA weights.")
        state_dict = raw
    elif averaged is not None:
        state_dict = averaged
    elif ema:
        raise ValueError(f"EMA weights were asked for, but {source} has no 'state_dict_ema' or 'ema' entry.")
    else:
        state_dict = raw
    bad = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(f"{source} is not a state dict of tensors: entries {bad[:5]} are not tensors.")
    return state_dict


def _read(source: str | os.PathLike | dict, ema: bool | None) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a path or dict, and a name for messages."""
    if isinstance(source, dict):
        return select_state_dict(source, ema), "the state dict"
    return select_state_dict(load_checkpoint_file(source), ema, source=str(source)), str(source)


def _check_keys(present: set[str], expected: set[str], what: str, optional: set[str] = frozenset()) -> None:
    """Raise ``ValueError`` listing the missing and unexpected keys of a state dict, if any."""
    missing = sorted(expected - present)
    unexpected = sorted(present - expected - optional)
    if missing or unexpected:
        lines = [f"{what} does not have the expected keys."]
        for name, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                lines.append(f"{len(keys)} {name}: {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}")
        raise ValueError("\n".join(lines))


def _require(keys: set[str], required: set[str], what: str) -> None:
    """Raise ``ValueError`` if keys that identify the layout are absent, naming them and a few keys that are there."""
    missing = sorted(required - keys)
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}; its keys start with {', '.join(sorted(keys)[:6])}.")


def _layer_count(keys: set[str], prefix: str) -> int:
    """1 + the largest N of the keys ``{prefix}.N.*`` (0 if none)."""
    numbers = [int(m.group(1)) for key in keys if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", key))]
    return max(numbers, default=-1) + 1


def _heads(hidden_size: int, overrides: dict[str, Any], what: str) -> int:
    """The attention head count: from ``overrides`` or the named model sizes."""
    heads = overrides.get("num_attention_heads", HEADS_BY_HIDDEN_SIZE.get(hidden_size))
    if heads is None:
        raise ValueError(
            f"{what} has hidden size {hidden_size}, which is none of the named sizes {sorted(HEADS_BY_HIDDEN_SIZE)}: "
            "pass num_attention_heads (the weights do not record it)."
        )
    if hidden_size % heads:
        raise ValueError(f"Hidden size {hidden_size} is not divisible by num_attention_heads={heads}.")
    return heads


def _grid_sample_size(pos_embed: torch.Tensor | None, patch_size: int) -> int | None:
    """The latent ``sample_size`` of a saved (1, N, D) sin-cos position table of a square grid, if there is one."""
    if pos_embed is None:
        return None
    side = round(pos_embed.shape[1] ** 0.5)
    if side * side != pos_embed.shape[1]:
        raise ValueError(f"The saved pos_embed has {pos_embed.shape[1]} positions, not a square grid.")
    return side * patch_size


def _interpolation_scale(pos_embed: torch.Tensor, sample_size: int, patch_size: int, what: str) -> float | None:
    """The ``interpolation_scale`` (the original's ``lewei_scale``) of a saved (1, N, D) sin-cos position table.

    Along the width the table holds ``sin(x)`` in channel 0 and ``cos(x)`` in channel ``D / 4`` (frequency 1), and
    the position of the second column is ``x = 1 / ((grid / base_size) * scale)`` with ``base_size = sample_size //
    patch_size``; the table recomputed at that scale must then equal the saved one. ``None`` for a 1x1 grid (one
    position, 0 at any scale). Raises ``ValueError`` when the table is not a sin-cos table of its grid.
    """
    grid, dim = round(pos_embed.shape[1] ** 0.5), pos_embed.shape[2]
    if grid < 2:
        return None
    table = pos_embed[0].double()
    step = torch.atan2(table[1, 0], table[1, dim // 4]).item()
    if step <= 0:
        raise ValueError(
            f"{what}: the saved pos_embed is not a sin-cos position table (its positions do not increase)."
        )
    base_size = sample_size // patch_size
    scale = base_size / (grid * step)
    # The stored table is float32: prefer the round value it was most likely made with (1.5, not 1.4999999).
    error = math.inf
    for candidate in dict.fromkeys((max(1, round(scale)), float(f"{scale:.6g}"), scale)):
        table_at = get_2d_sincos_pos_embed(dim, grid, base_size=base_size, interpolation_scale=candidate)
        error = (table_at.double() - table).abs().max().item()
        if error <= _POSITION_TABLE_ATOL:
            return candidate
    raise ValueError(
        f"{what}: the saved pos_embed is not the sin-cos table of its {grid}x{grid} grid at any interpolation "
        f"scale (at the closest, {scale:g}, it differs by {error:.3g})."
    )


# --------------------------------------------------------------------------------------------------------------------
# Key maps
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One original tensor and the diffusers tensors it holds; several targets are a fused tensor split on dim 0."""

    source: str
    targets: tuple[str, ...]


def _linear(source: str, *targets: str) -> list[_Entry]:
    """Entries for the weight and bias of a (possibly fused) linear or convolution."""
    return [_Entry(f"{source}.{p}", tuple(f"{t}.{p}" for t in targets)) for p in ("weight", "bias")]


def _block_entries(src: str, dst: str, kv_compression: str | None = None) -> list[_Entry]:
    """The key map of one original T2I block (``PixArtBlock`` of PixArt.py) at ``src`` to our ``PixArtBlock``.

    ``kv_compression``: the block's KV compression operator (``"conv"``: Σ's ``attn.sr`` and ``attn.norm``;
    ``"conv_no_norm"``: ``attn.sr`` alone; ``"uniform"`` or None: no weights).
    """
    entries = [_Entry(f"{src}.scale_shift_table", (f"{dst}.scale_shift_table",))]
    entries += _linear(f"{src}.attn.qkv", f"{dst}.attn1.to_q", f"{dst}.attn1.to_k", f"{dst}.attn1.to_v")
    entries += _linear(f"{src}.attn.proj", f"{dst}.attn1.to_out.0")
    if kv_compression in ("conv", "conv_no_norm"):
        entries += _linear(f"{src}.attn.sr", f"{dst}.attn1.kv_compress.conv")
    if kv_compression == "conv":
        entries += _linear(f"{src}.attn.norm", f"{dst}.attn1.kv_compress.norm")
    entries += _linear(f"{src}.cross_attn.q_linear", f"{dst}.attn2.to_q")
    entries += _linear(f"{src}.cross_attn.kv_linear", f"{dst}.attn2.to_k", f"{dst}.attn2.to_v")
    entries += _linear(f"{src}.cross_attn.proj", f"{dst}.attn2.to_out.0")
    entries += _linear(f"{src}.mlp.fc1", f"{dst}.ff.net.0.proj")
    entries += _linear(f"{src}.mlp.fc2", f"{dst}.ff.net.2")
    return entries


def _pixart_entries(
    num_layers: int, micro_conditions: bool, kv_layers: Iterable[int] = (), kv_sampling: str | None = None
) -> list[_Entry]:
    """The key map of the official PixArt layout to diffusers' ``PixArtTransformer2DModel`` (and, for the blocks
    ``kv_layers``, our KV compression weights of the operator ``kv_sampling``)."""
    kv_layers = set(kv_layers)
    entries = _linear("x_embedder.proj", "pos_embed.proj")
    entries += _linear("t_embedder.mlp.0", "adaln_single.emb.timestep_embedder.linear_1")
    entries += _linear("t_embedder.mlp.2", "adaln_single.emb.timestep_embedder.linear_2")
    if micro_conditions:
        for original, ours in (("csize_embedder", "resolution_embedder"), ("ar_embedder", "aspect_ratio_embedder")):
            entries += _linear(f"{original}.mlp.0", f"adaln_single.emb.{ours}.linear_1")
            entries += _linear(f"{original}.mlp.2", f"adaln_single.emb.{ours}.linear_2")
    entries += _linear("t_block.1", "adaln_single.linear")
    entries += _linear("y_embedder.y_proj.fc1", "caption_projection.linear_1")
    entries += _linear("y_embedder.y_proj.fc2", "caption_projection.linear_2")
    for i in range(num_layers):
        entries += _block_entries(f"blocks.{i}", f"transformer_blocks.{i}", kv_sampling if i in kv_layers else None)
    entries.append(_Entry("final_layer.scale_shift_table", ("scale_shift_table",)))
    entries += _linear("final_layer.linear", "proj_out")
    return entries


def _dit_entries(num_layers: int) -> list[_Entry]:
    """The key map of the facebookresearch DiT layout to diffusers' ``DiTTransformer2DModel``.

    The original has one timestep and class embedder; diffusers keeps a copy in every block, of which this map names
    block 0's (the caller copies it to the others).
    """
    emb = "transformer_blocks.0.norm1.emb"
    entries = _linear("x_embedder.proj", "pos_embed.proj")
    entries += _linear("t_embedder.mlp.0", f"{emb}.timestep_embedder.linear_1")
    entries += _linear("t_embedder.mlp.2", f"{emb}.timestep_embedder.linear_2")
    entries.append(_Entry("y_embedder.embedding_table.weight", (f"{emb}.class_embedder.embedding_table.weight",)))
    for i in range(num_layers):
        src, dst = f"blocks.{i}", f"transformer_blocks.{i}"
        entries += _linear(f"{src}.attn.qkv", f"{dst}.attn1.to_q", f"{dst}.attn1.to_k", f"{dst}.attn1.to_v")
        entries += _linear(f"{src}.attn.proj", f"{dst}.attn1.to_out.0")
        entries += _linear(f"{src}.mlp.fc1", f"{dst}.ff.net.0.proj")
        entries += _linear(f"{src}.mlp.fc2", f"{dst}.ff.net.2")
        entries += _linear(f"{src}.adaLN_modulation.1", f"{dst}.norm1.linear")
    entries += _linear("final_layer.adaLN_modulation.1", "proj_out_1")
    entries += _linear("final_layer.linear", "proj_out_2")
    return entries


def _split(state_dict: dict[str, torch.Tensor], entries: list[_Entry]) -> dict[str, torch.Tensor]:
    """Original layout to diffusers layout (keys already checked)."""
    converted = {}
    for entry in entries:
        tensor = state_dict[entry.source]
        if tensor.shape[0] % len(entry.targets):
            raise ValueError(f"{entry.source} has {tensor.shape[0]} rows, not {len(entry.targets)} equal parts.")
        for key, part in zip(entry.targets, tensor.chunk(len(entry.targets), dim=0)):
            converted[key] = part.clone()
    return converted


def _check_shapes(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], entries: list[_Entry], what: str
) -> None:
    """Raise ``ValueError`` naming the original tensors whose shapes do not fit ``model`` (keys already checked)."""
    ours = model.state_dict()
    wrong = []
    for entry in entries:
        shapes = [tuple(ours[t].shape) for t in entry.targets]
        expected = (sum(shape[0] for shape in shapes), *shapes[0][1:])  # targets joined on dim 0
        if tuple(state_dict[entry.source].shape) != expected:
            wrong.append(f"{entry.source} {tuple(state_dict[entry.source].shape)} (expected {expected})")
    if wrong:
        raise ValueError(
            f"{what} has tensors of other shapes: {'; '.join(wrong[:4])}{'; ...' if len(wrong) > 4 else ''}."
        )


def _join(model: torch.nn.Module, entries: list[_Entry], what: str) -> dict[str, torch.Tensor]:
    """Diffusers layout to original layout: each original tensor is its targets in ``model`` joined on dim 0."""
    ours = model.state_dict()
    _check_keys(set(ours), {t for e in entries for t in e.targets}, f"{what}'s state dict")
    return {e.source: torch.cat([ours[t] for t in e.targets], dim=0).detach().clone() for e in entries}


def _load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str, assign: bool) -> None:
    """``load_state_dict(strict=True)`` with a ``ValueError`` for keys or shapes that do not fit."""
    _check_keys(set(state_dict), set(model.state_dict()), what)
    try:
        model.load_state_dict(state_dict, strict=True, assign=assign)
    except RuntimeError as error:
        raise ValueError(f"{what} does not fit the architecture inferred from its keys: {error}") from error


def _check_overrides(cls: type, overrides: dict[str, Any], fixed: dict[str, Any], what: str) -> None:
    """Overrides must be config arguments of ``cls`` and must not contradict what the checkpoint fixes."""
    unknown = sorted(set(overrides) - config_init_keys(cls))
    if unknown:
        raise ValueError(f"Unknown config arguments {unknown} for {cls.__name__}.")
    clashes = {k: (v, fixed[k]) for k, v in overrides.items() if k in fixed and v != fixed[k]}
    if clashes:
        detail = ", ".join(f"{k}={given!r} (the {what} has {found!r})" for k, (given, found) in clashes.items())
        raise ValueError(f"These arguments contradict the {what}: {detail}.")


# --------------------------------------------------------------------------------------------------------------------
# The official PixArt layout
# --------------------------------------------------------------------------------------------------------------------


def _sample_size_from_name(name: str) -> int | None:
    """The latent size named by an official file name: ``...-256x256.pth`` -> 32, ``...-1024-MS.pth`` -> 128,
    ``PixArt-Sigma-XL-2-2K-MS.pth`` -> 256. Other names (the training code's ``epoch_1_step_500.pth``) name none."""
    match = re.search(r"(?:^|[-_])(\d{3,4}|\dK)(?:x(\d{3,4})|-MS)$", Path(name).stem)
    if match is None or (match.group(2) is not None and match.group(2) != match.group(1)):
        return None
    side = match.group(1)
    return (int(side[:-1]) * 1024 if side.endswith("K") else int(side)) // _VAE_SCALE


def _kv_compression(state_dict: dict[str, torch.Tensor], num_layers: int, what: str) -> dict[str, Any]:
    """The KV compression config of a PixArt-Σ state dict, from its blocks' ``attn.sr`` weights; {} without any.

    The factor is the convolution's kernel size; ``attn.norm`` beside it makes the operator Σ's ``"conv"``, its
    absence ``"conv_no_norm"``. Σ's ``uniform`` sampling has no weights to tell it: pass its config as overrides.
    """
    if any(".attn.q_norm." in key or ".attn.k_norm." in key for key in state_dict):
        raise ValueError(f"{what} was trained with qk_norm (attn.q_norm, attn.k_norm), which this model does not have.")
    layers = [i for i in range(num_layers) if f"blocks.{i}.attn.sr.weight" in state_dict]
    if not layers:
        return {}
    factors = sorted({state_dict[f"blocks.{i}.attn.sr.weight"].shape[-1] for i in layers})
    normed = {f"blocks.{i}.attn.norm.weight" in state_dict for i in layers}
    if len(factors) != 1 or len(normed) != 1:
        raise ValueError(
            f"{what} compresses keys and values by factors {factors}, with{'out' if normed == {False} else ''} "
            "LayerNorms in some blocks only: one factor and one operator for all compressed blocks is supported."
        )
    sampling = "conv" if normed.pop() else "conv_no_norm"
    return {"kv_compress_factor": factors[0], "kv_compress_layers": layers, "kv_compress_sampling": sampling}


def from_original(
    cls: type[PixArtTransformer2DModel],
    path_or_state_dict: str | os.PathLike | dict,
    sample_size: int | None = None,
    ema: bool | None = None,
    **overrides: Any,
) -> PixArtTransformer2DModel:
    """Load an official PixArt-α or PixArt-Σ checkpoint (``PixArt-XL-2-256x256.pth``, ``-512x512.pth``,
    ``-1024-MS.pth``; ``PixArt-Sigma-XL-2-256x256.pth``, ``-512-MS.pth``, ``-1024-MS.pth``, ``-2K-MS.pth``), or one
    written by either training code.

    Args:
        cls: the model class to build.
        path_or_state_dict: a ``.pth``/``.pt``/``.safetensors`` file, or the loaded dict: a state dict, or a
            training dict with ``state_dict`` and optionally ``state_dict_ema``.
        sample_size: latent size (image size / 8) the model was trained at; by default read from the saved
            ``pos_embed`` table or the file name.
        ema: take the EMA weights (``None``: when present).
        **overrides: config arguments, e.g. ``num_attention_heads`` for a hidden size that is not a named size, or
            the ``kv_compress_*`` of a Σ model trained with weightless (``uniform``) KV compression.

    The layer count, hidden size, caption channels, patch size, channels and micro-conditions (``csize_embedder`` /
    ``ar_embedder``) come from the keys; the ``interpolation_scale`` (the original's ``lewei_scale``) from the values
    of the saved ``pos_embed`` table, which is then dropped (the model recomputes it; without a table the scale is
    diffusers' default, ``max(sample_size // 64, 1)``; an ``interpolation_scale`` override that contradicts the table
    raises ``ValueError`` naming both). KV compression comes from the blocks' ``attn.sr`` / ``attn.norm`` weights
    (:func:`_kv_compression`). The fixed null caption ``y_embedder.y_embedding`` (L, caption_channels: 120 rows for
    α, 300 for Σ), when present, is kept on the returned model as the attribute ``null_caption`` (see
    :func:`save_null_caption`).
    """
    state_dict, name = _read(path_or_state_dict, ema)
    what = f"{name} (as an original PixArt checkpoint)"
    keys = set(state_dict)
    _require(
        keys,
        {"x_embedder.proj.weight", "t_block.1.weight", "y_embedder.y_proj.fc1.weight", "blocks.0.mlp.fc1.weight"},
        what,
    )
    patch = state_dict["x_embedder.proj.weight"]
    dim, in_channels, patch_size = patch.shape[0], patch.shape[1], patch.shape[2]
    micro = "csize_embedder.mlp.0.weight" in keys
    num_layers = _layer_count(keys, "blocks")
    kv_found = _kv_compression(state_dict, num_layers, what)
    kv = {**kv_found, **{k: v for k, v in overrides.items() if k.startswith("kv_compress_")}}
    entries = _pixart_entries(
        num_layers, micro, kv_compressed_layers(kv, num_layers), kv.get("kv_compress_sampling", "conv")
    )
    _check_keys(keys, {e.source for e in entries}, what, optional={"pos_embed", "y_embedder.y_embedding"})
    if state_dict["blocks.0.mlp.fc1.weight"].shape[0] != 4 * dim:
        raise ValueError(f"{name}: the feed-forward is not 4x the hidden size {dim} (mlp_ratio 4 is assumed).")

    found = {_grid_sample_size(state_dict.get("pos_embed"), patch_size)}
    if not isinstance(path_or_state_dict, dict):
        found.add(_sample_size_from_name(str(path_or_state_dict)))
    found.discard(None)
    if sample_size is None:
        if len(found) != 1:
            raise ValueError(
                f"Cannot tell the sample size of {name} (its pos_embed and file name give {sorted(found) or 'none'}): "
                "pass sample_size (image size / 8)."
            )
        sample_size = found.pop()
    heads = _heads(dim, overrides, name)
    fixed: dict[str, Any] = {}
    if "pos_embed" in state_dict:
        scale = _interpolation_scale(state_dict["pos_embed"], sample_size, patch_size, name)
        if scale is not None:
            fixed["interpolation_scale"] = scale
    fixed.update(
        num_attention_heads=heads,
        attention_head_dim=dim // heads,
        in_channels=in_channels,
        out_channels=state_dict["final_layer.linear.weight"].shape[0] // patch_size**2,
        num_layers=num_layers,
        cross_attention_dim=dim,
        caption_channels=state_dict["y_embedder.y_proj.fc1.weight"].shape[1],
        sample_size=sample_size,
        patch_size=patch_size,
        use_additional_conditions=micro,
        **kv_found,
    )
    _check_overrides(cls, overrides, fixed, "checkpoint")
    with torch.device("meta"):
        model = cls(**{**fixed, **overrides})
    _load_strict(model, _split(state_dict, entries), what, assign=True)
    null_caption = state_dict.get("y_embedder.y_embedding")
    if null_caption is not None:
        setattr(model, NULL_CAPTION_ATTRIBUTE, null_caption.clone())
    return model.eval()


def to_original(model: PixArtTransformer2DModel, null_caption: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` in the official PixArt layout, for the original code base.

    Includes the ``pos_embed`` table of the training grid and ``y_embedder.y_embedding``: ``null_caption``
    (L, caption_channels), else the one the model was loaded with by :func:`from_original`. Without either the key
    is left out (with a warning): the original code then keeps its random null caption. A model with KV compression
    writes Σ's ``attn.sr`` / ``attn.norm`` in its compressed blocks; the Σ code reads them with a
    ``kv_compress_config`` of the same factor, layers and sampling (``uniform`` compression has no weights to write).
    """
    config = model.config
    if config.caption_channels is None:
        raise ValueError("The original layout has a caption projection (y_embedder): caption_channels is None here.")
    kv_layers = kv_compressed_layers(config, config.num_layers)
    entries = _pixart_entries(
        config.num_layers, model.use_additional_conditions, kv_layers, config.get("kv_compress_sampling")
    )
    original = _join(model, entries, "The model")
    grid = config.sample_size // config.patch_size
    original["pos_embed"] = model.pos_embed.position_table(grid, grid, model.device).detach().clone()
    null_caption = getattr(model, NULL_CAPTION_ATTRIBUTE, None) if null_caption is None else null_caption
    if null_caption is None:
        logger.warning("No null caption given: the checkpoint has no y_embedder.y_embedding.")
    else:
        if null_caption.ndim != 2 or null_caption.shape[1] != config.caption_channels:
            raise ValueError(f"null_caption must be (L, {config.caption_channels}), got {tuple(null_caption.shape)}.")
        original["y_embedder.y_embedding"] = null_caption.detach().clone()
    return original


def save_null_caption(null_caption: torch.Tensor, folder: str | os.PathLike) -> Path:
    """Write the original null caption (L, C) beside a saved model as ``null_caption.safetensors``.

    A pipeline can pass it (with a batch dimension) as ``negative_prompt_embeds`` to reproduce the original code's
    unconditional branch.
    """
    from safetensors.torch import save_file

    path = Path(folder) / NULL_CAPTION_FILE
    save_file({"null_caption": null_caption.contiguous()}, str(path))
    return path


def load_null_caption(folder: str | os.PathLike) -> torch.Tensor | None:
    """The null caption (L, C) saved beside a model by :func:`save_null_caption`, or ``None`` if there is none."""
    path = Path(folder) / NULL_CAPTION_FILE
    return load_checkpoint_file(path)["null_caption"] if path.is_file() else None


# --------------------------------------------------------------------------------------------------------------------
# The official ControlNet layout
# --------------------------------------------------------------------------------------------------------------------

#: Key prefixes of an original ControlNet checkpoint. ``train_scripts/train_controlnet.py`` saves the whole
#: ``ControlPixArtHalf`` / ``ControlPixArtMSHalf`` (``diffusion/model/nets/pixart_controlnet.py``): the frozen base
#: under ``base_model.`` and the trainable ``ControlT2IDitBlockHalf`` copies under ``controlnet.N.``.
CONTROLNET_PREFIX = "controlnet."
BASE_PREFIX = "base_model."
#: Largest difference of the checked base weights still taken as the same base (float16 rounding of values < 1).
_BASE_WEIGHT_ATOL = 1e-3


def _controlnet_entries(num_layers: int) -> list[_Entry]:
    """The key map of the original copies to :class:`~diffusers_pixart.models.controlnet.PixArtControlNetModel`.

    Copy N holds ``copied_block`` (a T2I block) and the zero-initialised ``after_proj``; copy 0 alone also holds
    ``before_proj``, applied to the embedded control latents before they join the output of base block 0.
    """
    entries = _linear(f"{CONTROLNET_PREFIX}0.before_proj", "before_proj")
    for i in range(num_layers):
        entries += _block_entries(f"{CONTROLNET_PREFIX}{i}.copied_block", f"controlnet_blocks.{i}")
        entries += _linear(f"{CONTROLNET_PREFIX}{i}.after_proj", f"after_proj.{i}")
    return entries


def _describe_base(hidden_size: int, num_blocks: int, micro_conditions: bool) -> str:
    """``"hidden size 1152, 28 blocks, micro-conditions"`` for error messages."""
    return f"hidden size {hidden_size}, {num_blocks} blocks, {'' if micro_conditions else 'no '}micro-conditions"


def _check_against_saved_base(transformer: PixArtTransformer2DModel, base: dict[str, torch.Tensor], name: str) -> None:
    """Raise ``ValueError`` if the base saved with a ControlNet differs in shape from ``transformer``; warn if only
    its weights differ (a fine-tuned base may be meant, but the ControlNet was trained on the saved one)."""
    saved = (
        base["x_embedder.proj.weight"].shape[0],
        _layer_count(set(base), "blocks"),
        "csize_embedder.mlp.0.weight" in base,
    )
    given = (transformer.inner_dim, len(transformer.transformer_blocks), transformer.use_additional_conditions)
    if saved != given:
        raise ValueError(
            f"{name} is a ControlNet for another base: it was saved with a base of {_describe_base(*saved)}; the "
            f"given transformer has {_describe_base(*given)}."
        )
    pairs = (
        (base["x_embedder.proj.weight"], transformer.pos_embed.proj.weight),
        (base["t_block.1.weight"], transformer.adaln_single.linear.weight),
    )
    difference = max((a.float() - b.detach().float().cpu()).abs().max().item() for a, b in pairs)
    if difference > _BASE_WEIGHT_ATOL:
        logger.warning(
            f"The transformer's weights differ from the base saved with {name} (patch embedding and adaLN-single "
            f"by up to {difference:.3g}): the ControlNet was trained on that base."
        )


def _controlnet_parts(state_dict: dict[str, torch.Tensor], what: str) -> tuple[int, int, dict[str, torch.Tensor]]:
    """The number of copies, their hidden size and the saved base (keys without ``base_model.``; empty if absent) of
    an original ControlNet state dict, whose keys and widths are checked (``ValueError`` naming the problem)."""
    keys = set(state_dict)
    first = f"{CONTROLNET_PREFIX}0"
    _require(keys, {f"{first}.before_proj.weight", f"{first}.copied_block.mlp.fc1.weight"}, what)
    outside = sorted(k for k in keys if not k.startswith((CONTROLNET_PREFIX, BASE_PREFIX)))
    if outside:
        raise ValueError(f"{what} has keys outside {CONTROLNET_PREFIX}* and {BASE_PREFIX}*: {', '.join(outside[:6])}.")
    num_layers = _layer_count(keys, CONTROLNET_PREFIX.rstrip("."))
    copies = {k for k in keys if k.startswith(CONTROLNET_PREFIX)}
    _check_keys(copies, {e.source for e in _controlnet_entries(num_layers)}, what)
    dim = state_dict[f"{first}.before_proj.weight"].shape[0]
    if state_dict[f"{first}.copied_block.mlp.fc1.weight"].shape[0] != 4 * dim:
        raise ValueError(f"{what}: the feed-forward is not 4x the hidden size {dim} (mlp_ratio 4 is assumed).")
    base = {k[len(BASE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(BASE_PREFIX)}
    if base:
        _require(set(base), {"x_embedder.proj.weight", "t_block.1.weight", "blocks.0.mlp.fc1.weight"}, what)
        saved_dim, saved_blocks = base["x_embedder.proj.weight"].shape[0], _layer_count(set(base), "blocks")
        if saved_dim != dim or saved_blocks <= num_layers:
            raise ValueError(
                f"{what} is inconsistent: {num_layers} block copies of hidden size {dim}, saved with a base of "
                f"hidden size {saved_dim} and {saved_blocks} blocks (the copies feed base blocks 1 to {num_layers})."
            )
    return num_layers, dim, base


@torch.no_grad()
def controlnet_from_original(
    cls: type[PixArtControlNetModel],
    path_or_state_dict: str | os.PathLike | dict,
    transformer: PixArtTransformer2DModel | None = None,
    sample_size: int | None = None,
    ema: bool | None = None,
    load_base: bool = True,
    **overrides: Any,
) -> tuple[PixArtControlNetModel, PixArtTransformer2DModel | None]:
    """Load an official PixArt ControlNet checkpoint (``PixArt-XL-2-1024-ControlNet.pth`` of
    ``PixArt-alpha/PixArt-ControlNet``, or one written by the original ``train_scripts/train_controlnet.py``).

    The original saves ``{"state_dict": model.state_dict(), ...}`` of the whole ``ControlPixArtHalf`` (512px) or
    ``ControlPixArtMSHalf`` (1024px): the frozen base under ``base_model.`` in the layout :func:`from_original` reads,
    and copy N under ``controlnet.N.`` (see :func:`_controlnet_entries`). Its forward is the data flow of
    :class:`~diffusers_pixart.models.controlnet.PixArtControlNetModel`, so the converted pair computes what the
    original computes.

    Args:
        cls: the ControlNet class to build.
        path_or_state_dict: a ``.pth``/``.pt``/``.safetensors`` file, or the loaded dict (a state dict or a training
            dict holding one).
        transformer: the base the ControlNet will run with, if already loaded: its block settings (heads, ...),
            device and dtype are used, and weights for another base raise ``ValueError`` naming both (another hidden
            size, too few blocks for the copies, or a saved base of other width, depth or micro-conditions; a saved
            base of the same shapes but other weights is only warned about).
        sample_size: latent size of the saved base, when its ``pos_embed`` table is not in the file.
        ema: take the EMA weights (``None``: when present).
        load_base: also convert the saved base (else, or when the file has none, the second result is ``None``).
        **overrides: ControlNet config arguments, e.g. ``num_attention_heads`` for a width that is not a named size.

    Returns:
        The ControlNet (eval mode) and the base saved with it (eval mode, its null caption kept as by
        :func:`from_original`) or ``None``.
    """
    from .controlnet import BLOCK_CONFIG_KEYS
    from .pixart_transformer import PixArtTransformer2DModel

    state_dict, name = _read(path_or_state_dict, ema)
    what = f"{name} (as an original PixArt ControlNet checkpoint)"
    num_layers, dim, base = _controlnet_parts(state_dict, what)
    entries = _controlnet_entries(num_layers)
    if transformer is not None:
        if transformer.inner_dim != dim:
            raise ValueError(
                f"{name} is a ControlNet for another base: its copies have hidden size {dim}, the given transformer "
                f"{transformer.inner_dim}."
            )
        if base:
            _check_against_saved_base(transformer, base, name)
        fixed = {key: transformer.config[key] for key in BLOCK_CONFIG_KEYS}
        source = "given transformer"
    else:
        heads = _heads(dim, overrides, name)
        fixed = dict(num_attention_heads=heads, attention_head_dim=dim // heads, cross_attention_dim=dim)
        source = "checkpoint"
    fixed["num_layers"] = num_layers
    _check_overrides(cls, overrides, fixed, source)
    with torch.device("meta"):
        controlnet = cls(**{**fixed, **overrides})
    _check_shapes(controlnet, state_dict, entries, what)
    _load_strict(controlnet, _split(state_dict, entries), what, assign=True)
    if transformer is not None:
        controlnet.check_transformer(transformer)
        controlnet.to(device=transformer.device, dtype=transformer.dtype)
    saved_base = None
    if load_base and base:
        heads = {"num_attention_heads": controlnet.config.num_attention_heads}
        saved_base = from_original(PixArtTransformer2DModel, base, sample_size=sample_size, **heads)
    return controlnet.eval(), saved_base


def controlnet_to_original(
    controlnet: PixArtControlNetModel,
    transformer: PixArtTransformer2DModel | None = None,
    null_caption: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The state dict of ``controlnet`` in the official layout (``controlnet.N.*``), with its base ``transformer``
    under ``base_model.*`` (see :func:`to_original`, which ``null_caption`` is passed to) when given.

    Save it as ``{"state_dict": ...}``, as the original training does, for the original code's loaders.
    """
    original = _join(controlnet, _controlnet_entries(controlnet.config.num_layers), "The ControlNet")
    if transformer is not None:
        controlnet.check_transformer(transformer)
        original.update({BASE_PREFIX + k: v for k, v in to_original(transformer, null_caption).items()})
    return original


# --------------------------------------------------------------------------------------------------------------------
# DiT to PixArt: the re-parameterization of section 2.3
# --------------------------------------------------------------------------------------------------------------------


def _dit_from_original(
    state_dict: dict[str, torch.Tensor], name: str, overrides: dict[str, Any]
) -> DiTTransformer2DModel:
    """A diffusers DiT running the facebookresearch DiT's math, from an original-layout state dict.

    Two constants differ between the two implementations and are set to the original's here: the LayerNorm eps
    (1e-6 everywhere) and the timestep frequencies (``downscale_freq_shift=0``: ``exp(-ln(10000) k / 128)``; diffusers'
    DiT uses ``k / 127``).
    """
    what = f"{name} (as an original DiT checkpoint)"
    keys = set(state_dict)
    core = {"x_embedder.proj.weight", "y_embedder.embedding_table.weight", "blocks.0.adaLN_modulation.1.weight"}
    _require(keys, core, what)
    num_layers = _layer_count(keys, "blocks")
    _check_keys(keys, {e.source for e in _dit_entries(num_layers)}, what, optional={"pos_embed"})
    patch = state_dict["x_embedder.proj.weight"]
    dim, patch_size = patch.shape[0], patch.shape[2]
    sample_size = overrides.get("sample_size") or _grid_sample_size(state_dict.get("pos_embed"), patch_size)
    if sample_size is None:
        raise ValueError(f"{name} has no pos_embed to tell its size: pass sample_size (image size / 8).")
    heads = _heads(dim, overrides, name)
    dit = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=dim // heads,
        in_channels=patch.shape[1],
        out_channels=state_dict["final_layer.linear.weight"].shape[0] // patch_size**2,
        num_layers=num_layers,
        sample_size=sample_size,
        patch_size=patch_size,
        num_embeds_ada_norm=state_dict["y_embedder.embedding_table.weight"].shape[0] - 1,
        norm_eps=1e-6,
    )
    converted = _split(state_dict, _dit_entries(num_layers))
    shared = {k: v for k, v in converted.items() if k.startswith("transformer_blocks.0.norm1.emb.")}
    for i in range(1, num_layers):
        converted.update({k.replace(".0.", f".{i}.", 1): v.clone() for k, v in shared.items()})
    _load_strict(dit, converted, what, assign=False)
    for block in dit.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return dit.eval()


def load_dit(
    dit: DiTTransformer2DModel | str | os.PathLike, ema: bool | None = None, **overrides: Any
) -> DiTTransformer2DModel:
    """A DiT from a diffusers model, a diffusers folder (pipeline or transformer), a Hub id, or an original file.

    Original files (facebookresearch layout, e.g. ``DiT-XL-2-256x256.pt``, or a training checkpoint with
    ``model``/``ema``) become a ``DiTTransformer2DModel`` that computes what the original code computes (see
    :func:`_dit_from_original`); ``overrides`` may give their ``num_attention_heads`` and ``sample_size``.
    """
    if isinstance(dit, DiTTransformer2DModel):
        return dit
    path = Path(dit)
    if path.is_file():
        state_dict, name = _read(path, ema)
        return _dit_from_original(state_dict, name, overrides)
    if path.is_dir():
        subfolder = "transformer" if (path / "transformer" / "config.json").is_file() else None
    else:
        from huggingface_hub import file_exists

        subfolder = "transformer" if file_exists(str(dit), "model_index.json") else None
    return DiTTransformer2DModel.from_pretrained(dit, subfolder=subfolder).eval()


def _timestep_adaln(dit: DiTTransformer2DModel, block: int, timestep: torch.Tensor) -> torch.Tensor:
    """The DiT timestep embedding of ``block`` (1, D), without the class embedding."""
    emb = dit.transformer_blocks[block].norm1.emb
    return emb.timestep_embedder(emb.time_proj(timestep).to(dit.dtype))


@torch.no_grad()
def from_dit(
    cls: type[PixArtTransformer2DModel],
    dit: DiTTransformer2DModel | str | os.PathLike,
    reparam_timestep: int = REPARAM_TIMESTEP,
    caption_channels: int = 4096,
    ema: bool | None = None,
    **overrides: Any,
) -> PixArtTransformer2DModel:
    """Stage-1 initialisation: a text-to-image PixArt model from a class-conditional DiT (paper section 2.3).

    Args:
        cls: the model class to build.
        dit: a diffusers ``DiTTransformer2DModel``, a diffusers folder or Hub id (e.g. ``facebook/DiT-XL-2-256``), or
            an original DiT ``.pt`` file.
        reparam_timestep: the timestep ``t*`` at which every block's adaLN output equals the DiT's (paper: 500).
        caption_channels: channels of the caption features (4096 for T5-XXL).
        ema: for an original DiT training checkpoint, take the EMA weights (``None``: when present).
        **overrides: further config arguments; for an original DiT file also its ``num_attention_heads`` and
            ``sample_size`` when they cannot be inferred.

    Patch embedding, self-attention, feed-forward, timestep embedder (block 0's) and output linear are copied; the
    global adaLN linear is the mean of the blocks' adaLN linears; the per-block and final ``scale_shift_table`` are set
    so that at ``t*`` the model is the DiT without its class embedding, for any caption (the cross-attention output
    projection starts at zero). The class embedder is dropped.
    """
    dit = load_dit(dit, ema=ema, **overrides)
    cfg = dit.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    fixed = dict(
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        in_channels=cfg.in_channels,
        out_channels=dit.out_channels,
        num_layers=cfg.num_layers,
        cross_attention_dim=dim,
        sample_size=cfg.sample_size,
        patch_size=cfg.patch_size,
        activation_fn=cfg.activation_fn,
        attention_bias=cfg.attention_bias,
        norm_eps=1e-6,
        interpolation_scale=1,
        use_additional_conditions=False,
        caption_channels=caption_channels,
    )
    _check_overrides(cls, overrides, fixed, "DiT")
    model = cls(**{**fixed, **overrides}).to(dit.device)
    _init_text_parts(model)

    dit_state = dit.state_dict()
    copied = {f"pos_embed.proj.{p}": dit_state[f"pos_embed.proj.{p}"] for p in ("weight", "bias")}
    copied.update({f"proj_out.{p}": dit_state[f"proj_out_2.{p}"] for p in ("weight", "bias")})
    for key, value in dit_state.items():
        if key.startswith("transformer_blocks.0.norm1.emb.timestep_embedder."):
            copied[key.replace("transformer_blocks.0.norm1.emb.", "adaln_single.emb.")] = value
        elif ".attn1." in key or ".ff." in key:
            copied[key] = value
    for p in ("weight", "bias"):
        copied[f"adaln_single.linear.{p}"] = torch.stack(
            [dit_state[f"transformer_blocks.{i}.norm1.linear.{p}"] for i in range(cfg.num_layers)]
        ).mean(0)
    missing, unexpected = model.load_state_dict(copied, strict=False)
    new_parts = {k for k in model.state_dict() if ".attn2." in k or k.startswith("caption_projection.")}
    new_parts |= {k for k in model.state_dict() if k.endswith("scale_shift_table")}
    if unexpected or set(missing) != new_parts:
        raise RuntimeError(f"DiT transfer left {sorted(set(missing) - new_parts)}, unexpected {unexpected}.")

    # The re-parameterization: E(i) = f(i)(t*) - S(t*) and the final table g(t*) - t_emb(t*).
    # Computed in the DiT's dtype, stored in float32 (the dtype of the new model; cast it afterwards if wanted).
    timestep = torch.tensor([reparam_timestep], device=dit.device)
    shared, t_emb = model.adaln_single(timestep, None, dtype=torch.float32)  # (1, 6D), (1, D)
    for i, block in enumerate(model.transformer_blocks):
        per_block = dit.transformer_blocks[i].norm1.linear(F.silu(_timestep_adaln(dit, i, timestep)))  # (1, 6D)
        block.scale_shift_table.copy_((per_block.float() - shared).reshape(6, dim))
    final = dit.proj_out_1(F.silu(_timestep_adaln(dit, 0, timestep)))  # (1, 2D): shift, scale
    model.scale_shift_table.copy_(final.float().reshape(2, dim) - t_emb)
    counts = parameter_counts(model)
    logger.info(
        f"DiT: {dit_parameter_count(dit):,} parameters; PixArt with adaLN-single: {counts['adaln_single']:,}; "
        f"the same with per-block adaLN: {counts['adaln']:,}."
    )
    return model.eval()


def _init_text_parts(model: PixArtTransformer2DModel) -> None:
    """The official initialisation of what a DiT lacks: cross-attention and caption projection.

    Query/key/value xavier-uniform with zero bias; the output projection zero, so each block starts as the DiT block;
    the caption MLP normal(std 0.02) with zero bias.
    """
    for block in model.transformer_blocks:
        for linear in (block.attn2.to_q, block.attn2.to_k, block.attn2.to_v):
            torch.nn.init.xavier_uniform_(linear.weight)
            torch.nn.init.zeros_(linear.bias)
        torch.nn.init.zeros_(block.attn2.to_out[0].weight)
        torch.nn.init.zeros_(block.attn2.to_out[0].bias)
    for linear in (model.caption_projection.linear_1, model.caption_projection.linear_2):
        torch.nn.init.normal_(linear.weight, std=0.02)
        torch.nn.init.zeros_(linear.bias)


def parameter_counts(model: PixArtTransformer2DModel) -> dict[str, int]:
    """Parameters of ``model`` (``"adaln_single"``) and of the same model with DiT's per-block adaLN (``"adaln"``).

    The per-block variant replaces the global linear (D -> 6D) and the (6, D) tables by one D -> 6D linear per block,
    and the final (2, D) table by a D -> 2D linear.
    """
    dim, layers = model.inner_dim, model.config.num_layers
    total = sum(p.numel() for p in model.parameters())
    single = sum(p.numel() for p in model.adaln_single.linear.parameters()) + layers * 6 * dim + 2 * dim
    per_block = layers * (dim * 6 * dim + 6 * dim) + (dim * 2 * dim + 2 * dim)
    return {"adaln_single": total, "adaln": total - single + per_block}


def dit_parameter_count(dit: DiTTransformer2DModel) -> int:
    """Parameters of a DiT as the original counts them: one timestep and class embedder, not a copy per block."""
    copies = sum(p.numel() for block in dit.transformer_blocks[1:] for p in block.norm1.emb.parameters())
    return sum(p.numel() for p in dit.parameters()) - copies

"""The released PixArt ControlNet checkpoints: the original ``.pth`` layout read into our ControlNet and base.

The checkpoints here are built key by key in the layout the original ``train_scripts/train_controlnet.py`` saves
(``{"state_dict": ControlPixArtHalf.state_dict(), ...}``: the frozen base under ``base_model.``, copy N of
``ControlT2IDitBlockHalf`` under ``controlnet.N.``), and :func:`original_controlnet_forward` is the original forward
(``ControlPixArtMSHalf.forward`` of ``diffusion/model/nets/pixart_controlnet.py``) written out on that state dict
with plain tensor operations, sharing no code with the package.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tolerances import FORWARD

from diffusers_pixart.cli import main as cli
from diffusers_pixart.models import conversion
from diffusers_pixart.models.controlnet import PixArtControlNetModel
from diffusers_pixart.models.pixart_transformer import PixArtTransformer2DModel
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline
from diffusers_pixart.tiny import make_components

DIM, HEADS, CAPTION, PATCH, IN_CHANNELS, OUT_CHANNELS = 24, 2, 32, 2, 4, 8
#: Width of the original timestep / size embedders' sinusoidal features, and the original caption length.
FREQUENCIES, TOKENS = 256, 120
BASE, COPIES = "base_model.", "controlnet."


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints in the original layout, and the original forward
# ---------------------------------------------------------------------------------------------------------------------


def original_shapes(dim: int, blocks: int, copies: int, micro: bool) -> dict[str, tuple[int, ...]]:
    """Every tensor of a saved ``ControlPixArtHalf`` (``micro``: ``ControlPixArtMSHalf``) but ``pos_embed``."""
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, out_features: int, in_features: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out_features, in_features), (out_features,)

    def t2i_block(name: str) -> None:  # PixArtBlock / PixArtMSBlock: attn (timm), cross_attn, mlp (timm Mlp)
        shapes[f"{name}.scale_shift_table"] = (6, dim)
        linear(f"{name}.attn.qkv", 3 * dim, dim)
        linear(f"{name}.attn.proj", dim, dim)
        linear(f"{name}.cross_attn.q_linear", dim, dim)
        linear(f"{name}.cross_attn.kv_linear", 2 * dim, dim)
        linear(f"{name}.cross_attn.proj", dim, dim)
        linear(f"{name}.mlp.fc1", 4 * dim, dim)
        linear(f"{name}.mlp.fc2", dim, 4 * dim)

    shapes[f"{BASE}x_embedder.proj.weight"] = (dim, IN_CHANNELS, PATCH, PATCH)
    shapes[f"{BASE}x_embedder.proj.bias"] = (dim,)
    linear(f"{BASE}t_embedder.mlp.0", dim, FREQUENCIES)
    linear(f"{BASE}t_embedder.mlp.2", dim, dim)
    if micro:
        for embedder in ("csize_embedder", "ar_embedder"):
            linear(f"{BASE}{embedder}.mlp.0", dim // 3, FREQUENCIES)
            linear(f"{BASE}{embedder}.mlp.2", dim // 3, dim // 3)
    linear(f"{BASE}t_block.1", 6 * dim, dim)
    linear(f"{BASE}y_embedder.y_proj.fc1", dim, CAPTION)
    linear(f"{BASE}y_embedder.y_proj.fc2", dim, dim)
    shapes[f"{BASE}y_embedder.y_embedding"] = (TOKENS, CAPTION)
    for index in range(blocks):
        t2i_block(f"{BASE}blocks.{index}")
    shapes[f"{BASE}final_layer.scale_shift_table"] = (2, dim)
    linear(f"{BASE}final_layer.linear", PATCH * PATCH * OUT_CHANNELS, dim)
    linear(f"{COPIES}0.before_proj", dim, dim)
    for index in range(copies):
        t2i_block(f"{COPIES}{index}.copied_block")
        linear(f"{COPIES}{index}.after_proj", dim, dim)
    return shapes


def position_table(dim: int, grid_h: int, grid_w: int, lewei_scale: float, base_size: int) -> torch.Tensor:
    """The original ``get_2d_sincos_pos_embed`` for a grid_h x grid_w grid (numpy, float64 angles): (1, N, D).

    The first half of the channels encodes the column (the original's meshgrid puts w first), each half as
    ``[sin, cos]`` of the position times ``10000 ** (-k / (D / 4))``.
    """
    rows = np.arange(grid_h, dtype=np.float32) / (grid_h / base_size) / lewei_scale
    cols = np.arange(grid_w, dtype=np.float32) / (grid_w / base_size) / lewei_scale
    col_of, row_of = np.meshgrid(cols, rows)  # each (grid_h, grid_w)
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    parts = []
    for positions in (col_of, row_of):
        angles = np.outer(positions.reshape(-1), omega)
        parts += [np.sin(angles), np.cos(angles)]
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()[None]


def original_checkpoint(
    seed: int,
    micro: bool,
    sample_size: int = 16,
    lewei_scale: float = 1.0,
    dim: int = DIM,
    blocks: int = 4,
    copies: int = 2,
) -> dict[str, torch.Tensor]:
    """A random trained-looking state dict in the original layout (every projection non-zero), ``pos_embed`` of the
    ``sample_size`` grid at ``lewei_scale`` included, as the original saves its buffer."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        key: torch.randn(shape, generator=generator) * 0.1
        for key, shape in original_shapes(dim, blocks, copies, micro).items()
    }
    grid = sample_size // PATCH
    state[f"{BASE}pos_embed"] = position_table(dim, grid, grid, lewei_scale, base_size=grid)
    return state


def training_file(state: dict[str, torch.Tensor]) -> dict:
    """What ``save_checkpoint`` of the original writes: the weights beside optimizer, scheduler and epoch."""
    optimizer = {"state": {}, "param_groups": [{"lr": 2e-5, "weight_decay": 0.03, "params": [0, 1]}]}
    return {"state_dict": state, "optimizer": optimizer, "scheduler": {"last_epoch": 10}, "epoch": 10}


def linear(state: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]


def two_layer(state: dict, first: str, second: str, x: torch.Tensor, activation) -> torch.Tensor:
    """The original's two-layer MLPs: ``mlp.0``/``mlp.2`` (timestep, size) and ``fc1``/``fc2`` (timm ``Mlp``)."""
    return linear(state, second, activation(linear(state, first, x)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine parameters, eps 1e-6 (the original's norm1, norm2 and norm_final)."""
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + 1e-6)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the last two dimensions."""
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def sinusoids(values: torch.Tensor) -> torch.Tensor:
    """``TimestepEmbedder.timestep_embedding``: [cos, sin] of each value (n,) times ``exp(-ln(1e4) k / 128)``."""
    half = FREQUENCIES // 2
    angles = values.float()[:, None] * torch.exp(-math.log(10000) * torch.arange(half) / half)[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def t2i_block(state: dict, name: str, x: torch.Tensor, captions: list[torch.Tensor], t0: torch.Tensor) -> torch.Tensor:
    """``PixArtBlock.forward``: x (B, N, D); ``captions`` the B captions' kept tokens (L_b, D); t0 (B, 6D).

    The cross-attention of sample b sees only its own kept tokens, as the original's block-diagonal xformers mask.
    """
    batch, tokens, dim = x.shape
    heads, head_dim = HEADS, dim // HEADS
    table = state[f"{name}.scale_shift_table"][None] + t0.reshape(batch, 6, dim)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = table.chunk(6, dim=1)
    h = layer_norm(x) * (1 + scale_msa) + shift_msa
    q, k, v = linear(state, f"{name}.attn.qkv", h).reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    x = x + gate_msa * linear(
        state, f"{name}.attn.proj", attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
    )
    q = linear(state, f"{name}.cross_attn.q_linear", x).reshape(batch, tokens, heads, head_dim).transpose(1, 2)
    mixed = []
    for row, caption in enumerate(captions):
        k, v = (
            linear(state, f"{name}.cross_attn.kv_linear", caption).reshape(-1, 2, heads, head_dim).permute(1, 2, 0, 3)
        )
        mixed.append(attention(q[row], k, v).transpose(0, 1).reshape(tokens, dim))
    x = x + linear(state, f"{name}.cross_attn.proj", torch.stack(mixed))
    h = layer_norm(x) * (1 + scale_mlp) + shift_mlp
    return x + gate_mlp * two_layer(state, f"{name}.mlp.fc1", f"{name}.mlp.fc2", h, gelu_tanh)


@torch.no_grad()
def original_controlnet_forward(
    state: dict[str, torch.Tensor],
    x: torch.Tensor,
    timestep: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    c: torch.Tensor,
    lewei_scale: float,
    base_size: int,
    data_info: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``ControlPixArtMSHalf.forward(x, timestep, y, mask, data_info, c)`` (``ControlPixArtHalf`` without
    ``data_info``) on an original-layout state dict.

    x: noisy latents (B, C, H, W); timestep (B,); y: caption features (B, L, caption channels); mask (B, L) of 1/0;
    c: control latents (B, C, H, W); data_info: ``img_hw`` (B, 2) and ``aspect_ratio`` (B, 1). Returns (B, 8, H, W).
    """
    batch, grid_h, grid_w = x.shape[0], x.shape[-2] // PATCH, x.shape[-1] // PATCH
    dim = state[f"{BASE}x_embedder.proj.weight"].shape[0]
    pos = position_table(dim, grid_h, grid_w, lewei_scale, base_size)

    def patches(latents: torch.Tensor) -> torch.Tensor:  # x_embedder + the sin-cos table: (B, N, D)
        weight, bias = state[f"{BASE}x_embedder.proj.weight"], state[f"{BASE}x_embedder.proj.bias"]
        return F.conv2d(latents, weight, bias, stride=PATCH).flatten(2).transpose(1, 2) + pos

    c = patches(c)  # forward_c
    x = patches(x)
    t = two_layer(state, f"{BASE}t_embedder.mlp.0", f"{BASE}t_embedder.mlp.2", sinusoids(timestep), F.silu)  # (B, D)
    if data_info is not None:  # SizeEmbedder: each of the (B, k) values embedded alone, the k embeddings side by side
        sizes = []
        for name, key in (("csize_embedder", "img_hw"), ("ar_embedder", "aspect_ratio")):
            features = sinusoids(data_info[key].reshape(-1))
            sizes.append(two_layer(state, f"{BASE}{name}.mlp.0", f"{BASE}{name}.mlp.2", features, F.silu))
        t = t + torch.cat([size.reshape(batch, -1) for size in sizes], dim=1)
    t0 = linear(state, f"{BASE}t_block.1", F.silu(t))  # (B, 6D)
    y = two_layer(state, f"{BASE}y_embedder.y_proj.fc1", f"{BASE}y_embedder.y_proj.fc2", y, gelu_tanh)  # (B, L, D)
    captions = [y[row][mask[row] != 0] for row in range(batch)]

    blocks = 1 + max(int(k.split(".")[2]) for k in state if k.startswith(f"{BASE}blocks."))
    copies = 1 + max(int(k.split(".")[1]) for k in state if k.startswith(COPIES))
    x = t2i_block(state, f"{BASE}blocks.0", x, captions, t0)
    for index in range(1, copies + 1):  # ControlT2IDitBlockHalf index - 1, then base block index
        copy = f"{COPIES}{index - 1}"
        if index == 1:
            c = t2i_block(state, f"{copy}.copied_block", x + linear(state, f"{copy}.before_proj", c), captions, t0)
        else:
            c = t2i_block(state, f"{copy}.copied_block", c, captions, t0)
        x = t2i_block(state, f"{BASE}blocks.{index}", x + linear(state, f"{copy}.after_proj", c), captions, t0)
    for index in range(copies + 1, blocks):
        x = t2i_block(state, f"{BASE}blocks.{index}", x, captions, t0)

    shift, scale = (state[f"{BASE}final_layer.scale_shift_table"][None] + t[:, None]).chunk(2, dim=1)
    x = linear(state, f"{BASE}final_layer.linear", layer_norm(x) * (1 + scale) + shift)  # (B, N, p * p * 8)
    x = x.reshape(batch, grid_h, grid_w, PATCH, PATCH, OUT_CHANNELS)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(batch, OUT_CHANNELS, grid_h * PATCH, grid_w * PATCH)


# ---------------------------------------------------------------------------------------------------------------------
# The converted ControlNet computes what the original computes
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def ours(controlnet, transformer, latents, timestep, caption, mask, control, added=None) -> torch.Tensor:
    """The pipeline's per-step computation: the ControlNet's residuals, then the base with them."""
    residuals = controlnet(
        transformer, latents, control, caption, timestep, added_cond_kwargs=added, encoder_attention_mask=mask
    )
    return transformer(
        latents,
        encoder_hidden_states=caption,
        timestep=timestep,
        added_cond_kwargs=added,
        encoder_attention_mask=mask,
        block_residuals=residuals,
    ).sample


@pytest.mark.parametrize(
    "micro, lewei_scale, size",
    [(False, 1.0, (16, 16)), (True, 2.0, (16, 24))],
    ids=["ControlPixArtHalf-512", "ControlPixArtMSHalf-1024-non-square"],
)
def test_converted_controlnet_matches_the_original_forward(micro, lewei_scale, size):
    state = original_checkpoint(seed=1, micro=micro, lewei_scale=lewei_scale)
    controlnet, base = conversion.controlnet_from_original(
        PixArtControlNetModel, training_file(state), num_attention_heads=HEADS
    )
    assert controlnet.config.num_layers == 2 and base.config.num_layers == 4 and base.config.sample_size == 16
    assert base.use_additional_conditions == micro and base.config.interpolation_scale == lewei_scale
    assert torch.equal(base.null_caption, state[f"{BASE}y_embedder.y_embedding"])

    generator = torch.Generator().manual_seed(2)
    latents, control = torch.randn(2, 4, *size, generator=generator), torch.randn(2, 4, *size, generator=generator)
    caption = torch.randn(2, 7, CAPTION, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    timestep = torch.tensor([999, 17])
    data_info, added = None, None
    if micro:
        data_info = {"img_hw": torch.tensor([[128.0, 192.0]] * 2), "aspect_ratio": torch.tensor([[0.67]] * 2)}
        added = {"resolution": data_info["img_hw"], "aspect_ratio": data_info["aspect_ratio"]}
    expected = original_controlnet_forward(
        state, latents, timestep, caption, mask, control, lewei_scale, base_size=8, data_info=data_info
    )
    output = ours(controlnet, base, latents, timestep, caption, mask, control, added)
    assert (output - expected).abs().max() <= FORWARD
    # The control matters: without it (the base alone) the output is far from the original ControlNet's.
    plain = base(latents, caption, timestep, added_cond_kwargs=added, encoder_attention_mask=mask).sample
    assert (plain - expected).abs().max() > 100 * FORWARD


def test_pipeline_steps_match_the_original_forward():
    """Every denoising step of ``PixArtAlphaControlNetPipeline`` (both guidance branches, micro-conditions) with the
    converted weights gives the original forward's output on the same inputs and the control image's VAE latents."""
    state = original_checkpoint(seed=3, micro=True, sample_size=8, lewei_scale=2.0)
    controlnet, base = conversion.controlnet_from_original(PixArtControlNetModel, state, num_attention_heads=HEADS)
    components = make_components(caption_channels=CAPTION)
    components["transformer"] = base
    pipe = PixArtAlphaControlNetPipeline(**components, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    steps, predict = [], pipe.predict

    def recording_predict(model_input, t, prompt_embeds, prompt_attention_mask, added_cond_kwargs, **control):
        output = predict(model_input, t, prompt_embeds, prompt_attention_mask, added_cond_kwargs, **control)
        steps.append((model_input, t, prompt_embeds, prompt_attention_mask, added_cond_kwargs, output))
        return output

    pipe.predict = recording_predict
    edges = torch.zeros(1, 1, 64, 64)
    edges[..., 16:48, 20] = edges[..., 16, 20:45] = 1.0
    pipe("a red circle", image=edges, num_inference_steps=2, guidance_scale=4.5, use_resolution_binning=False)

    with torch.no_grad():  # the control image as the original encodes it, at the mean of the latent distribution
        pixels = (2 * edges - 1).expand(-1, 3, -1, -1)
        control = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    assert len(steps) == 2
    for model_input, t, prompt_embeds, prompt_mask, added, output in steps:
        assert model_input.shape == (2, 4, 8, 8)  # [negative, positive]
        data_info = {"img_hw": added["resolution"], "aspect_ratio": added["aspect_ratio"]}
        expected = original_controlnet_forward(
            state,
            model_input,
            t.expand(2),
            prompt_embeds,
            prompt_mask,
            control.expand(2, -1, -1, -1),
            lewei_scale=2.0,
            base_size=4,
            data_info=data_info,
        )
        assert (output - expected).abs().max() <= FORWARD


def test_round_trip_to_the_original_layout_gives_the_same_tensors():
    state = original_checkpoint(seed=4, micro=True, lewei_scale=2.0, copies=3)
    controlnet, base = conversion.controlnet_from_original(PixArtControlNetModel, state, num_attention_heads=HEADS)
    back = controlnet.to_original(base)
    assert set(back) == set(state)
    for key, value in state.items():
        if key == f"{BASE}pos_embed":  # recomputed from the interpolation scale in float32 (the original: float64)
            torch.testing.assert_close(back[key], value, rtol=0, atol=FORWARD, msg=key)
        else:
            assert torch.equal(back[key], value), key
    assert set(controlnet.to_original()) == {k for k in state if k.startswith(COPIES)}  # without its base


def test_from_original_with_the_base_it_runs_on():
    """``PixArtControlNetModel.from_original(path, transformer)``: the ControlNet only, block settings of the base."""
    state = original_checkpoint(seed=5, micro=False)
    _, base = conversion.controlnet_from_original(PixArtControlNetModel, state, num_attention_heads=HEADS)
    controlnet = PixArtControlNetModel.from_original(training_file(state), transformer=base)
    assert controlnet.config.num_attention_heads == HEADS  # from the transformer: the weights do not record it
    reference = conversion.controlnet_from_original(PixArtControlNetModel, state, num_attention_heads=HEADS)[0]
    for key, value in reference.state_dict().items():
        assert torch.equal(controlnet.state_dict()[key], value), key
    half = {key: value.half() for key, value in state.items()}  # a float16 file: cast to the transformer's dtype
    assert PixArtControlNetModel.from_original(half, transformer=base).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def test_cli_convert_controlnet_folders_and_pipeline(tmp_path, capsys):
    state = original_checkpoint(seed=6, micro=False)
    path = tmp_path / "PixArt-tiny-ControlNet.pth"
    torch.save(training_file(state), path)
    out = tmp_path / "converted"
    assert cli(["convert", "controlnet", str(path), str(out), "--num-heads", str(HEADS)]) == 0
    assert "2 block copies of hidden size 24" in capsys.readouterr().out
    controlnet = PixArtControlNetModel.from_pretrained(out / "controlnet")
    base = PixArtTransformer2DModel.from_pretrained(out / "transformer")
    null_caption = conversion.load_null_caption(out / "transformer")
    assert torch.equal(null_caption, state[f"{BASE}y_embedder.y_embedding"])
    back = controlnet.to_original(base, null_caption=null_caption)
    assert all(torch.equal(back[k], v) for k, v in state.items() if k != f"{BASE}pos_embed")

    assert cli(["convert", "controlnet", str(path), str(out), "--num-heads", str(HEADS)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["controlnet", "transformer"]

    components = tmp_path / "components"
    PixArtAlphaPipeline(**make_components()).save_pretrained(components)  # the base pipeline; its transformer unused
    folder = tmp_path / "pipeline"
    argv = ["convert", "controlnet", str(path), str(folder), "--num-heads", str(HEADS), "--pipeline"]
    assert cli([*argv, "--components", str(components)]) == 0
    pipe = PixArtAlphaControlNetPipeline.from_pretrained(folder)
    direct = PixArtAlphaControlNetPipeline(**{**make_components(), "transformer": base}, controlnet=controlnet)
    call = dict(image=torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(7)), num_inference_steps=2)
    call.update(use_resolution_binning=False, output_type="np")
    for p in (pipe, direct):
        p.set_progress_bar_config(disable=True)
    images = [p("a red circle", generator=torch.Generator().manual_seed(0), **call).images for p in (pipe, direct)]
    assert np.array_equal(*images)  # the same weights and code: bit for bit


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------


def test_controlnet_weights_for_another_base_are_refused(tmp_path, capsys, caplog):
    state = original_checkpoint(seed=8, micro=True)
    narrow = make_components()["transformer"]  # width 24, 2 blocks, no micro-conditions
    with pytest.raises(ValueError, match=r"another base: it was saved with a base of hidden size 24, 4 blocks, micro"):
        PixArtControlNetModel.from_original(state, transformer=narrow)

    wide = original_checkpoint(seed=9, micro=False, dim=48)
    _, base = conversion.controlnet_from_original(PixArtControlNetModel, state, num_attention_heads=HEADS)
    with pytest.raises(ValueError, match="another base: its copies have hidden size 48, the given transformer 24"):
        PixArtControlNetModel.from_original(wide, transformer=base)

    copies_only = {k: v for k, v in original_checkpoint(seed=10, micro=False, copies=3).items() if k.startswith(COPIES)}
    shallow = make_components(num_layers=3)["transformer"]
    with pytest.raises(ValueError, match="another base: it has 3 block copies, too many for a transformer of 3 blocks"):
        PixArtControlNetModel.from_original(copies_only, transformer=shallow)

    # Same shapes, other weights: allowed (a fine-tuned base), with a warning.
    other = conversion.controlnet_from_original(
        PixArtControlNetModel, original_checkpoint(seed=11, micro=True), num_attention_heads=HEADS
    )[1]
    with caplog.at_level("WARNING", logger="diffusers_pixart.models.conversion"):
        PixArtControlNetModel.from_original(state, transformer=other)
    assert "differ from the base saved with the state dict" in caplog.text

    # The command line: a ControlNet file without its base and components of another width.
    path = tmp_path / "copies.pth"
    torch.save({"state_dict": copies_only}, path)
    components = tmp_path / "components"
    PixArtAlphaPipeline(**make_components(num_layers=6)).save_pretrained(components)
    argv = ["convert", "controlnet", str(path), str(tmp_path / "out"), "--pipeline", "--components", str(components)]
    assert cli([*argv, "--num-heads", str(HEADS)]) == 0  # 6 blocks of width 24: fits
    wide_path = tmp_path / "wide.pth"
    torch.save({"state_dict": {k: v for k, v in wide.items() if k.startswith(COPIES)}}, wide_path)
    argv = ["convert", "controlnet", str(wide_path), str(tmp_path / "x"), "--pipeline", "--components", str(components)]
    assert cli([*argv, "--num-heads", str(HEADS)]) == 2
    assert "ControlNet is for another base: its hidden size 48 does not match the transformer's 24" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "x").exists()


def test_malformed_controlnet_checkpoints_raise_clear_errors(tmp_path):
    state = original_checkpoint(seed=12, micro=False)

    def load(bad: dict) -> None:
        conversion.controlnet_from_original(PixArtControlNetModel, bad, num_attention_heads=HEADS)

    base_only = {k[len(BASE) :]: v for k, v in state.items() if k.startswith(BASE)}
    with pytest.raises(ValueError, match=r"lacks controlnet\.0\.before_proj\.weight.*keys start with blocks"):
        load(base_only)  # a base PixArt checkpoint, not a ControlNet
    with pytest.raises(ValueError, match=r"1 missing: controlnet\.1\.after_proj\.weight"):
        load({k: v for k, v in state.items() if k != f"{COPIES}1.after_proj.weight"})
    with pytest.raises(ValueError, match=r"keys outside controlnet\.\* and base_model\.\*: ema\.x"):
        load({**state, "ema.x": torch.zeros(1)})
    qkv = f"{COPIES}1.copied_block.attn.qkv.weight"
    with pytest.raises(ValueError, match=rf"other shapes: {re.escape(qkv)} \(72, 25\) \(expected \(72, 24\)\)"):
        load({**state, qkv: torch.zeros(3 * DIM, DIM + 1)})
    with pytest.raises(ValueError, match="inconsistent: 2 block copies of hidden size 24, saved with a base of hidden"):
        wide = original_checkpoint(seed=13, micro=False, dim=48)  # the copies of one, the base of another width
        load(
            {
                **{k: v for k, v in state.items() if k.startswith(COPIES)},
                **{k: v for k, v in wide.items() if k.startswith(BASE)},
            }
        )
    with pytest.raises(ValueError, match="hidden size 24, which is none of the named sizes"):
        conversion.controlnet_from_original(PixArtControlNetModel, state)
    path = tmp_path / "truncated.pth"
    torch.save({"state_dict": state}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        PixArtControlNetModel.from_original(path, num_attention_heads=HEADS)

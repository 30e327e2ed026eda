"""PixArt-alpha's ControlNet: the official data flow, zero-initialised start, training, save/load, bad input."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest
import torch
from tolerances import FORWARD, IMAGES

from diffusers_pixart.models.controlnet import PixArtControlNetModel
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline
from diffusers_pixart.tiny import make_components
from diffusers_pixart.training.diffusion import IDDPMDiffusion

PROMPTS = ["a red circle above a blue square", "two green stars on the left"]
CALL = dict(num_inference_steps=2, use_resolution_binning=False, output_type="np")


def pipelines(num_layers: int = 2):
    components = make_components(num_layers=4)
    controlnet = PixArtControlNetModel.from_transformer(components["transformer"], num_layers=num_layers)
    base = PixArtAlphaPipeline(**components)
    controlled = PixArtAlphaControlNetPipeline(**components, controlnet=controlnet)
    for pipe in (base, controlled):
        pipe.set_progress_bar_config(disable=True)
    return base, controlled


def edge_image(size=(64, 64)) -> PIL.Image.Image:
    array = np.zeros(size, dtype=np.uint8)
    array[16:48, 20] = array[16:48, 44] = array[16, 20:45] = array[47, 20:45] = 255
    return PIL.Image.fromarray(array, mode="L")


def generate(pipe, **kwargs) -> np.ndarray:
    return pipe(PROMPTS, generator=torch.Generator().manual_seed(0), **CALL, **kwargs).images


def randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.1)


@torch.no_grad()
def official_forward(transformer, controlnet, latents, control, caption, timestep) -> torch.Tensor:
    """``ControlPixArtHalf.forward`` of the official code, written out: copies chain, skips feed base blocks 1..N."""
    x, y, t, t_emb, bias = transformer.embed(latents, caption, timestep)
    blocks, copies = transformer.transformer_blocks, controlnet.controlnet_blocks
    x = blocks[0](x, y, t, bias)
    c = controlnet.before_proj(transformer.pos_embed(control))
    for index in range(1, len(copies) + 1):
        c = copies[index - 1](x + c if index == 1 else c, y, t, bias)
        x = blocks[index](x + controlnet.after_proj[index - 1](c), y, t, bias)
    for index in range(len(copies) + 1, len(blocks)):
        x = blocks[index](x, y, t, bias)
    shift, scale = (transformer.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)
    x = transformer.proj_out(transformer.norm_out(x) * (1 + scale) + shift)
    return transformer.unpatchify(x, latents.shape[-2] // 2, latents.shape[-1] // 2)


def test_residuals_follow_the_official_controlnet_half():
    _, pipe = pipelines(num_layers=2)
    randomise(pipe.controlnet, seed=1)
    g = torch.Generator().manual_seed(0)
    latents, control = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    caption, timestep = torch.randn(2, 6, 32, generator=g), torch.tensor([3, 700])
    with torch.no_grad():
        residuals = pipe.controlnet(pipe.transformer, latents, control, caption, timestep)
        ours = pipe.transformer(latents, caption, timestep, block_residuals=residuals).sample
        base = pipe.transformer(latents, caption, timestep).sample
    expected = official_forward(pipe.transformer, pipe.controlnet, latents, control, caption, timestep)
    torch.testing.assert_close(ours, expected, atol=FORWARD, rtol=FORWARD)  # the original's op order
    assert (ours - base).abs().max() > 1e-2
    assert len(residuals) == 2 and residuals[0].shape == (2, 16, 24)


def test_new_controlnet_gives_exactly_the_base_images_and_copies_the_first_blocks():
    base, controlled = pipelines()
    for copy, block in zip(controlled.controlnet.controlnet_blocks, controlled.transformer.transformer_blocks):
        for (name, a), (_, b) in zip(copy.state_dict().items(), block.state_dict().items()):
            assert torch.equal(a, b), name
    expected = generate(base, height=64, width=64)
    assert np.array_equal(generate(controlled, image=edge_image()), expected)


def train_steps(pipe, steps: int = 3) -> list[float]:
    """A few ControlNet training steps on random latents: frozen base, AdamW on the ControlNet only."""
    transformer, controlnet = pipe.transformer.requires_grad_(False), pipe.controlnet.train()
    diffusion = IDDPMDiffusion(learn_sigma=True)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        latents, control = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        caption, timesteps = torch.randn(2, 6, 32, generator=g), diffusion.sample_timesteps(2, "cpu", g)
        noise = torch.randn(latents.shape, generator=g)
        noisy = diffusion.add_noise(latents, noise, timesteps)
        residuals = controlnet(transformer, noisy, control, caption, timesteps)
        output = transformer(noisy, caption, timesteps, block_residuals=residuals).sample
        loss = diffusion.training_losses(output, latents, noisy, noise, timesteps)["loss"].mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    controlnet.eval()
    return losses


def test_after_training_steps_the_control_changes_the_images_and_the_base_is_untouched(tmp_path):
    base, controlled = pipelines()
    before = {k: v.clone() for k, v in controlled.transformer.state_dict().items()}
    expected = generate(base, height=64, width=64)
    train_steps(controlled)
    assert all(torch.equal(v, controlled.transformer.state_dict()[k]) for k, v in before.items())
    trained = generate(controlled, image=edge_image())
    assert np.abs(trained - expected).max() > 1e-3
    # Scale 0 switches the control off.
    assert np.array_equal(generate(controlled, image=edge_image(), controlnet_conditioning_scale=0.0), expected)

    controlled.save_pretrained(tmp_path / "pipe")
    loaded = PixArtAlphaControlNetPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.controlnet, PixArtControlNetModel) and loaded.controlnet.config.num_layers == 2
    assert np.array_equal(generate(loaded, image=edge_image()), trained)


def test_one_control_image_per_prompt_matches_single_prompt_calls():
    _, pipe = pipelines()
    randomise(pipe.controlnet, seed=2)
    pair = [edge_image(), PIL.Image.fromarray(np.asarray(edge_image()).T.copy(), mode="L")]
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    both = pipe(PROMPTS, image=pair, latents=latents, **CALL).images
    for i in range(2):
        single = pipe(PROMPTS[i], image=pair[i], latents=latents[i : i + 1], **CALL).images
        assert np.abs(single[0] - both[i]).max() < IMAGES  # batch of 2 vs 1: other blocking


def test_one_pipeline_serves_concurrent_calls_with_different_control_images():
    _, pipe = pipelines()
    randomise(pipe.controlnet, seed=2)
    controls = [edge_image(), PIL.Image.fromarray(np.asarray(edge_image()).T.copy(), mode="L")]
    sequential = [generate(pipe, image=control) for control in controls]
    assert np.abs(sequential[0] - sequential[1]).max() > 10 * IMAGES  # each control image shows in its images

    # Both calls wait for each other after every step, so their steps interleave on the one pipeline object.
    barrier = threading.Barrier(2, timeout=120)

    def in_step(pipeline, step, t, tensors):
        barrier.wait()
        return {}

    with ThreadPoolExecutor(2) as pool:
        concurrent = list(
            pool.map(lambda control: generate(pipe, image=control, callback_on_step_end=in_step), controls)
        )
    for alone, together in zip(sequential, concurrent):
        assert np.array_equal(alone, together)


def test_bad_control_images_and_sizes_are_refused():
    _, pipe = pipelines()
    with pytest.raises(ValueError, match="`image` .* is required"):
        pipe(PROMPTS, **CALL)
    with pytest.raises(ValueError, match="PIL mode 'RGBA'"):
        pipe(PROMPTS, image=edge_image().convert("RGBA"), **CALL)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        pipe(PROMPTS, image=torch.rand(1, 4, 64, 64), **CALL)
    with pytest.raises(ValueError, match=r"\[0, 1\] expected"):
        pipe(PROMPTS, image=torch.rand(1, 3, 64, 64) * 255, **CALL)
    with pytest.raises(ValueError, match="control image is 64x64 .* but 128x64 was asked"):
        pipe(PROMPTS, image=edge_image(), height=128, width=64, **CALL)
    with pytest.raises(ValueError, match="3 control images for 2 prompts"):
        pipe(PROMPTS, image=[edge_image()] * 3, **CALL)
    with pytest.raises(ValueError, match="different sizes"):
        pipe(PROMPTS, image=[edge_image(), edge_image((64, 48))], **CALL)


def test_controlnet_shape_and_depth_checks():
    components = make_components(num_layers=4)
    with pytest.raises(ValueError, match="num_layers=4 block copies do not fit a base of 4 blocks"):
        PixArtControlNetModel.from_transformer(components["transformer"], num_layers=4)
    wide = PixArtControlNetModel(num_layers=1, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32)
    with pytest.raises(ValueError, match="hidden size 32 does not match the transformer's 24"):
        PixArtAlphaControlNetPipeline(**components, controlnet=wide)
    controlnet = PixArtControlNetModel.from_transformer(components["transformer"], num_layers=1)
    latents = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"control latents \(1, 4, 4, 4\) must have the shape of the latents"):
        controlnet(
            components["transformer"], latents, torch.randn(1, 4, 4, 4), torch.randn(1, 6, 32), torch.tensor([1])
        )


def test_canny_edges_trace_the_outline_of_a_square():
    from diffusers_pixart.data.edges import canny_edges

    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[16:48, 20:44] = (200, 40, 40)
    edges = canny_edges(PIL.Image.fromarray(array))
    assert edges.mode == "L" and edges.size == (64, 64)
    on = np.argwhere(np.asarray(edges) == 255)
    assert len(on) > 80  # the outline: about 2 * (32 + 24) pixels
    border = (np.abs(on[:, 0:1] - [15.5, 47.5]).min(1) <= 1.5) | (np.abs(on[:, 1:2] - [19.5, 43.5]).min(1) <= 1.5)
    assert border.all()  # every edge pixel lies on the square's outline
    assert set(np.unique(np.asarray(edges))) <= {0, 255}
    with pytest.raises(ValueError, match="uint8"):
        canny_edges(array.astype(np.float32))
    with pytest.raises(ValueError, match="0 < low <= high"):
        canny_edges(array, low_threshold=200, high_threshold=100)

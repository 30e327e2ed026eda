"""The toy VAE-swap experiment of examples/toy (PixArt-Σ's weak-to-strong step (a)) on a tiny budget."""

import json

import pytest
from PIL import Image
from recipe import ToyRecipe  # examples/toy (tests/conftest.py puts it on the path)
from vae_swap import ORIGINAL, VaeSwapSettings, run_vae_swap

from diffusers_pixart import TOY_MODEL_PATH
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline


def test_vae_swap_plumbing_tiny_budget(tmp_path, bf16_cpu_attention, fresh_accelerate_state):
    settings = VaeSwapSettings(
        vae_channels=(8, 8, 8),
        vae_images=4,
        vae_steps=2,
        train_images=8,
        evaluated_steps=(1, 2),
        num_prompts=2,
        sampler_steps=2,
        sheet_prompts=2,
        recipe=ToyRecipe(batch_size=4, warmup_steps=1),
    )
    logs = []
    results = run_vae_swap(tmp_path / "run", TOY_MODEL_PATH, settings, log=logs.append)
    assert list(results["scores"]) == [ORIGINAL, "0", "1", "2"]
    assert all(0 <= scores["overall"] <= 1 for scores in results["scores"].values())
    vae = results["vae"]
    assert vae["channels"] == {"original": [16, 32, 32], "new": [8, 8, 8]}
    assert len(vae["latent_similarity"]["best_abs_correlation_per_channel"]) == 4
    assert [step for step, _ in results["loss"]] == [1, 2]  # one run, resumed for its second segment
    trained = PixArtAlphaPipeline.from_pretrained(tmp_path / "run" / "train" / "pipeline")
    assert trained.vae.config.scaling_factor == vae["scaling_factor"]["new"]  # the swapped VAE is saved with it
    assert list(trained.vae.config.block_out_channels) == [8, 8, 8]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["scores"] == results["scores"]
    rows = (tmp_path / "run" / "results.md").read_text().splitlines()
    assert [row.split(" | ")[1] for row in rows[2:]] == ["-", "0", "1", "2", "-", "-", "-"]
    assert rows[-3].startswith("| the prompts' renders | - | 1.000 | 1.000 | 1.000 | 1.000 | 1.000")
    assert sorted(results["round_trip"]) == sorted([ORIGINAL, "new", "render"])
    assert Image.open(tmp_path / "run" / "contact_sheet.png").size[0] > 2 * 64
    logs.clear()
    run_vae_swap(tmp_path / "run", TOY_MODEL_PATH, settings, log=logs.append)  # a rerun redoes nothing
    assert logs == []


def test_vae_swap_settings_reject_bad_values():
    with pytest.raises(ValueError, match="increasing"):
        VaeSwapSettings(evaluated_steps=(100, 50))
    with pytest.raises(ValueError, match="vae_steps"):
        VaeSwapSettings(vae_steps=0)

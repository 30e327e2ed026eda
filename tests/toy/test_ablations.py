"""The toy ablations of examples/toy/ablations.py: every arm on a tiny budget, resume, and the per-block variant."""

import json
from dataclasses import replace

import pytest
import torch
from ablations import (  # examples/toy/ablations.py (tests/conftest.py puts examples/toy on the path)
    ARMS,
    AblationSettings,
    load_per_block_pipeline,
    run_ablations,
    training_memory,
    with_per_block_adaln,
)
from recipe import make_toy_transformer

from diffusers_pixart.default_model import TOY_MODEL_PATH
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline


def test_every_arm_runs_and_a_rerun_resumes(tmp_path, bf16_cpu_attention, fresh_accelerate_state):
    settings = AblationSettings(
        seeds=(0,),
        stage1_images=16,
        stage2_images=16,
        stage3_images=16,
        stage1_steps=2,
        stage2_steps=2,
        stage3_steps=2,
        eval_points=2,
        num_layers=1,
        hidden_size=24,
        num_heads=2,
        batch_size=4,
        warmup_steps=1,
        num_prompts=2,
        sample_steps=2,
        sheet_images=2,
    )
    out, docs = tmp_path / "run", tmp_path / "docs"
    logs = []
    results = run_ablations(out, docs, settings, log=logs.append)

    assert set(results["arms"]) == set(ARMS)
    points = {name: sorted(int(t) for t in seeds["0"]["points"]) for name, seeds in results["arms"].items()}
    # Stage 2 is scored at 2 + 1 and 2 + 2 total steps; the arms that run the whole budget once more at 6.
    assert points == {
        "three_stages": [3, 4, 6],
        "scratch": [3, 4, 6],
        "final_only": [3, 4, 6],
        "per_block_adaln": [3, 4],
        "sparse_captions": [3, 4],
    }
    for scores in results["arms"]["three_stages"]["0"]["points"].values():
        assert 0.0 <= scores["overall"] <= 1.0
    # The scratch arm trains one run on to the end: each segment resumed from the last checkpoint.
    assert [s["to_step"] for s in results["arms"]["scratch"]["0"]["segments"]] == [3, 4, 6]
    written = json.loads((docs / "results.json").read_text())
    assert written["summary"]["overall"]["three_stages"]["6"]["n"] == 1
    assert "### Dense vs sparse captions in stage 2" in (docs / "results.md").read_text()
    for name in ARMS:
        assert (docs / f"sheet_{name}.png").is_file()
    assert (out / "work" / "features" / "stage2_sparse.done").is_file()  # the sparse arm's captions

    # A rerun trains and scores nothing again.
    again = run_ablations(out, docs, settings, log=logs.append)
    assert again["arms"] == results["arms"]

    # A longer stage 2 for one arm trains on from its checkpoint; the report keeps that budget's points (4 6 8 10).
    longer = replace(settings, arms=("scratch",), stage2_steps=6, eval_points=3)
    extended = run_ablations(out, tmp_path / "docs_long", longer, log=logs.append)
    assert set(extended["arms"]) == {"scratch"}
    assert sorted(int(t) for t in extended["arms"]["scratch"]["0"]["points"]) == [4, 6, 8, 10]
    assert [s["to_step"] for s in extended["arms"]["scratch"]["0"]["segments"]] == [3, 4, 6, 8, 10]
    # A point before the run's checkpoint cannot be trained to: it says so.
    with pytest.raises(ValueError, match="cannot go back"):
        run_ablations(out, tmp_path / "docs_back", replace(longer, stage2_steps=3), log=logs.append)


def test_per_block_variant_parameters_masking_and_reload(tmp_path):
    torch.manual_seed(0)
    single = make_toy_transformer(8, num_layers=3, hidden_size=24, num_heads=2, caption_channels=16)
    variant = with_per_block_adaln(
        make_toy_transformer(8, num_layers=3, hidden_size=24, num_heads=2, caption_channels=16)
    )
    # adaLN-single's one D -> 6D linear becomes one per block.
    linear = 24 * 6 * 24 + 6 * 24
    assert sum(p.numel() for p in variant.parameters()) == sum(p.numel() for p in single.parameters()) + 2 * linear

    latents, caption = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    timestep = torch.tensor([10, 700])
    with torch.no_grad():
        out = variant(latents, caption, timestep, encoder_attention_mask=mask).sample
        # Padding tokens change neither the cross-attention nor the pooled caption of the modulation.
        changed = caption.clone()
        changed[0, 4:] = 100.0
        assert torch.allclose(variant(latents, changed, timestep, encoder_attention_mask=mask).sample, out, atol=1e-6)
        # The modulation reads the caption: another caption changes block 0's modulation.
        assert not torch.allclose(variant(latents, caption.flip(1), timestep, encoder_attention_mask=mask).sample, out)

    # Saved as a pipeline folder, it reloads as the variant with the same outputs.
    pipe = PixArtAlphaPipeline.from_pretrained(TOY_MODEL_PATH)
    pipe.transformer = with_per_block_adaln(
        make_toy_transformer(16, num_layers=2, hidden_size=24, num_heads=2, caption_channels=64)
    )
    pipe.save_pretrained(tmp_path / "pipeline")
    reloaded = load_per_block_pipeline(tmp_path / "pipeline")
    latents, caption = torch.randn(1, 4, 16, 16), torch.randn(1, 5, 64)
    with torch.no_grad():
        expected = pipe.transformer(latents, caption, torch.tensor([300])).sample
        assert torch.equal(reloaded.transformer(latents, caption, torch.tensor([300])).sample, expected)


def test_training_memory_counts_the_paper_parameters():
    # PixArt-XL/2 at 256px on the meta device (no memory used): adaLN-single has the paper's 611M parameters.
    with torch.device("meta"):
        model = make_toy_transformer(32, num_layers=28, hidden_size=1152, num_heads=16, caption_channels=4096)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(611e6, rel=1e-3)
    memory = training_memory(model, batch=1, latent_size=32, caption_tokens=120)
    assert memory["states_gib"] == pytest.approx(610_856_096 * 16 / 2**30)
    assert 0.5 < memory["activations_gib"] < 2.0


def test_settings_reject_bad_budgets():
    with pytest.raises(ValueError, match="stage2_steps"):
        AblationSettings(stage2_steps=10, eval_points=3)
    with pytest.raises(ValueError, match="seeds"):
        AblationSettings(seeds=())
    with pytest.raises(ValueError, match="num_prompts"):
        AblationSettings(num_prompts=0)
    with pytest.raises(ValueError, match="arms"):
        AblationSettings(arms=("scratch", "unknown"))

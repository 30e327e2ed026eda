"""The toy recipe of examples/toy (plumbing on a tiny budget, with the real stages) and the embedded default model."""

import json

import pytest
import torch
from recipe import (  # examples/toy/recipe.py (tests/conftest.py puts examples/toy on the path)
    MAX_EMBEDDED_BYTES,
    ToyRecipe,
    continue_recipe,
    extend_text_encoder,
    install_toy_model,
    loss_table,
    make_toy_vae,
    run_recipe,
    train_vae,
)

from diffusers_pixart.default_model import TOY_MODEL_PATH, load_pipeline
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.tiny import make_text_encoder, make_tokenizer
from diffusers_pixart.toy.language import ATTRIBUTES, make_toy_text_encoder


def test_toy_vae_factor_and_scaling_factor():
    vae = make_toy_vae((8, 8, 8))
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    history = train_vae(vae, images, steps=3, batch_size=2, crop=16)
    assert [record["step"] for record in history] == [3]
    with torch.no_grad():
        means = vae.encode(images).latent_dist.mean
    assert means.shape == (6, 4, 8, 8)  # three levels: 4x down-sampling
    assert vae.config.scaling_factor == pytest.approx(1.0 / means.std().item(), rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        train_vae(vae, images[0], steps=1)
    with pytest.raises(ValueError, match="levels"):
        make_toy_vae((8,))


def test_recipe_plumbing_tiny_budget(tmp_path, bf16_cpu_attention, fresh_accelerate_state):
    recipe = ToyRecipe(
        stage1_images=8,
        stage2_images=8,
        stage3_images=8,
        vae_images=4,
        vae_steps=2,
        vae_channels=(8, 8, 8),
        text_dim=12,
        text_pretrain_steps=3,
        num_layers=1,
        hidden_size=24,
        num_heads=2,
        batch_size=4,
        warmup_steps=1,
        stage1_steps=2,
        stage2_steps=2,
        stage3_steps=2,
        stage3_aspect_ratios=(0.5, 1.0),
    )
    logs = []
    final = run_recipe(tmp_path / "run", recipe, log=logs.append)
    pipe = PixArtAlphaPipeline.from_pretrained(final)
    assert pipe.transformer.config.num_layers == 1
    assert pipe.transformer.config.use_additional_conditions  # stage 3 added the micro-conditions
    assert pipe.vae_scale_factor == 4 and pipe.transformer.config.sample_size == 16
    curves = json.loads((tmp_path / "run" / "loss_curves.json").read_text())
    assert sorted(curves) == ["stage1", "stage2", "stage3"]
    assert all([step for step, _ in curve] == [2] for curve in curves.values())  # each stage logged its last step
    table = (tmp_path / "run" / "loss_curves.md").read_text().splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| stage1", "| stage2", "| stage3"]
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert {"data", "vae", "text_encoder", "stage1", "stage2", "stage3"} <= set(timings)
    accuracy = json.loads((tmp_path / "run" / "work" / "text_encoder_accuracy.json").read_text())
    assert sorted(accuracy) == sorted([*ATTRIBUTES, "relations"])
    assert all(0 <= value <= 1 for value in accuracy.values())
    _, random_encoder = make_toy_text_encoder(d_model=12)  # the recipe's T5 before its language pretraining
    pretrained = dict(pipe.text_encoder.named_parameters())
    assert any(not torch.equal(p, pretrained[name]) for name, p in random_encoder.named_parameters())
    # A rerun reuses every finished step: no stage runs again.
    logs.clear()
    run_recipe(tmp_path / "run", recipe, log=logs.append)
    assert not any("train_stage" in line for line in logs)
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 64, 64, 3)
    (tmp_path / "toy_model").mkdir()
    (tmp_path / "toy_model" / "training_record.json").write_text("{}")  # written by someone else: kept
    installed = install_toy_model(final, tmp_path / "toy_model")
    assert PixArtAlphaPipeline.from_pretrained(installed).transformer.config.num_layers == 1
    assert not list(installed.rglob("*.bin"))
    assert (installed / "training_record.json").read_text() == "{}"
    # Teaching the trained pipeline the language again (a grown T5, then stage 3's script on the stage-2 images).
    logs.clear()
    continued = continue_recipe(final, tmp_path / "continued", align_steps=2, recipe=recipe, log=logs.append)
    assert any(line.startswith("align: ") for line in logs) and not any("train_stage2" in line for line in logs)
    assert sorted(json.loads((tmp_path / "continued" / "loss_curves.json").read_text())) == ["align"]
    assert PixArtAlphaPipeline.from_pretrained(continued).transformer.config.use_additional_conditions


def test_loss_table_window_means():
    curve = [(10, 1.0), (20, 0.5), (30, 0.25), (40, 0.25)]
    table = loss_table({"stage2": curve}, points=2).splitlines()
    assert table[2] == "| stage2 | 40 | 0.7500 | 0.2500 |"
    with pytest.raises(ValueError, match="points"):
        loss_table({"stage2": curve}, points=0)


def test_recipe_bad_input():
    with pytest.raises(ValueError, match="stage2_steps"):
        ToyRecipe(stage2_steps=0)
    with pytest.raises(ValueError, match="lr_scheduler"):
        ToyRecipe(lr_scheduler="step")
    with pytest.raises(ValueError, match="mixed_precision"):
        ToyRecipe(mixed_precision="fp8")
    with pytest.raises(ValueError, match="text_pretrain_steps"):
        ToyRecipe(text_pretrain_steps=-1)
    assert ToyRecipe(text_pretrain_steps=0).text_pretrain_steps == 0  # 0: the T5 stays random


@pytest.mark.skipif(not (TOY_MODEL_PATH / "model_index.json").is_file(), reason="the package ships no toy model")
def test_embedded_model_loads_and_generates():
    size = sum(path.stat().st_size for path in TOY_MODEL_PATH.rglob("*") if path.is_file())
    assert size <= MAX_EMBEDDED_BYTES
    assert not list(TOY_MODEL_PATH.rglob("*.bin"))
    pipe, description = load_pipeline()
    assert description == "embedded toy model"
    assert pipe.transformer.config.sample_size * pipe.vae_scale_factor == 64
    image = pipe("a red circle", num_inference_steps=4, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    direct = PixArtAlphaPipeline.from_pretrained(TOY_MODEL_PATH)
    assert direct.transformer.config == pipe.transformer.config


def test_extend_text_encoder_keeps_every_trained_word():
    old_tokenizer = make_tokenizer(["a", "red", "circle", "above"])
    old_encoder = make_text_encoder(len(old_tokenizer), d_model=12, num_layers=1, num_heads=2, seed=4)
    tokenizer, encoder = extend_text_encoder(old_tokenizer, old_encoder)
    assert len(tokenizer) > len(old_tokenizer) and encoder.config.d_model == 12
    old_embeddings, new_embeddings = old_encoder.get_input_embeddings().weight, encoder.get_input_embeddings().weight
    for piece, index in old_tokenizer.get_vocab().items():
        assert torch.equal(new_embeddings[tokenizer.get_vocab()[piece]], old_embeddings[index])
    text = "a red circle above"
    with torch.no_grad():
        old = old_encoder(old_tokenizer(text, return_tensors="pt").input_ids)[0]
        new = encoder(tokenizer(text, return_tensors="pt").input_ids)[0]
    torch.testing.assert_close(new, old, rtol=0, atol=0)  # the same weights on the same tokens: the same outputs
    with pytest.raises(ValueError, match="lost"):
        extend_text_encoder(make_tokenizer(["red", "cat"]), make_text_encoder(6, d_model=12, num_heads=2))

"""Customization on the toy world (issue #7) with tiny models: a new DreamBooth token through the tokenizer, T5,
training and saving; the new-colour measure on ground-truth renders; the ControlNet comparison's wiring. The models
learn nothing here: the measured example is ``examples/toy/run_customization.py``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from customization import (  # examples/toy/customization.py (tests/conftest.py puts examples/toy on the path)
    CONCEPT_COLOR,
    CustomizationSettings,
    compare_control,
    concept_fraction,
    ground_truth_controls,
    make_instance_images,
    object_prompt,
)

from diffusers_pixart import tiny
from diffusers_pixart.data.edges import canny_edges
from diffusers_pixart.models.controlnet import PixArtControlNetModel
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline
from diffusers_pixart.text import add_tokens, encode_prompts
from diffusers_pixart.toy import COLORS, REGIONS, SHAPES, Meaning, ToyObject, render, sample_prompts
from diffusers_pixart.toy.compbench import concept_palette, object_colors
from diffusers_pixart.toy.world import TOY_CANNY_THRESHOLDS, vocabulary
from diffusers_pixart.training.dreambooth import load_dreambooth_lora, main_dreambooth

PALETTE = concept_palette("magenta", CONCEPT_COLOR)
PROMPT = "one object. a large sks circle in the center."


def toy_text():
    tokenizer = tiny.make_tokenizer(vocabulary())
    return tokenizer, tiny.make_text_encoder(len(tokenizer))


def test_add_tokens_grows_the_tokenizer_and_t5_and_keeps_the_old_tokens():
    tokenizer, encoder = toy_text()
    size, old = len(tokenizer), encoder.get_input_embeddings().weight.detach().clone()
    assert tokenizer("a sks circle").input_ids[1:3] == [3, tokenizer.unk_token_id]  # "▁", "<unk>" before
    with torch.no_grad():
        before = encode_prompts(tokenizer, encoder, ["a red circle"])[0]
    ids = add_tokens(tokenizer, encoder, ["sks"], seed=0)
    assert ids == [size] and len(tokenizer) == size + 1
    weight = encoder.get_input_embeddings().weight
    assert weight.shape[0] == size + 1 and encoder.config.vocab_size == size + 1
    torch.testing.assert_close(weight[:size], old, rtol=0, atol=0)
    assert not torch.equal(weight[size], torch.zeros_like(weight[size]))
    a, circle = tokenizer.convert_tokens_to_ids(["\u2581a", "\u2581circle"])
    assert tokenizer("a sks circle").input_ids == [a, size, circle, 1]
    assert tokenizer("a asks circle").input_ids.count(size) == 0  # whole words only
    with torch.no_grad():
        torch.testing.assert_close(encode_prompts(tokenizer, encoder, ["a red circle"])[0], before, rtol=0, atol=0)
    # The same seed gives the same row (a resumed run rebuilds the same text encoder).
    tokenizer2, encoder2 = toy_text()
    add_tokens(tokenizer2, encoder2, ["sks"], seed=0)
    torch.testing.assert_close(encoder2.get_input_embeddings().weight, weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["red"], "already a token"),
        (["sks", "sks"], "repeats"),
        (["SKS"], "lower case"),
        (["s ks"], "lower case"),
        ([], "No words"),
    ],
)
def test_add_tokens_rejects_bad_words(words, message):
    tokenizer, encoder = toy_text()
    with pytest.raises(ValueError, match=message):
        add_tokens(tokenizer, encoder, words)
    assert len(tokenizer) == len(vocabulary()) + 4


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny pipeline over the toy vocabulary and five 32px instance images of a magenta circle."""
    root = tmp_path_factory.mktemp("customization")
    PixArtAlphaPipeline(**tiny.make_components(words=vocabulary())).save_pretrained(root / "base")
    concept = ToyObject("circle", "magenta", "large", "center")
    make_instance_images(root / "instance", 5, concept, PALETTE, resolution=32)
    return root


def dreambooth_args(assets, out, *extra):
    return [
        "--pretrained_model_name_or_path", str(assets / "base"), "--instance_data", str(assets / "instance"),
        "--instance_prompt", PROMPT, "--output_dir", str(out), "--resolution", "32", "--max_train_steps", "1",
        "--validation_steps", "0", "--report_to", "none", *extra,
    ]  # fmt: skip


def encodes_the_token(pipe: PixArtAlphaPipeline) -> torch.Tensor:
    """Asserts that ``sks`` is a token of the pipeline; returns its T5 embedding row."""
    ids = pipe.tokenizer(PROMPT).input_ids
    new_id = len(vocabulary()) + 4
    assert new_id in ids and pipe.tokenizer.unk_token_id not in ids[5:7]
    return pipe.text_encoder.get_input_embeddings().weight[new_id]


def test_dreambooth_with_a_new_token_saves_a_pipeline_and_a_lora_that_reload_with_it(assets, tmp_path, capsys):
    assert main_dreambooth(dreambooth_args(assets, tmp_path / "unk")) == 2
    assert "['sks']" in capsys.readouterr().err and not (tmp_path / "unk" / "checkpoints").exists()

    assert main_dreambooth(dreambooth_args(assets, tmp_path / "full", "--add_tokens", "sks")) == 0
    full = PixArtAlphaPipeline.from_pretrained(tmp_path / "full" / "pipeline")
    row = encodes_the_token(full)

    lora = ["--add_tokens", "sks", "--lora_rank", "2", "--learning_rate", "1e-2"]
    assert main_dreambooth(dreambooth_args(assets, tmp_path / "lora", *lora)) == 0
    folder = tmp_path / "lora" / "lora"
    assert {p.name for p in folder.iterdir()} >= {"tokenizer", "text_encoder", "pytorch_lora_weights.safetensors"}
    pipe = load_dreambooth_lora(assets / "base", folder)
    torch.testing.assert_close(encodes_the_token(pipe), row, rtol=0, atol=0)  # the same seeded row
    images = pipe(PROMPT, num_inference_steps=2, height=32, width=32, use_resolution_binning=False).images
    assert images[0].size == (32, 32)

    push = ["--push_to_hub", "--hub_model_id", "alice/x"]
    assert main_dreambooth(dreambooth_args(assets, tmp_path / "push", *lora, *push)) == 2
    assert "--add_tokens" in capsys.readouterr().err


def test_concept_fraction_reads_the_new_colour_and_no_palette_colour():
    magenta = [
        render(Meaning((ToyObject(shape, "magenta", size, region),)), palette=PALETTE)
        for shape, size, region in zip(SHAPES, ("large", "small") * 3, REGIONS[::2])
    ]
    assert concept_fraction(magenta, "magenta", PALETTE) == 1.0
    palette = [render(Meaning((ToyObject("circle", color, "large", "center"),))) for color in COLORS]
    assert concept_fraction(palette, "magenta", PALETTE) == 0.0
    assert object_colors(palette, PALETTE) == list(COLORS)
    assert object_colors(magenta[:1], COLORS) == [None]  # unseen: the toy palette's detector finds nothing
    with pytest.raises(ValueError, match="No images"):
        concept_fraction([], "magenta", PALETTE)
    with pytest.raises(ValueError, match="not a colour of the palette"):
        concept_fraction(magenta, "teal", PALETTE)


def test_instance_images_and_prompt(tmp_path):
    obj = ToyObject("star", "magenta", "small", "top left")
    images = make_instance_images(tmp_path / "inst", 3, obj, PALETTE, seed=1)
    assert sorted(p.name for p in (tmp_path / "inst").iterdir()) == ["000.png", "001.png", "002.png"]
    assert concept_fraction(images, "magenta", PALETTE) == 1.0
    assert len({image.tobytes() for image in images}) == 3  # moved within the cell
    assert object_prompt(dataclasses.replace(obj, color="sks")) == "one object. a small sks star at the top left."
    with pytest.raises(ValueError, match="needs a size"):
        make_instance_images(tmp_path / "x", 1, ToyObject("star", "magenta"), PALETTE)


@pytest.mark.parametrize(
    ("name", "color", "message"),
    [
        ("red", (215, 45, 215), "is a colour of the toy palette"),
        ("scarlet", COLORS["red"], "is the palette colour 'red'"),
        ("teal", (0, 128, 128), "from 'cyan'"),
        ("ash", (120, 128, 130), "too grey"),
        ("magenta", (300, 0, 0), "three integers"),
    ],
)
def test_concept_palette_rejects_colours_the_benchmark_cannot_tell_apart(name, color, message):
    with pytest.raises(ValueError, match=message):
        concept_palette(name, color)


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="dreambooth_steps"):
        CustomizationSettings(dreambooth_steps=0)
    with pytest.raises(ValueError, match="hexagon"):
        CustomizationSettings(shape="hexagon")
    with pytest.raises(ValueError, match="Canny"):
        CustomizationSettings(canny_low_threshold=300)


def test_control_images_are_the_edges_of_the_renders_and_scale_zero_is_the_base():
    prompts = sample_prompts(3, seed=5)
    renders, edges = ground_truth_controls(prompts, resolution=64)
    for prompt, image, edge in zip(prompts, renders, edges):
        assert np.array_equal(np.asarray(image), np.asarray(render(prompt.meaning, 64)))
        assert np.array_equal(np.asarray(edge), np.asarray(canny_edges(image, *TOY_CANNY_THRESHOLDS)))
        edge_pixels = np.asarray(edge) > 0
        assert edge.mode == "L" and edge_pixels.any()
        # Every object has its outline, and nothing else: edges lie where the render is not flat.
        for obj in prompt.meaning.objects:
            alone = np.asarray(canny_edges(render(Meaning((obj,)), 64), *TOY_CANNY_THRESHOLDS)) > 0
            assert (alone & edge_pixels).sum() >= 0.8 * alone.sum() > 0, obj

    components = tiny.make_components(words=vocabulary(), num_layers=3)
    controlnet = PixArtControlNetModel.from_transformer(components["transformer"], num_layers=2)
    with torch.no_grad():  # a "trained" ControlNet: non-zero projections, so that the control changes the images
        for param in controlnet.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    pipe = PixArtAlphaControlNetPipeline(**components, controlnet=controlnet)
    settings = CustomizationSettings(inference_steps=2, batch_size=2)
    scores, images = compare_control(pipe, prompts, edges, settings, scales=(1.0, 0.0))
    assert set(scores) == set(images) == {"base", "control_1", "control_0"}
    assert scores["control_0"]["max_abs_difference_from_base"] == 0
    assert scores["control_1"]["max_abs_difference_from_base"] > 0
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images["control_0"], images["base"]))
    assert all(image.size == (64, 64) for run in images.values() for image in run)
    assert set(scores["base"]) == {"color", "shape", "spatial", "count", "overall"}
    with pytest.raises(ValueError, match="2 control images"):
        compare_control(pipe, prompts, edges[:2], settings)

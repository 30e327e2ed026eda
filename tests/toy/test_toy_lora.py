"""The toy LoRA example of examples/toy (issue #21): the VAE check of the new colour, prompts and the docs merge."""

import json

import pytest
import run_lora  # examples/toy (tests/conftest.py puts it on the path)
from lora import (
    HELD_OUT_REGIONS,
    HELD_OUT_SHAPES,
    LIME,
    NEW_COLOR,
    NEW_WORD,
    LoraExampleSettings,
    check_vae_renders,
    make_word_dataset,
    word_prompts,
)
from PIL import Image

from diffusers_pixart import TOY_MODEL_PATH
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.toy.compbench import concept_palette
from diffusers_pixart.toy.world import COLORS


@pytest.fixture(scope="module")
def pipe() -> PixArtAlphaPipeline:
    return PixArtAlphaPipeline.from_pretrained(TOY_MODEL_PATH)


def _check(pipe, tmp_path, word: str, color: tuple[int, int, int], palette) -> dict:
    """:func:`check_vae_renders` of 16 training images of ``word`` in ``color``."""
    settings = LoraExampleSettings(word=word, color=color, train_images=16, vae_check_images=16)
    data = make_word_dataset(tmp_path / "data", settings, pipe.tokenizer, palette)
    return check_vae_renders(pipe, data, settings, palette)


def test_vae_check_passes_a_palette_colour_and_the_default_colour(pipe, tmp_path):
    red = _check(pipe, tmp_path / "red", "red", COLORS["red"], COLORS)  # the toy VAE was trained on the palette
    assert red["shown"] == 16 and red["fraction"] >= 0.9
    indigo = _check(pipe, tmp_path / "indigo", NEW_WORD, NEW_COLOR, concept_palette(NEW_WORD, NEW_COLOR))
    assert indigo["fraction"] >= 0.8 and indigo["min"] == 0.8


def test_vae_check_refuses_lime(pipe, tmp_path):
    with pytest.raises(ValueError, match="VAE keeps the new colour .150, 215, 40. of 'retro' in [0-3] of 16"):
        _check(pipe, tmp_path, NEW_WORD, LIME, concept_palette(NEW_WORD, LIME))


def test_settings_refuse_a_threshold_out_of_range():
    with pytest.raises(ValueError, match="min_vae_renders"):
        LoraExampleSettings(min_vae_renders=1.5)


def test_train_style_prompts_are_like_the_training_scenes():
    settings = LoraExampleSettings(word_prompts=12, train_style_prompts=12)
    for train in (True, False):
        words = [
            next(obj for obj in prompt.meaning.objects if obj.color == NEW_WORD)
            for prompt in word_prompts(settings, train=train)
        ]
        held_out = [obj.shape in HELD_OUT_SHAPES or obj.region in HELD_OUT_REGIONS for obj in words]
        assert held_out == [not train] * 12


def test_copy_to_docs_keeps_earlier_runs_of_other_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lora, "DOCS", tmp_path / "docs")
    (tmp_path / "docs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "contact_sheet.png")
    old, new = {"adapters": ["lora"], "color": list(LIME)}, {"adapters": ["lora", "dora"], "color": list(NEW_COLOR)}
    earlier = {"settings": old, "models": {"base": {"x": 1}, "lora": {"x": 2}}, "earlier_runs": {"base": {"x": 0}}}
    (tmp_path / "docs" / "toy_lora.json").write_text(json.dumps(earlier))
    run_lora.copy_to_docs(tmp_path, {"settings": new, "models": {"base": {"x": 3}, "lora": {"x": 4}}})
    docs = json.loads((tmp_path / "docs" / "toy_lora.json").read_text())
    assert docs["models"] == {"base": {"x": 3}, "lora": {"x": 4}}
    assert docs["earlier_runs"] == {
        "base": {"x": 0},
        "base (2)": {"x": 1, "settings": old},
        "lora": {"x": 2, "settings": old},
    }
    run_lora.copy_to_docs(tmp_path, {"settings": {**new, "adapters": ["lora"]}, "models": {"lora": {"x": 5}}})
    docs = json.loads((tmp_path / "docs" / "toy_lora.json").read_text())  # a rerun of the same settings replaces
    assert docs["models"] == {"lora": {"x": 5}} and set(docs["earlier_runs"]) == {
        "base",
        "base (2)",
        "lora",
        "base (3)",
    }

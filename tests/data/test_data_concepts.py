"""Concept density (paper Table 1) on captions written here and on the toy world's dense and sparse captions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from diffusers_pixart.data.concepts import caption_nouns, concept_density, dataset_concept_density
from diffusers_pixart.toy.world import make_dataset

REPO = Path(__file__).resolve().parents[2]


def test_counts_follow_the_definitions():
    assert caption_nouns("A red circle next to two small blue squares, in the style of a painting.") == [
        "circle", "squares", "style", "painting",
    ]  # fmt: skip
    captions = ["a cat and a dog"] * 11 + ["a tree"] * 3 + [""]
    stats = concept_density(captions)
    # cat and dog appear 11 times (> 10: valid), tree 3 times (not valid)
    assert (stats.valid_distinct_nouns, stats.distinct_nouns, stats.total_nouns) == (2, 3, 25)
    assert stats.valid_ratio == pytest.approx(2 / 3)
    assert stats.nouns_per_image == pytest.approx(25 / 15) and stats.num_captions == 15
    assert concept_density(captions, min_count=2).valid_distinct_nouns == 3
    assert stats.table_row("toy") == "toy  2/3 = 66.7%  25  1.7/Img"
    with pytest.raises(ValueError, match="No caption"):
        concept_density([])
    with pytest.raises(ValueError, match="must be strings"):
        concept_density([3])


def test_dense_captions_are_denser_than_sparse(tmp_path):
    sparse = ["a photo", "a dog", "nice colours", "a red thing", "wallpaper"]
    dense = [
        "A small brown dog sits on a wooden bench next to a tree, with a red ball on the grass and clouds in the sky.",
        "A watercolor painting of a house with a blue door, two windows and a chimney, a cat on the roof at sunset.",
        "A close-up photo of a bowl of fruit on a table: apples, bananas and grapes beside a glass of water.",
    ]
    assert concept_density(dense).nouns_per_image > 3 * concept_density(sparse).nouns_per_image

    # The toy world: its dense and sparse captions of the same images, through the example script's main.
    folder = make_dataset(tmp_path / "toy", n=60, seed=0, resolution=32)
    out = tmp_path / "density.json"
    spec = importlib.util.spec_from_file_location("concept_density", REPO / "examples" / "concept_density.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--data", str(folder), "--columns", "text", "sparse_text", "--json", str(out)])
    stats = json.loads(out.read_text())
    assert stats["text"]["num_captions"] == stats["sparse_text"]["num_captions"] == 60
    assert stats["text"]["nouns_per_image"] > stats["sparse_text"]["nouns_per_image"]
    assert stats["text"]["total_nouns"] > stats["sparse_text"]["total_nouns"]
    direct = dataset_concept_density(str(folder), "sparse_text", max_samples=10)
    assert direct.num_captions == 10
    with pytest.raises(ValueError, match="Column 'caption' is not in"):
        dataset_concept_density(str(folder), "caption")

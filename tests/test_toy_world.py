"""The toy world: grammar round trips, vocabulary, rendering, aspect ratios and the imagefolder data set."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from diffusers_pixart.tiny import make_tokenizer
from diffusers_pixart.toy import (
    COLORS,
    SHAPES,
    Meaning,
    Relation,
    ToyObject,
    bucket_sizes,
    class_label,
    class_names,
    make_dataset,
    make_example,
    parse_prompt,
    render,
    sample_prompts,
    vocabulary,
)
from diffusers_pixart.toy.world import shape_coverage


def test_prompts_round_trip_through_the_parser_and_are_deterministic():
    prompts = sample_prompts(50, seed=3)
    assert [p.text for p in prompts] == [p.text for p in sample_prompts(50, seed=3)]
    assert [p.text for p in prompts] != [p.text for p in sample_prompts(50, seed=4)]
    for prompt in prompts:
        assert parse_prompt(prompt.text) == prompt.meaning
        colors = [obj.color for obj in prompt.meaning.objects]
        assert len(set(colors)) == len(colors)
    assert {len(p.meaning.objects) for p in prompts} == {1, 2, 3}


def test_parser_reads_a_hand_written_prompt():
    meaning = parse_prompt(
        "Two objects.  a small orange star on the left, and an  blue ring. The blue ring is above the orange star"
    )
    assert meaning == Meaning(
        objects=(ToyObject("star", "orange", "small", "left"), ToyObject("ring", "blue", None, None)),
        relations=(Relation(1, "above", 0),),
    )
    assert parse_prompt(meaning.text) == meaning
    assert meaning.text == (
        "two objects. a small orange star on the left and a blue ring. the blue ring is above the orange star."
    )


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("a photo of a cat", "object phrase"),
        ("a red cat", "object phrase"),
        ("a red circle somewhere", "not a position"),
        ("two objects. a red circle", "announces 2"),
        ("a red circle and a red square", "repeats a colour"),
        ("a red circle on the left and a blue square on the left", "same region"),
        ("a red circle, a blue square, a green star and a pink ring", "at most 3"),
        ("a red circle and a blue square. the red circle is near the blue square", "not a relation"),
        ("a red circle and a blue square. the red star is above the blue square", "does not name"),
        ("a red circle. the red circle is above the red circle", "itself"),
    ],
)
def test_parser_rejects_text_outside_the_grammar(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_prompt(text)


def test_vocabulary_covers_every_caption_and_builds_a_tokenizer():
    words = set(vocabulary())
    assert len(words) < 100
    records = [make_example(0, i)[1] for i in range(60)]
    for text in [r["text"] for r in records] + [r["sparse_text"] for r in records]:
        assert set(text.replace(",", " ").replace(".", " ").split()) <= words
    tokenizer = make_tokenizer(vocabulary())
    ids = tokenizer(records[0]["text"].replace(",", "").replace(".", "")).input_ids
    assert tokenizer.unk_token_id not in ids


def test_class_labels_cover_colour_times_shape():
    names = class_names()
    assert len(names) == len(COLORS) * len(SHAPES) == 40
    assert names[class_label(ToyObject("star", "pink"))] == "pink star"


def test_render_draws_each_object_in_its_colour_at_its_place():
    meaning = Meaning((ToyObject("square", "red", "large", "top left"), ToyObject("circle", "blue", "small", "center")))
    image = render(meaning, 96)
    assert image.mode == "RGB" and image.size == (96, 96)
    array = np.asarray(image)
    side = 0.28 * 96
    centre = int(96 / 6)
    assert tuple(array[centre, centre]) == COLORS["red"]  # inside the square, cell centre of the top left
    assert tuple(array[48, 48]) == COLORS["blue"]
    assert tuple(array[48, 4]) == (128, 128, 128)  # the empty left cell is background
    red = np.all(array == COLORS["red"], axis=2).sum()
    assert abs(red - side**2) < 4 * side  # fully covered pixels of the square: side^2 less the anti-aliased rim


def test_shapes_fill_their_box_with_the_expected_area():
    box = (8.0, 8.0, 56.0, 56.0)
    area = {shape: shape_coverage(shape, box, 64, 64).sum() / 48**2 for shape in SHAPES}
    assert area["square"] == pytest.approx(1.0, abs=0.01)
    assert area["circle"] == pytest.approx(np.pi / 4, abs=0.01)
    assert area["triangle"] == pytest.approx(0.5, abs=0.01)
    assert area["ring"] == pytest.approx(np.pi / 4 * (1 - 0.6**2), abs=0.01)
    assert area["star"] < area["triangle"]


def test_aspect_ratios_accept_ratios_and_pixel_sizes():
    assert bucket_sizes(64, None) == [(64, 64)]
    assert bucket_sizes(64, [0.5, 2.0, (48, 112)]) == [(48, 96), (96, 48), (48, 112)]
    for bad in ([], [0], [(8, 64)], [(64, 64, 3)], ["wide"]):
        with pytest.raises(ValueError):
            bucket_sizes(64, bad)


def test_make_dataset_writes_an_imagefolder_that_datasets_streams(tmp_path):
    out = make_dataset(tmp_path / "toy", 12, seed=5, aspect_ratios=[0.5, (64, 64)], style="aesthetic")
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    stream = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", streaming=True)
    examples = list(stream)
    assert len(examples) == 12
    sizes = set()
    for example in examples:
        record = next(line for line in lines if line["text"] == example["text"])
        image, expected = make_example(5, int(record["file_name"][:-4]), bucket_sizes(64, [0.5, (64, 64)]), "aesthetic")
        assert np.array_equal(np.asarray(example["image"]), np.asarray(image))  # deterministic for the seed
        assert example["image"].size == (example["original_width"], example["original_height"])
        assert example["label"] == class_label(
            ToyObject(example["objects"][0]["shape"], example["objects"][0]["color"])
        )
        assert parse_prompt(example["text"]).objects == tuple(
            ToyObject(o["shape"], o["color"], o["size"], o["region"]) for o in example["objects"]
        )
        assert example["sparse_text"] == expected["sparse_text"]
        sizes.add(example["image"].size)
    assert sizes == {(96, 48), (64, 64)}
    with pytest.raises(FileExistsError):
        make_dataset(out, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no temporary folder left behind


def test_make_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        make_dataset(tmp_path / "a", 0)
    with pytest.raises(ValueError, match="style"):
        make_dataset(tmp_path / "b", 2, style="glossy")
    with pytest.raises(ValueError, match="resolution"):
        make_dataset(tmp_path / "c", 2, resolution=8)
    assert not any(tmp_path.iterdir())


def test_aesthetic_style_is_larger_and_shaded():
    meaning = Meaning((ToyObject("square", "green", "large", "center"),))
    plain, aesthetic = (np.asarray(render(meaning, 64, style=s)).astype(int) for s in ("plain", "aesthetic"))
    chroma = {name: (a.max(2) - a.min(2) > 50).sum() for name, a in (("plain", plain), ("aesthetic", aesthetic))}
    assert chroma["aesthetic"] > 1.2 * chroma["plain"]
    assert len({tuple(p) for p in aesthetic[28:36, 28:36].reshape(-1, 3)}) > 1  # shading varies inside the object
    assert isinstance(render(meaning, 48, 80, "aesthetic"), Image.Image)
    with pytest.raises(ValueError, match="no size or no region"):
        render(Meaning((ToyObject("square", "green"),)))

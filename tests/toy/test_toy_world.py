"""The toy world: its language (every phrasing family read back, the held-out ones out of training captions),
vocabulary, rendering, aspect ratios and the imagefolder data set."""

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
from diffusers_pixart.toy.world import (
    FAMILIES,
    HELD_OUT_FAMILIES,
    PLACE_PREPOSITIONS,
    TRAINING_FAMILIES,
    describe,
    record_meaning,
    relations_between,
    sample_scene,
    shape_coverage,
)


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
        ("a photo of a cat", "'photo' in .* is not a word of the toy language"),
        ("a red cat", "'cat'"),
        ("a red circle somewhere", "'somewhere'"),
        ("a red", "names no shape"),
        ("a circle", "has no colour"),
        ("red circles", "does not say how many"),
        ("two red circle", "does not say how many"),
        ("two objects. a red circle", "announces 2"),
        ("a red circle and a red square", "repeats the colour red on another shape"),
        ("a red circle on the left and a blue square on the left", "same region"),
        ("two red circles at the top", "one place for several objects"),
        ("a red circle at the top at the left", "placed twice"),
        ("a red circle, a blue square, a green star and a pink ring", "at most 3"),
        ("a red circle above", "names no second object"),
        ("above a red circle", "follows no object"),
        ("a red circle to its left", "no object before it"),
        ("a red circle and one at the top", "follows no group"),
        ("two red circles. the red circle is above the red circles", "could mean 2 objects"),
        ("a red circle and a blue square. the red star is above the blue square", "does not name"),
        ("a red circle. the red circle is above the red circle", "itself"),
        ("at the top", "places no object"),
    ],
)
def test_parser_rejects_text_outside_the_grammar(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_prompt(text)


def test_vocabulary_covers_every_caption_and_builds_a_tokenizer():
    words = set(vocabulary())
    assert len(words) < 150
    records = [make_example(0, i, phrasing=dict.fromkeys(FAMILIES, 1.0), group_probability=0.3)[1] for i in range(80)]
    for text in [r["text"] for r in records] + [r["sparse_text"] for r in records]:
        assert set(text.replace(",", " ").replace(".", " ").replace(";", " ").replace(":", " ").split()) <= words
    tokenizer = make_tokenizer(vocabulary())
    for record in records:
        ids = tokenizer(record["text"].replace(",", "").replace(".", "").replace(";", "").replace(":", "")).input_ids
        assert tokenizer.unk_token_id not in ids


def _scenes(n, seed):
    """Seeded scenes of one to three objects, a third of them with two copies of one shape."""
    return [sample_scene(np.random.default_rng([seed, i]), group_probability=0.3) for i in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_phrasing_family_reads_back_to_the_meaning_it_states(family):
    stated_anything = {"size": False, "region": False, "relations": False}
    for index, scene in enumerate(_scenes(150, seed=21)):
        prompt = describe(scene.meaning, family, np.random.default_rng([5, index]))
        assert parse_prompt(prompt.text) == prompt.meaning, prompt.text
        assert prompt == describe(scene.meaning, family, np.random.default_rng([5, index]))  # seeded
        # The caption states only what the scene holds: its objects (in some order), places, sizes and relations.
        scene_objects = list(scene.meaning.objects)
        # Placed objects first (regions are distinct), then sized ones: copies of one shape match unambiguously.
        for obj in sorted(prompt.meaning.objects, key=lambda o: (o.region is None, o.size is None)):
            match = next(
                o
                for o in scene_objects
                if (o.color, o.shape) == (obj.color, obj.shape)
                and obj.size in (None, o.size)
                and obj.region in (None, o.region)
            )
            scene_objects.remove(match)
            stated_anything["size"] |= obj.size is not None
            stated_anything["region"] |= obj.region is not None
        assert not scene_objects
        for rel in prompt.meaning.relations:
            subject, other = prompt.meaning.objects[rel.subject], prompt.meaning.objects[rel.object]
            located = [o for o in scene.meaning.objects if (o.color, o.shape) == (subject.color, subject.shape)]
            targets = [o for o in scene.meaning.objects if (o.color, o.shape) == (other.color, other.shape)]
            assert len(located) == len(targets) == 1  # relations only between objects a caption can single out
            assert rel.relation in relations_between(located[0], targets[0])
            stated_anything["relations"] = True
    unstated = {"short": ("size", "relations"), "fronted": ("relations",), "clause": ("relations",)}
    unstated["counted"] = ("relations",)
    expected = {name: name not in unstated.get(family, ()) for name in stated_anything}
    assert stated_anything == expected


def test_people_s_phrasings_are_read():
    red_circle, blue_square = ToyObject("circle", "red"), ToyObject("square", "blue")
    assert parse_prompt("a red circle above a blue square") == Meaning(
        (red_circle, blue_square), (Relation(0, "above", 1),)
    )
    assert parse_prompt("A blue square with a red circle to its left.") == Meaning(
        (blue_square, red_circle), (Relation(1, "left of", 0),)
    )
    assert parse_prompt("a big circle that is red") == parse_prompt("large red circle")
    assert parse_prompt("a circle that is red and little in the middle") == Meaning(
        (ToyObject("circle", "red", "small", "center"),)
    )
    assert parse_prompt("red circle in the top-left corner") == parse_prompt("a red circle at the upper left")
    assert parse_prompt("in the lower right, a pink star") == Meaning(
        (ToyObject("star", "pink", None, "bottom right"),)
    )
    assert parse_prompt("3 shapes: two red circles, one at the top and a big one on the left, and 1 blue ring") == (
        Meaning(
            (
                ToyObject("circle", "red", None, "top"),
                ToyObject("circle", "red", "large", "left"),
                ToyObject("ring", "blue"),
            )
        )
    )
    assert parse_prompt("a red circle under a blue square and a green star to the right of the blue square") == Meaning(
        (red_circle, blue_square, ToyObject("star", "green")), (Relation(0, "below", 1), Relation(2, "right of", 1))
    )


def test_training_captions_never_use_the_held_out_families():
    assert set(HELD_OUT_FAMILIES).isdisjoint(TRAINING_FAMILIES) and set(FAMILIES) == {
        *TRAINING_FAMILIES,
        *HELD_OUT_FAMILIES,
    }
    records = [make_example(3, i, phrasing=TRAINING_FAMILIES, group_probability=0.15)[1] for i in range(300)]
    assert {r["caption_family"] for r in records} == set(TRAINING_FAMILIES)
    for record in records:
        text = record["text"]
        # The held-out families' marks: "with ... to its left / above it", and a place before its object.
        words = text.replace(",", " ").replace(".", " ").split()
        assert not {"with", "it", "its"} & set(words), text
        sentences = [s.strip() for s in text.replace(";", ".").split(".") if s.strip()]
        assert not any(s.split()[0] in PLACE_PREPOSITIONS for s in sentences), text
        stated = parse_prompt(text)
        assert len(stated.objects) == len(record["objects"])
        assert {(o.color, o.shape) for o in stated.objects} == {
            (o.color, o.shape) for o in record_meaning(record).objects
        }
    canonical = make_example(3, 0)[1]
    assert canonical["caption_family"] == "canonical" and canonical["text"] == record_meaning(canonical).text


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

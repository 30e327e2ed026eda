"""Toy CompBench: ground-truth renders score near 1, mismatched or altered pairs score low, bad input is refused."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from diffusers_pixart.toy import (
    Meaning,
    ToyObject,
    detect_objects,
    parse_prompt,
    render,
    sample_prompts,
    score,
    score_image,
)
from diffusers_pixart.toy.world import FAMILIES, describe, object_box, sample_scene


def _scenes(n, seed=11):
    return [sample_scene(np.random.default_rng([seed, i])) for i in range(n)]


@pytest.mark.parametrize("style", ["plain", "aesthetic"])
def test_ground_truth_renders_score_one_and_mismatched_pairs_low(style):
    scenes = _scenes(40)
    images = [render(scene, 64, style=style) for scene in scenes]
    prompts = [scene.meaning.text for scene in scenes]
    truth = score(images, prompts)
    assert truth == {"color": 1.0, "shape": 1.0, "spatial": 1.0, "count": 1.0, "overall": 1.0}
    mismatched = score(images, prompts[1:] + prompts[:1])
    assert mismatched["overall"] < 0.3
    assert mismatched["color"] < 0.4 and mismatched["shape"] < 0.15 and mismatched["spatial"] < 0.1


def test_small_images_and_aspect_ratios_still_score_near_one():
    scenes = _scenes(30, seed=12)
    for height, width in ((32, 32), (48, 96), (96, 48)):
        result = score([render(s, height, width) for s in scenes], [s.meaning for s in scenes])
        assert result["color"] == 1.0 and result["spatial"] == 1.0 and result["count"] == 1.0
        assert result["shape"] >= 0.9, (height, width, result)


def test_blur_and_noise_keep_scores_high():
    rng = np.random.default_rng(0)
    scenes = _scenes(20, seed=13)
    images = []
    for scene in scenes:
        image = render(scene, 64).filter(ImageFilter.GaussianBlur(0.7))
        noisy = np.asarray(image).astype(float) + rng.normal(0, 8, (64, 64, 3))
        images.append(Image.fromarray(np.uint8(np.clip(noisy, 0, 255))))
    result = score(images, [s.meaning for s in scenes])
    assert result["overall"] >= 0.95, result


def test_soft_edges_are_read_at_half_coverage():
    # A blur of 1.2 px fills a small ring's hole at the fixed chroma threshold (50 of the ring's ~180): the outline
    # at half the object's chroma, the one the shape templates are drawn with, keeps the hole open.
    meaning = Meaning((ToyObject("ring", "red", "small", "center"), ToyObject("square", "blue", "small", "top left")))
    image = render(meaning, 64).filter(ImageFilter.GaussianBlur(1.2))
    assert sorted(d.shape for d in detect_objects(image)) == ["ring", "square"]
    assert score_image(image, meaning)["shape"] == 1.0


def test_each_category_catches_its_own_mistake():
    prompt = (
        "two objects. a large red circle on the left and a large blue square on the right. "
        "the red circle is left of the blue square."
    )
    assert score_image(render(parse_prompt(prompt)), prompt)["overall"] == 1.0
    swapped_shapes = render(parse_prompt("a large red square on the left and a large blue circle on the right"))
    assert score_image(swapped_shapes, prompt) == {
        "color": 1.0,
        "shape": 0.0,
        "spatial": 1.0,
        "count": 1.0,
        "overall": 0.75,
    }
    swapped_places = render(parse_prompt("a large red circle on the right and a large blue square on the left"))
    assert score_image(swapped_places, prompt) == {
        "color": 1.0,
        "shape": 1.0,
        "spatial": 0.0,
        "count": 1.0,
        "overall": 0.75,
    }
    extra = render(
        parse_prompt(
            "a large red circle on the left, a large blue square on the right and a small green star at the top"
        )
    )
    assert score_image(extra, prompt)["count"] == 0.0
    missing = render(parse_prompt("a large red circle on the left"))
    assert score_image(missing, prompt) == {
        "color": 0.5,
        "shape": 0.5,
        "spatial": pytest.approx(1 / 3),
        "count": 0.0,
        "overall": pytest.approx(1 / 3),
    }
    blank = Image.new("RGB", (64, 64), (128, 128, 128))
    assert score_image(blank, prompt)["overall"] == 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_prompts_of_every_phrasing_family_score_one_on_their_scene(family):
    scenes = [sample_scene(np.random.default_rng([7, i]), group_probability=0.4) for i in range(25)]
    prompts = [describe(scene.meaning, family, np.random.default_rng(i)).text for i, scene in enumerate(scenes)]
    assert score([render(scene, 64) for scene in scenes], prompts)["overall"] == 1.0


def test_copies_of_one_shape_are_matched_by_place_and_counted():
    prompt = "two red circles, a large one at the top left and a small one at the bottom right, and a small blue star "
    prompt += "in the middle"
    meaning = parse_prompt(prompt)
    image = render(meaning, 64)
    assert score_image(image, prompt) == {"color": 1.0, "shape": 1.0, "spatial": 1.0, "count": 1.0, "overall": 1.0}
    one_circle = render(Meaning(meaning.objects[1:]), 64)
    assert score_image(one_circle, prompt)["count"] == 0.0
    assert score_image(one_circle, prompt)["color"] == pytest.approx(2 / 3)  # the second circle has no region left
    swapped = render(Meaning((meaning.objects[0], meaning.objects[1], ToyObject("star", "blue", "small", "left"))), 64)
    assert score_image(swapped, "two red circles and a blue star in the center")["spatial"] == 0.0


def test_prompt_without_positions_has_no_spatial_score():
    image = render(parse_prompt("a small green ring in the center"))
    assert score_image(image, "a green ring") == {
        "color": 1.0,
        "shape": 1.0,
        "spatial": None,
        "count": 1.0,
        "overall": 1.0,
    }
    assert score([image, image], ["a green ring", "a green ring in the center"])["spatial"] == 1.0


def test_detections_match_the_drawn_objects():
    meaning = Meaning(
        (ToyObject("star", "yellow", "large", "bottom right"), ToyObject("ring", "purple", "small", "top"))
    )
    image = render(meaning, 96, 128)
    found = {d.color: d for d in detect_objects(image)}
    assert set(found) == {"yellow", "purple"}
    for obj in meaning.objects:
        x0, y0, x1, y1 = object_box(obj, (0.0, 0.0), 96, 128)
        detection = found[obj.color]
        assert detection.shape == obj.shape and detection.region == obj.region
        assert detection.box[0] == pytest.approx(x0, abs=1) and detection.box[3] == pytest.approx(y1 - 1, abs=1)
    # The ring's centroid is the centre of its box (its hole is symmetric).
    assert found["purple"].centroid == pytest.approx((64 / 128, (96 / 6) / 96), abs=0.01)


def test_bad_input_gets_a_clear_error():
    image = render(parse_prompt("a small green ring in the center"))
    with pytest.raises(ValueError, match="mode 'L'"):
        score_image(image.convert("L"), "a green ring")
    with pytest.raises(ValueError, match="mode 'RGBA'"):
        score_image(image.convert("RGBA"), "a green ring")
    with pytest.raises(ValueError, match="at least 16x16"):
        score_image(image.resize((8, 8)), "a green ring")
    with pytest.raises(ValueError, match="uint8 array"):
        score_image(np.zeros((64, 64, 3), np.float32), "a green ring")
    with pytest.raises(ValueError, match="object phrase"):
        score_image(image, "a photo of a dog")
    with pytest.raises(ValueError, match="No images"):
        score([], [])
    with pytest.raises(ValueError, match="1 images but 2 prompts"):
        score([image], ["a green ring", "a red ring"])


def test_noise_scores_low():
    rng = np.random.default_rng(0)
    prompts = [p.text for p in sample_prompts(20, seed=1)]
    pixel_noise = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in prompts]
    assert score(pixel_noise, prompts)["overall"] == 0.0
    # Smooth colour blotches (like an untrained model's output) do hold palette colours, but neither the count nor
    # the shapes nor the places come out right.
    blotches = [
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64), Image.Resampling.BICUBIC)
        for _ in prompts
    ]
    result = score(blotches, prompts)
    assert result["count"] <= 0.05 and result["shape"] < 0.3 and result["spatial"] < 0.3 and result["overall"] < 0.4

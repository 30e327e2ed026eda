"""The toy T5's language pretraining: per-token targets read off the toy language (every phrasing family), an encoder
learning them, and the warning about words the toy model does not know."""

import pytest
import torch

from diffusers_pixart.tiny import make_tokenizer
from diffusers_pixart.toy.language import (
    ATTRIBUTES,
    IGNORE,
    make_toy_text_encoder,
    pretrain_text_encoder,
    reads_toy_language,
    token_targets,
    vocabulary_warning,
)
from diffusers_pixart.toy.world import COLORS, RELATIONS, sample_prompts

CAPTION = (
    "two objects. a large red circle at the top left and a small blue star in the center. "
    "the red circle is above the blue star."
)
NUMBER_TWO = ATTRIBUTES["count"].index("two")


@pytest.fixture(scope="module")
def text_model():
    return make_toy_text_encoder(d_model=32, num_heads=2)


def _value(targets, name, position):
    index = int(targets[name][0, position])
    return None if index == IGNORE else ATTRIBUTES[name][index]


def test_token_targets_bind_each_mention_to_its_object(text_model):
    tokenizer, _ = text_model
    input_ids, mask, targets = token_targets(tokenizer, [CAPTION], max_length=40)
    words = tokenizer.convert_ids_to_tokens(input_ids[0])
    positions = [i for i, word in enumerate(words) if word == "\u2581circle"]
    assert len(positions) == 2  # the phrase and the relation sentence
    for position in positions:
        assert _value(targets, "color", position) == "red"
        assert _value(targets, "region", position) == "top left"
        assert _value(targets, "size", position) == "large"
    star = words.index("\u2581star", words.index("\u2581is"))  # the mention in the relation sentence
    assert (_value(targets, "color", star), _value(targets, "shape", star)) == ("blue", "star")
    assert (_value(targets, "region", star), _value(targets, "size", star)) == ("center", "small")
    above = words.index("\u2581above")
    assert all(_value(targets, name, above) is None for name in ("color", "shape", "size", "region"))
    real = mask[0].bool()
    assert (targets["count"][0][real] == NUMBER_TWO).all() and (targets["count"][0][~real] == IGNORE).all()
    assert all((targets[name][0][~real] == IGNORE).all() for name in ATTRIBUTES)


def test_token_targets_mark_unstated_size_and_region(text_model):
    tokenizer, _ = text_model
    input_ids, _, targets = token_targets(tokenizer, ["a green ring."], max_length=10)
    ring = tokenizer.convert_ids_to_tokens(input_ids[0]).index("\u2581ring")
    assert (_value(targets, "size", ring), _value(targets, "region", ring)) == (None, None)
    assert int(targets["size"][0, ring]) == ATTRIBUTES["size"].index(None)  # a class, not ignored


def _related(targets, position):
    """The (relation, colour) pairs a token is taught to carry."""
    bits = targets["relations"][0, position]
    return {(RELATIONS[i // len(COLORS)], list(COLORS)[i % len(COLORS)]) for i in range(len(bits)) if bits[i] == 1}


def test_token_targets_of_new_phrasings(text_model):
    tokenizer, _ = text_model
    text = "a blue square with a big green star to its left"
    input_ids, _, targets = token_targets(tokenizer, [text], max_length=20)
    words = tokenizer.convert_ids_to_tokens(input_ids[0])
    square, star, big, left = (words.index(f"\u2581{w}") for w in ("square", "star", "big", "left"))
    assert (_value(targets, "color", square), _value(targets, "size", square)) == ("blue", None)
    assert (_value(targets, "color", star), _value(targets, "size", big)) == ("green", "large")
    assert _related(targets, star) == {("left of", "blue")} and _related(targets, square) == {("right of", "green")}
    assert _value(targets, "color", left) is None and (targets["relations"][0, left] == IGNORE).all()
    text = "two red circles, one at the top and a small one in the lower-left corner"
    input_ids, _, targets = token_targets(tokenizer, [text], max_length=20)
    words = tokenizer.convert_ids_to_tokens(input_ids[0])
    circles, top, corner = (words.index(f"\u2581{w}") for w in ("circles", "top", "corner"))
    assert (_value(targets, "color", circles), _value(targets, "shape", circles)) == ("red", "circle")
    assert int(targets["region"][0, circles]) == IGNORE  # the two circles are in different places
    assert (_value(targets, "region", top), _value(targets, "size", top)) == ("top", None)
    assert (_value(targets, "region", corner), _value(targets, "size", corner)) == ("bottom left", "small")
    assert (targets["count"][0][: len(text.split())] == ATTRIBUTES["count"].index("two")).all()


def test_token_targets_refuse_text_outside_the_grammar(text_model):
    tokenizer, _ = text_model
    with pytest.raises(ValueError, match="'photo' in .* is not a word of the toy language"):
        token_targets(tokenizer, ["a photo of a cat"])


def test_pretraining_teaches_the_encoder_where_each_object_is():
    captions = [prompt.text for prompt in sample_prompts(300, seed=1)]
    held_out = [prompt.text for prompt in sample_prompts(100, seed=2)]
    tokenizer, frozen = make_toy_text_encoder(d_model=32, num_heads=2)
    frozen.requires_grad_(False)  # a linear probe of the random encoder
    probe = pretrain_text_encoder(tokenizer, frozen, captions, 400, 32, 1e-2, held_out=held_out)
    tokenizer, encoder = make_toy_text_encoder(d_model=32, num_heads=2)
    before = [p.detach().clone() for p in encoder.parameters()]
    trained = pretrain_text_encoder(tokenizer, encoder, captions, 400, 32, 1e-2, held_out=held_out)
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    assert not encoder.training
    assert trained["region"] > probe["region"] + 0.3
    assert trained["color"] > probe["color"] + 0.3


@pytest.mark.parametrize(
    ("captions", "steps", "match"), [([CAPTION], 0, "at least 1"), ([], 5, "empty"), (["a cat"], 5, "toy language")]
)
def test_pretraining_refuses_bad_input(captions, steps, match):
    tokenizer, encoder = make_toy_text_encoder(d_model=32, num_heads=2)
    with pytest.raises(ValueError, match=match):
        pretrain_text_encoder(tokenizer, encoder, captions, steps)


def test_vocabulary_warning_names_the_unknown_words():
    assert vocabulary_warning("a red circle above a blue square") is None
    assert vocabulary_warning("Two red circles, 1 at the top-left; a big one in the middle.") is None
    warning = vocabulary_warning("A cat sitting on a red circle near the house, cat!")
    assert warning.startswith("this model knows only shapes (circle, square, triangle, star, ring), colours (red,")
    assert warning.endswith("; unknown words: cat, sitting, near, house")
    assert vocabulary_warning("two big red circles", words=["two", "red", "circles"]).endswith("unknown words: big")
    with pytest.raises(ValueError, match="must be a string"):
        vocabulary_warning(None)


def test_toy_tokenizers_are_told_from_others(text_model):
    assert reads_toy_language(text_model[0])
    assert not reads_toy_language(make_tokenizer())  # the tiny test vocabulary has "cat", "house", ...
    assert not reads_toy_language(make_tokenizer(["red", "circle"]))  # too few words to be a toy model

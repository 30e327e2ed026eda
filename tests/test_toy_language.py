"""The toy T5's language pretraining: per-token targets read off the caption grammar, and an encoder learning them."""

import pytest
import torch

from diffusers_pixart.toy.language import ATTRIBUTES, IGNORE, pretrain_text_encoder, token_targets
from diffusers_pixart.toy.recipe import make_toy_text_encoder
from diffusers_pixart.toy.world import sample_prompts

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


def test_token_targets_refuse_text_outside_the_grammar(text_model):
    tokenizer, _ = text_model
    with pytest.raises(ValueError, match="not an object phrase"):
        token_targets(tokenizer, ["a photo of a cat"])


def test_pretraining_teaches_the_encoder_where_each_object_is():
    captions = [prompt.text for prompt in sample_prompts(300, seed=1)]
    held_out = [prompt.text for prompt in sample_prompts(100, seed=2)]
    tokenizer, frozen = make_toy_text_encoder(d_model=32, num_heads=2)
    frozen.requires_grad_(False)  # a linear probe of the random encoder
    probe = pretrain_text_encoder(tokenizer, frozen, captions, 200, 32, 1e-2, held_out=held_out)
    tokenizer, encoder = make_toy_text_encoder(d_model=32, num_heads=2)
    before = [p.detach().clone() for p in encoder.parameters()]
    trained = pretrain_text_encoder(tokenizer, encoder, captions, 200, 32, 1e-2, held_out=held_out)
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    assert not encoder.training
    assert trained["region"] > probe["region"] + 0.3
    assert trained["color"] > probe["color"] + 0.3


@pytest.mark.parametrize(
    ("captions", "steps", "match"), [([CAPTION], 0, "at least 1"), ([], 5, "empty"), (["a cat"], 5, "toy grammar")]
)
def test_pretraining_refuses_bad_input(captions, steps, match):
    tokenizer, encoder = make_toy_text_encoder(d_model=32, num_heads=2)
    with pytest.raises(ValueError, match=match):
        pretrain_text_encoder(tokenizer, encoder, captions, steps)

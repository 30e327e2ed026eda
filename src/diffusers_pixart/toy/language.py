"""Pretraining the toy T5 on the toy captions: the analogue of the language pretraining a real T5 brings.

PixArt-alpha conditions on T5-XXL, pretrained on web text: its token embeddings already say which words of a caption
describe one object ("a small *yellow* ring at the *bottom right*"), so the diffusion transformer only has to draw
what each phrase says where it says it. A randomly initialised toy T5 knows none of this: each output token is its
word plus a random mixture of its neighbours, and the transformer must learn the grammar from the images as well.

:func:`pretrain_text_encoder` teaches the toy encoder to read its grammar, from text alone, with a supervised parsing
objective: every token of an object's phrase, and of each later mention of the object (``"the yellow ring is right of
..."``), predicts that object's colour, shape, size and region through a linear head on the encoder's output, and
every token predicts the number of objects. The heads are discarded; the encoder keeps the binding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..text import preprocess_captions
from .world import COLORS, NUMBER_WORDS, REGIONS, SHAPES, SIZES, Meaning, _object_mention, _object_phrase, parse_prompt

#: The attributes each token is taught to read, with their classes (size and region add "not stated").
ATTRIBUTES: dict[str, tuple[str | None, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": (*SIZES["plain"], None),
    "region": (*REGIONS, None),
    "count": NUMBER_WORDS,
}
#: Target of a token that has no value for an attribute (cross-entropy's ignore index).
IGNORE = -100


def _object_spans(text: str, meaning: Meaning) -> list[tuple[int, int, int]]:
    """``(start, end, object index)`` of each object's phrase and of each later mention ("the COLOR SHAPE") in
    ``text``: colours are distinct within a caption, so each span names one object."""
    spans = []
    for index, obj in enumerate(meaning.objects):
        phrase = _object_phrase(obj)
        start = text.find(phrase)
        if start < 0:
            raise ValueError(f"{text!r} does not contain the object phrase {phrase!r}.")
        spans.append((start, start + len(phrase), index))
        for mention in re.finditer(rf"\b{_object_mention(obj)}\b", text):
            spans.append((mention.start(), mention.end(), index))
    return spans


def token_targets(
    tokenizer, texts: Sequence[str], max_length: int = 64
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Tokens of toy captions and, per token, the attributes it is taught to read.

    The texts are processed as the pipeline processes prompts (:func:`.text.preprocess_captions`).

    Returns:
        ``input_ids`` and ``attention_mask`` (B, max_length), and for each of :data:`ATTRIBUTES` a (B, max_length)
        long tensor of class indices, :data:`IGNORE` where a token has no value (outside an object's phrase, padding).

    Raises:
        ValueError: for a text outside the toy grammar (:func:`.world.parse_prompt`).
    """
    texts = preprocess_captions(list(texts))
    tokens = tokenizer(
        texts,
        max_length=max_length,
        padding="max_length",
        truncation=True,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    targets = {name: torch.full(tokens.input_ids.shape, IGNORE) for name in ATTRIBUTES}
    for row, text in enumerate(texts):
        meaning = parse_prompt(text)
        targets["count"][row][tokens.attention_mask[row].bool()] = len(meaning.objects) - 1
        for start, end, index in _object_spans(text, meaning):
            obj = meaning.objects[index]
            values = {"color": obj.color, "shape": obj.shape, "size": obj.size, "region": obj.region}
            inside = (tokens.offset_mapping[row, :, 0] >= start) & (tokens.offset_mapping[row, :, 1] <= end)
            inside &= tokens.offset_mapping[row, :, 1] > tokens.offset_mapping[row, :, 0]  # not padding or </s>
            for name, value in values.items():
                targets[name][row][inside] = ATTRIBUTES[name].index(value)
    return tokens.input_ids, tokens.attention_mask, targets


def _attribute_heads(d_model: int, seed: int) -> torch.nn.ModuleDict:
    with torch.random.fork_rng():  # seeded heads, the caller's random state untouched
        torch.manual_seed(seed)
        return torch.nn.ModuleDict({name: torch.nn.Linear(d_model, len(c)) for name, c in ATTRIBUTES.items()})


def _losses_and_accuracy(
    text_encoder, heads: torch.nn.ModuleDict, batch: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]
) -> tuple[torch.Tensor, dict[str, float]]:
    input_ids, mask, targets = batch
    hidden = text_encoder(input_ids, attention_mask=mask)[0]
    loss, accuracy = hidden.new_zeros(()), {}
    for name, head in heads.items():
        logits, target = head(hidden).flatten(0, 1), targets[name].flatten()
        loss = loss + F.cross_entropy(logits, target, ignore_index=IGNORE)
        valid = target != IGNORE
        accuracy[name] = float((logits[valid].argmax(-1) == target[valid]).float().mean())
    return loss, accuracy


def pretrain_text_encoder(
    tokenizer,
    text_encoder,
    captions: Sequence[str],
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    max_length: int = 64,
    held_out: Sequence[str] = (),
    seed: int = 0,
    log: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Teach ``text_encoder`` (in place) to read the toy grammar: see the module docstring.

    Args:
        tokenizer, text_encoder: the toy tokenizer and T5 encoder (:func:`.recipe.make_toy_text_encoder`).
        captions: dense captions of the toy grammar to train on.
        steps: optimizer steps (AdamW at a constant ``learning_rate``).
        held_out: captions to measure the result on (none: the last training batch).
        log: called every 100 steps with the step and the batch's loss and per-attribute accuracies.

    Returns:
        The per-attribute accuracy of linear heads trained with the encoder, on ``held_out``: how well each token
        of an object's mentions carries that object's attributes.

    Raises:
        ValueError: for ``steps`` below 1, no captions, or a caption outside the toy grammar.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1, got {steps}.")
    if not captions:
        raise ValueError("`captions` is empty: the text encoder needs captions to learn from.")
    input_ids, mask, targets = token_targets(tokenizer, captions, max_length)
    heads = _attribute_heads(text_encoder.config.d_model, seed)
    parameters = [*text_encoder.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    text_encoder.train()
    for step in range(1, steps + 1):
        rows = torch.randint(len(input_ids), (batch_size,), generator=generator)
        batch = (input_ids[rows], mask[rows], {name: target[rows] for name, target in targets.items()})
        loss, accuracy = _losses_and_accuracy(text_encoder, heads, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if log is not None and (step % 100 == 0 or step == steps):
            log(step, {"loss": loss.item(), **accuracy})
    text_encoder.eval()
    if held_out:
        batch = token_targets(tokenizer, held_out, max_length)
    with torch.no_grad():
        return _losses_and_accuracy(text_encoder, heads, batch)[1]

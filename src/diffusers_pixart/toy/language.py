"""Pretraining the toy T5 on the toy captions: the analogue of the language pretraining a real T5 brings.

PixArt-alpha conditions on T5-XXL, pretrained on web text: its token embeddings already say which words of a caption
describe one object ("a small *yellow* ring at the *bottom right*"), so the diffusion transformer only has to draw
what each phrase says where it says it. A randomly initialised toy T5 knows none of this: each output token is its
word plus a random mixture of its neighbours, and the transformer must learn the grammar from the images as well.

:func:`pretrain_text_encoder` teaches the toy encoder to read its language, from text alone, with a supervised parsing
objective: every token of an object's mentions (its noun phrase, its place, later references such as ``"the yellow
ring is right of ..."``, in any phrasing family of :func:`.world.describe`) predicts that object's colour, shape, size,
region and stated relations through linear heads on the encoder's output, and every token predicts the number of
objects. The heads are discarded; the encoder keeps the binding. As a real T5 has read phrasings that no image caption
uses, the recipe pretrains on text of every family, the held-out ones included; the images never see those.

:func:`make_toy_text_encoder` makes the toy T5 (a word-level tokenizer and a small random encoder);
:func:`vocabulary_warning` says which words of a prompt the toy model has never read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from ..text import preprocess_captions
from ..tiny import make_text_encoder, make_tokenizer
from .world import (
    COLORS,
    INVERSE_RELATIONS,
    NUMBER_WORDS,
    REGIONS,
    RELATIONS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    parse_mentions,
    vocabulary,
)

#: The attributes each token is taught to read, with their classes (size and region add "not stated").
ATTRIBUTES: dict[str, tuple[str | None, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": (*SIZES["plain"], None),
    "region": (*REGIONS, None),
    "count": NUMBER_WORDS,
}
#: The relation target of a token: for each relation and colour, whether the caption says its object is in that
#: relation to an object of that colour (stated either way round: "a red circle above a blue square" also says the
#: blue square is below a red object). Index ``RELATIONS.index(relation) * len(COLORS) + colour index``.
RELATION_TARGETS = len(RELATIONS) * len(COLORS)
#: Target of a token that has no value for an attribute (cross-entropy's ignore index).
IGNORE = -100


def make_toy_text_encoder(d_model: int = 64, num_layers: int = 2, num_heads: int = 4, seed: int = 0):
    """The toy world's T5: a word-level tokenizer of :func:`.world.vocabulary` and a small random encoder (the toy
    recipe pretrains it with :func:`pretrain_text_encoder`, then keeps it frozen).

    Returns:
        ``(tokenizer, text_encoder)``.
    """
    tokenizer = make_tokenizer(vocabulary())
    encoder = make_text_encoder(len(tokenizer), d_model=d_model, num_layers=num_layers, num_heads=num_heads, seed=seed)
    return tokenizer, encoder


def token_targets(
    tokenizer, texts: Sequence[str], max_length: int = 64
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Tokens of toy captions and, per token, the attributes it is taught to read.

    The texts are processed as the pipeline processes prompts (:func:`.text.preprocess_captions`).

    The tokens of each mention of an object (:func:`.world.parse_mentions`: its noun phrase with the attributes
    and place that go with it, later references like "the red circle") are taught that object's attributes and
    relations; the tokens of a plural ("two red circles") the colour and shape its objects share.

    Returns:
        ``input_ids`` and ``attention_mask`` (B, max_length), and for each of :data:`ATTRIBUTES` a (B, max_length)
        long tensor of class indices, :data:`IGNORE` where a token has no value (outside an object's mentions,
        padding); under ``"relations"`` a (B, max_length, :data:`RELATION_TARGETS`) float tensor of 0/1 targets,
        :data:`IGNORE` outside an object's mentions.

    Raises:
        ValueError: for a text outside the toy language (:func:`.world.parse_mentions`).
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
    targets["relations"] = torch.full((*tokens.input_ids.shape, RELATION_TARGETS), float(IGNORE))
    for row, text in enumerate(texts):
        meaning, mentions = parse_mentions(text)
        targets["count"][row][tokens.attention_mask[row].bool()] = len(meaning.objects) - 1
        related = torch.zeros(len(meaning.objects), RELATION_TARGETS)
        for rel in meaning.relations:
            for subject, relation, other in (
                (rel.subject, rel.relation, rel.object),
                (rel.object, INVERSE_RELATIONS[rel.relation], rel.subject),
            ):
                color = list(COLORS).index(meaning.objects[other].color)
                related[subject, RELATIONS.index(relation) * len(COLORS) + color] = 1.0
        for start, end, indices in mentions:
            objects = [meaning.objects[index] for index in indices]
            inside = (tokens.offset_mapping[row, :, 0] >= start) & (tokens.offset_mapping[row, :, 1] <= end)
            inside &= tokens.offset_mapping[row, :, 1] > tokens.offset_mapping[row, :, 0]  # not padding or </s>
            for name in ("color", "shape", "size", "region"):
                values = {getattr(obj, name) for obj in objects}
                if len(values) == 1:  # a plural's members may differ in size and place: those stay unset
                    targets[name][row][inside] = ATTRIBUTES[name].index(values.pop())
            if len(indices) == 1:
                targets["relations"][row][inside] = related[indices[0]]
    return tokens.input_ids, tokens.attention_mask, targets


def _attribute_heads(d_model: int, seed: int) -> torch.nn.ModuleDict:
    with torch.random.fork_rng():  # seeded heads, the caller's random state untouched
        torch.manual_seed(seed)
        sizes = {name: len(classes) for name, classes in ATTRIBUTES.items()} | {"relations": RELATION_TARGETS}
        return torch.nn.ModuleDict({name: torch.nn.Linear(d_model, size) for name, size in sizes.items()})


def _losses_and_accuracy(
    text_encoder, heads: torch.nn.ModuleDict, batch: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]
) -> tuple[torch.Tensor, dict[str, float]]:
    input_ids, mask, targets = batch
    hidden = text_encoder(input_ids, attention_mask=mask)[0]
    loss, accuracy = hidden.new_zeros(()), {}
    for name, head in heads.items():
        if name == "relations":  # several relations may hold at once: one binary target each
            logits, target = head(hidden).flatten(0, 1), targets[name].flatten(0, 1)
            valid = target[:, 0] != IGNORE
            if valid.any():
                loss = loss + F.binary_cross_entropy_with_logits(logits[valid], target[valid])
            accuracy[name] = float(((logits[valid] > 0) == (target[valid] > 0.5)).float().mean())
            continue
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
        tokenizer, text_encoder: the toy tokenizer and T5 encoder (:func:`make_toy_text_encoder`).
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


def vocabulary_warning(text: str, words: Iterable[str] | None = None) -> str | None:
    """A one-line warning naming the words of ``text`` that the toy model does not know, or ``None`` if it knows all.

    The toy model's tokenizer maps any other word to ``<unk>``, so a prompt like "a cat on a red circle" would be
    drawn as if the unknown words were not there. Example: ``"this model knows only shapes (circle, ...), colours
    (red, ...), sizes, places and counts; unknown words: cat"``. ``words`` are the words the model knows (default:
    :func:`.world.vocabulary`; an older toy model's tokenizer knows fewer, see :func:`tokenizer_words`).
    """
    if not isinstance(text, str):
        raise ValueError(f"A prompt must be a string, got {type(text).__name__}.")
    known = set(vocabulary() if words is None else words)
    unknown: list[str] = []
    for word in re.findall(r"[^\s.,;:!?\"'()]+", text.lower()):
        if word not in known and not all(part in known for part in word.split("-")) and word not in unknown:
            unknown.append(word)
    if not unknown:
        return None
    return (
        f"this model knows only shapes ({', '.join(SHAPES)}), colours ({', '.join(COLORS)}), sizes "
        f"({', '.join(SIZE_WORDS)}), places (top, bottom, left, right, center, corners), relations (left of, right "
        f"of, above, below) and counts (one to three); unknown words: {', '.join(unknown)}"
    )


def tokenizer_words(tokenizer) -> set[str]:
    """The words of a word-level toy tokenizer (:func:`.tiny.make_tokenizer`): its pieces that start a word."""
    return {piece[1:] for piece in tokenizer.get_vocab() if piece.startswith("\u2581") and len(piece) > 1}


def reads_toy_language(tokenizer) -> bool:
    """Whether ``tokenizer`` is a toy-world tokenizer (:func:`make_toy_text_encoder`, also an older one):
    its words are toy words only and include every shape and colour. Its model knows nothing outside them."""
    return {*SHAPES, *COLORS} <= tokenizer_words(tokenizer) <= set(vocabulary())

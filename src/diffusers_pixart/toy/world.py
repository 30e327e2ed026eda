"""A procedural image-caption world shaped like PixArt-alpha's training data (paper section 2.4).

Each image holds one to three flat objects (a shape in one of eight well separated colours, small or large) in the cells
of a 3x3 grid, on a neutral background. Each image comes with

- a **dense** caption (the SAM-LLaVA analogue: every object with its size, colour, shape and position, then the
  relations between them): ``"two objects. a large red circle at the top left and a small blue star in the center.
  the red circle is above the blue star."``;
- a **sparse** caption (the LAION analogue: one object, often without attributes, with rare filler words);
- a **class label**, colour x shape of the first object (the ImageNet analogue of stage 1, 40 classes).

Captions are written in a language with natural variety (:func:`describe`): the canonical dense caption is one of its
phrasing families; others put a relation in the main clause ("a red circle above a blue square"), attributes after
the shape ("a big circle that is red"), counts and plurals ("two red circles, one at the top ..."), synonyms
("middle", "upper-left corner", "big", "over"), short and long forms. Training data is captioned in the
:data:`TRAINING_FAMILIES`; the :data:`HELD_OUT_FAMILIES` ("a blue square with a green star to its left", "in the top
left corner, a red circle") caption no image, so that prompts in them measure whether a model reads the language.
:func:`parse_prompt` reads every family (and mixtures of them) back into a :class:`Meaning`. The vocabulary is closed
(:func:`vocabulary`), so a word-level tokenizer covers it.

Everything is deterministic for a seed, and image ``i`` of a data set does not depend on how many images are made.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..atomic import atomic_dir

#: The palette: saturated colours whose hues are at least 25 degrees apart, so that they stay apart under shading.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 50),
    "orange": (240, 125, 30),
    "yellow": (235, 225, 35),
    "green": (45, 175, 65),
    "cyan": (35, 195, 205),
    "blue": (45, 85, 225),
    "purple": (145, 65, 205),
    "pink": (235, 85, 175),
}
SHAPES = ("circle", "square", "triangle", "star", "ring")
#: Object side as a fraction of the image's shorter side, per style and size word.
SIZES: dict[str, dict[str, float]] = {
    "plain": {"small": 0.2, "large": 0.28},
    "aesthetic": {"small": 0.24, "large": 0.32},
}
STYLES = tuple(SIZES)
#: The 3x3 grid of regions, row by row, and the phrase that places an object in each.
REGIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
POSITION_PHRASES = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS = ("one", "two", "three")
MAX_OBJECTS = len(NUMBER_WORDS)
#: Inner radius of a ring and of a star's notches, as a fraction of the outer radius.
RING_HOLE = 0.6
STAR_INNER = 0.45
#: Neutral backgrounds (low chroma, so that no pixel of the background reads as a palette colour).
PLAIN_BACKGROUND = (128, 128, 128)
AESTHETIC_BACKGROUND = ((52, 56, 70), (120, 124, 138))  # top and bottom of a vertical gradient
#: Canny thresholds (low, high) for toy images. OpenCV's Canny reads grey levels, and the toy colours' are close to
#: the grey background's (green: 124 vs 128): the usual 100/200 finds the edges of yellow and blue objects only. The
#: renders are noise-free, so thresholds this low find every object's outline and nothing else.
TOY_CANNY_THRESHOLDS = (5, 10)
#: Sparse captions: synonyms a web caption may use for a shape, and a long tail of filler words (Zipf-distributed).
SHAPE_SYNONYMS = {
    "circle": ("circle", "dot", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "pyramid"),
    "star": ("star",),
    "ring": ("ring", "donut", "loop"),
}
TAIL_WORDS = (
    "image picture clipart icon vector illustration wallpaper logo sticker design art stock photo graphic free hd "
    "png download print poster minimal abstract geometric retro vintage cute simple modern flat pattern symbol emblem"
).split()
# Each data set stream and the held-out prompts draw from their own random streams.
_PROMPT_STREAM = 7919


@dataclass(frozen=True)
class ToyObject:
    """One object of a scene or prompt. ``size`` and ``region`` are ``None`` where a prompt leaves them open."""

    shape: str
    color: str
    size: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Relation:
    """``objects[subject]`` is ``relation`` (one of :data:`RELATIONS`) ``objects[object]``."""

    subject: int
    relation: str
    object: int


@dataclass(frozen=True)
class Meaning:
    """The structured meaning of a dense caption or prompt: its objects (distinct colours) and their relations."""

    objects: tuple[ToyObject, ...]
    relations: tuple[Relation, ...] = ()

    @property
    def text(self) -> str:
        """The dense caption of this meaning (see :func:`dense_caption`)."""
        return dense_caption(self)


@dataclass(frozen=True)
class Scene:
    """A meaning with concrete placement: each object's offset from its cell centre, in [-1, 1] of the free room."""

    meaning: Meaning
    offsets: tuple[tuple[float, float], ...] = field(default=())

    def __post_init__(self):
        if not self.offsets:
            object.__setattr__(self, "offsets", ((0.0, 0.0),) * len(self.meaning.objects))
        if len(self.offsets) != len(self.meaning.objects):
            raise ValueError(f"{len(self.offsets)} offsets for {len(self.meaning.objects)} objects.")


class ToyPrompt(NamedTuple):
    """A held-out prompt: its text (a dense caption) and its structured meaning."""

    text: str
    meaning: Meaning


# ----------------------------------------------------------------------------------------------------------------------
# Vocabulary and class labels


def vocabulary() -> list[str]:
    """Every word that captions of every phrasing family, prompts and sparse captions can use, sorted (punctuation
    excluded; hyphenated places like ``top-left`` are one word)."""
    phrases = [
        " ".join(word for key in _PHRASES for word in key if word.isalnum()),
        " ".join(wording for wordings in REGION_WORDINGS.values() for wording in wordings),
        "a an the and is object objects",
        " ".join(NUMBER_WORDS),
        " ".join(COLORS),
        " ".join(SHAPES),
        " ".join(word for size in SIZES.values() for word in size),
        " ".join(POSITION_PHRASES.values()),
        " ".join(RELATIONS),
        " ".join(word for synonyms in SHAPE_SYNONYMS.values() for word in synonyms),
        " ".join(TAIL_WORDS),
    ]
    return sorted({word for phrase in phrases for word in phrase.split()})


def class_names() -> list[str]:
    """Names of the 40 class labels, in label order: ``"red circle"``, ``"orange circle"``, ..."""
    return [f"{color} {shape}" for shape in SHAPES for color in COLORS]


def class_label(obj: ToyObject) -> int:
    """The class label of an object: ``SHAPES.index(shape) * len(COLORS) + colour index``."""
    return SHAPES.index(obj.shape) * len(COLORS) + list(COLORS).index(obj.color)


# ----------------------------------------------------------------------------------------------------------------------
# Captions and the prompt grammar


def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _object_phrase(obj: ToyObject) -> str:
    words = " ".join(w for w in (obj.size, obj.color, obj.shape) if w)
    phrase = _with_article(words)
    return f"{phrase} {POSITION_PHRASES[obj.region]}" if obj.region else phrase


def _object_mention(obj: ToyObject) -> str:
    """How a caption refers back to an object after listing it: ``"the red circle"``."""
    return f"the {obj.color} {obj.shape}"


def dense_caption(meaning: Meaning) -> str:
    """The dense caption of a meaning: a count sentence, the objects, then one sentence per relation.

    Example: ``"two objects. a large red circle at the top left and a small blue star in the center. the red circle
    is above the blue star."``
    """
    objects = meaning.objects
    count = f"{NUMBER_WORDS[len(objects) - 1]} object{'s' if len(objects) > 1 else ''}"
    phrases = [_object_phrase(obj) for obj in objects]
    listing = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    sentences = [count, listing]
    for rel in meaning.relations:
        subject, other = objects[rel.subject], objects[rel.object]
        sentences.append(f"{_object_mention(subject)} is {rel.relation} {_object_mention(other)}")
    return ". ".join(sentences) + "."


# ----------------------------------------------------------------------------------------------------------------------
# The prompt language: how people write prompts, read back by one parser

#: Size words and the size each one means.
SIZE_WORDS = {"small": "small", "little": "small", "large": "large", "big": "large"}
#: Counts as words and as numerals.
COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "1": 1, "2": 2, "3": 3}
#: Wordings of a place (after "at the", "in the" or "on the"), per region.
REGION_WORDINGS: dict[str, tuple[str, ...]] = {
    "top left": ("top left", "top-left corner", "upper left", "top left corner", "upper-left corner"),
    "top": ("top", "top side"),
    "top right": ("top right", "top-right corner", "upper right", "top right corner", "upper-right corner"),
    "left": ("left", "left side"),
    "center": ("center", "middle"),
    "right": ("right", "right side"),
    "bottom left": ("bottom left", "bottom-left corner", "lower left", "bottom left corner", "lower-left corner"),
    "bottom": ("bottom", "bottom side"),
    "bottom right": ("bottom right", "bottom-right corner", "lower right", "bottom right corner", "lower-right corner"),
}
PLACE_PREPOSITIONS = ("at", "in", "on")
#: Wordings of each relation between two objects ("a red circle *above* a blue square").
RELATION_WORDINGS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
#: Wordings of a relation to the object named before ("a blue square with a green star *to its left*").
PRONOUN_RELATION_WORDINGS: dict[str, tuple[str, ...]] = {
    "left of": ("to its left", "left of it"),
    "right of": ("to its right", "right of it"),
    "above": ("above it", "over it"),
    "below": ("below it", "under it"),
}
INVERSE_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
#: Nouns that announce a count ("three objects", "2 shapes").
COUNT_NOUNS = ("object", "objects", "shape", "shapes")
#: The phrasing families captions are written in (see :func:`describe`). Training captions use the
#: :data:`TRAINING_FAMILIES` only (with these weights); :data:`HELD_OUT_FAMILIES` never caption an image, so that a
#: model's score on them measures whether it reads the language rather than the templates it was trained on.
TRAINING_FAMILIES: dict[str, float] = {
    "canonical": 0.3,
    "listing": 0.15,
    "relation": 0.2,
    "clause": 0.1,
    "short": 0.1,
    "counted": 0.15,
}
HELD_OUT_FAMILIES = ("with", "fronted")
FAMILIES = (*TRAINING_FAMILIES, *HELD_OUT_FAMILIES)


class Mention(NamedTuple):
    """Characters ``start:end`` of a prompt that name the objects ``objects`` (indices into the meaning's objects):
    a noun phrase with its attributes and place, a later reference ("the red circle"), or a place said before it."""

    start: int
    end: int
    objects: tuple[int, ...]


class _Token(NamedTuple):
    kind: str
    value: object
    start: int
    end: int


#: A word or a punctuation mark of a lower-cased prompt (a hyphen separates words like a space).
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9-]")


def _phrase_table() -> dict[tuple[str, ...], tuple[str, object]]:
    """Every word sequence of the prompt language -> (token kind, value)."""
    table: dict[tuple[str, ...], tuple[str, object]] = {
        ("a",): ("article", None),
        ("an",): ("article", None),
        ("the",): ("the", None),
        ("with",): ("with", None),
        ("and",): ("and", None),
        (",",): ("comma", None),
        (":",): ("comma", None),
        (".",): ("stop", None),
        (";",): ("stop", None),
    }
    for words in ("is", "are", "there is", "there are"):
        table[tuple(words.split())] = ("be", None)
    for words in ("that is", "which is", "that are", "which are"):
        table[tuple(words.split())] = ("that", None)
    table.update({(word,): ("count", value) for word, value in COUNT_WORDS.items()})
    table.update({(noun,): ("count noun", None) for noun in COUNT_NOUNS})
    table.update({(color,): ("color", color) for color in COLORS})
    table.update({(word,): ("size", size) for word, size in SIZE_WORDS.items()})
    table.update({(shape,): ("shape", (shape, False)) for shape in SHAPES})
    table.update({(shape + "s",): ("shape", (shape, True)) for shape in SHAPES})
    for region, wordings in REGION_WORDINGS.items():
        for wording in wordings:
            for preposition in PLACE_PREPOSITIONS:
                table[(preposition, "the", *_WORD.findall(wording))] = ("place", region)
    for relation, wordings in RELATION_WORDINGS.items():
        for wording in wordings:
            table[tuple(wording.split())] = ("relation", relation)
    for relation, wordings in PRONOUN_RELATION_WORDINGS.items():
        for wording in wordings:
            table[tuple(wording.split())] = ("relation to it", relation)
    return table


_PHRASES = _phrase_table()
_LONGEST_PHRASE = max(len(key) for key in _PHRASES)


def _tokens(text: str) -> list[_Token]:
    """The prompt's phrases (longest match first), with their character spans in ``text`` (lower-cased)."""
    words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
    tokens, index = [], 0
    while index < len(words):
        for length in range(min(_LONGEST_PHRASE, len(words) - index), 0, -1):
            phrase = _PHRASES.get(tuple(word for word, _, _ in words[index : index + length]))
            if phrase is not None:
                tokens.append(_Token(phrase[0], phrase[1], words[index][1], words[index + length - 1][2]))
                index += length
                break
        else:
            word = words[index][0]
            raise ValueError(
                f"{word!r} in {text!r} is not a word of the toy language (an object phrase needs a colour in "
                f"{list(COLORS)} and a shape in {list(SHAPES)}; places like 'at the top left', relations like "
                f"'above'; see toy.world.vocabulary())."
            )
    return tokens


class _Reader:
    """Reads the tokens of one prompt into objects, relations and mentions (see :func:`parse_mentions`)."""

    def __init__(self, text: str, tokens: list[_Token]):
        self.text, self.tokens, self.index = text, tokens, 0
        self.objects: list[dict[str, str | None]] = []
        self.mentions: list[Mention] = []
        self.relations: set[Relation] = set()
        self.announced: int | None = None
        self.current: tuple[int, ...] = ()  # the objects the words now describe
        self.anchor: tuple[int, ...] = ()  # what "it" refers to: the object named before, or the head of "with"
        self.with_anchor = False
        self.pending: tuple[tuple[int, ...], str] | None = None  # a relation waiting for its object
        self.place_ahead: _Token | None = None  # a place said before its object ("in the middle, a red circle")
        self.members: list[int] = []  # members of a group not yet described ("two red circles, one at the top")

    def error(self, problem: str) -> ValueError:
        return ValueError(f"{self.text!r} is not a prompt of the toy language: {problem}.")

    def peek(self, offset: int = 0) -> _Token | None:
        index = self.index + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def read(self) -> None:
        while self.peek() is not None:
            token = self.peek()
            following = self.peek(1)
            if token.kind == "count" and following is not None and following.kind == "count noun":
                if self.announced is not None:
                    raise self.error("it announces a count twice")
                self.announced = token.value
                self.index += 2
            elif token.kind in ("article", "count", "the", "size", "color", "shape"):
                self.noun_phrase()
            elif token.kind == "place":
                self.index += 1
                self.place(token)
            elif token.kind == "relation":
                if not self.current:
                    raise self.error(f"{self.text[token.start : token.end]!r} follows no object")
                self.pending = (self.current, token.value)
                self.index += 1
            elif token.kind == "relation to it":
                if not self.current or not self.anchor:
                    raise self.error(f"{self.text[token.start : token.end]!r} has no object before it to refer to")
                self.relate(self.current, token.value, self.anchor)
                self.index += 1
            elif token.kind == "with":
                self.anchor, self.with_anchor = self.current, True
                self.index += 1
            elif token.kind == "stop":
                self.end_sentence()
                self.index += 1
            elif token.kind in ("and", "comma", "be"):
                self.index += 1
            else:  # "that" or a count noun out of place
                raise self.error(f"{self.text[token.start : token.end]!r} is out of place")
        self.end_sentence()

    def end_sentence(self) -> None:
        if self.pending is not None:
            raise self.error(f"the relation {self.pending[1]!r} names no second object")
        if self.place_ahead is not None:
            raise self.error(f"{self.text[self.place_ahead.start : self.place_ahead.end]!r} places no object")
        self.current, self.anchor, self.with_anchor = (), (), False

    def relate(self, subjects: tuple[int, ...], relation: str, objects: tuple[int, ...]) -> None:
        for subject in subjects:
            for other in objects:
                if subject == other:
                    raise self.error("it relates an object to itself")
                self.relations.add(Relation(subject, relation, other))

    def attributes(self, found: dict[str, str]) -> None:
        """Read sizes and colours (``and`` between them) into ``found``."""
        while (token := self.peek()) is not None and token.kind in ("size", "color", "and"):
            if token.kind != "and":
                if token.kind in found and found[token.kind] != token.value:
                    raise self.error(f"one object has two {token.kind}s, {found[token.kind]} and {token.value}")
                found[token.kind] = token.value
            self.index += 1

    def noun_phrase(self) -> None:
        start = self.peek().start
        determiner = self.peek() if self.peek().kind in ("article", "count", "the") else None
        self.index += determiner is not None
        found: dict[str, str] = {}
        self.attributes(found)
        shape, plural = None, False
        token = self.peek()
        if token is not None and token.kind == "shape":
            shape, plural = token.value
            self.index += 1
        elif token is not None and token.kind == "count" and token.value == 1 and determiner is not None:
            self.index += 1  # "a large one": a member of a group
            determiner = _Token("count", 1, determiner.start, determiner.end)
        elif not (determiner is not None and determiner.kind == "count" and determiner.value == 1 and not found):
            raise self.error(f"{self.text[start : self.peek(-1).end]!r} names no shape from {list(SHAPES)}")
        if self.peek() is not None and self.peek().kind == "that":  # "a big circle that is red"
            self.index += 1
            before = dict(found)
            self.attributes(found)
            if found == before:
                raise self.error("'that is' is not followed by a colour or a size")
        end = self.peek(-1).end
        if shape is None:
            indices = self.member(found)
        elif determiner is not None and determiner.kind == "the":
            indices = self.reference(shape, plural, found, start, end)
        else:
            number = determiner.value if determiner is not None and determiner.kind == "count" else 1
            if plural != (number > 1) or (plural and determiner is None):
                raise self.error(f"{self.text[start:end]!r} does not say how many (say 'two circles', 'a circle')")
            indices = tuple(range(len(self.objects), len(self.objects) + number))
            self.objects += [{"shape": shape, "size": None, "region": None, **found} for _ in range(number)]
            self.members = list(indices) if number > 1 else self.members
        self.mentions.append(Mention(start, end, indices))
        if not self.with_anchor:
            self.anchor = self.current
        self.current = indices
        if self.pending is not None:
            self.relate(self.pending[0], self.pending[1], indices)
            self.pending = None
        if self.place_ahead is not None:
            place, self.place_ahead = self.place_ahead, None
            self.place(place)

    def member(self, found: dict[str, str]) -> tuple[int, ...]:
        """``one`` or ``a large one`` after a group: the group's next member."""
        if not self.members:
            raise self.error("'one' follows no group like 'two red circles'")
        if "color" in found:
            raise self.error("a member of a group ('one') takes a size and a place, not a colour")
        index = self.members.pop(0)
        self.objects[index]["size"] = found.get("size")
        return (index,)

    def reference(self, shape: str, plural: bool, found: dict[str, str], start: int, end: int) -> tuple[int, ...]:
        """``the red circle``: the objects named before that match."""
        matches = tuple(
            index
            for index, obj in enumerate(self.objects)
            if obj["shape"] == shape and all(obj.get(name) == value for name, value in found.items())
        )
        if not matches:
            raise self.error(f"{self.text[start:end]!r} refers to an object the prompt does not name")
        if len(matches) > 1 and not plural:
            raise self.error(f"{self.text[start:end]!r} could mean {len(matches)} objects")
        return matches

    def place(self, token: _Token) -> None:
        if not self.current:  # a place said first: it belongs to the next object
            if self.place_ahead is not None:
                raise self.error("two places follow each other")
            self.place_ahead = token
            return
        if len(self.current) > 1:
            raise self.error("one place for several objects (say 'two red circles, one at the top and one ...')")
        obj = self.objects[self.current[0]]
        if obj["region"] is not None:
            raise self.error(f"one object is placed twice ({obj['region']} and {token.value})")
        obj["region"] = token.value
        self.mentions.append(Mention(token.start, token.end, self.current))

    def meaning(self) -> Meaning:
        if not self.objects:
            raise self.error("it names no object")
        if len(self.objects) > MAX_OBJECTS:
            raise self.error(f"it has {len(self.objects)} objects; the toy world holds at most {MAX_OBJECTS}")
        if self.announced is not None and self.announced != len(self.objects):
            raise self.error(f"it announces {self.announced} object(s) but names {len(self.objects)}")
        shapes_of_color: dict[str, str] = {}
        for obj in self.objects:
            if obj.get("color") is None:
                raise self.error(f"a {obj['shape']} has no colour from {list(COLORS)}")
            if shapes_of_color.setdefault(obj["color"], obj["shape"]) != obj["shape"]:
                raise self.error(
                    f"it repeats the colour {obj['color']} on another shape (objects that share a colour are "
                    "copies of one shape, like 'two red circles')"
                )
        regions = [obj["region"] for obj in self.objects if obj["region"]]
        if len(set(regions)) != len(regions):
            raise self.error("it puts two objects in the same region")
        objects = tuple(ToyObject(obj["shape"], obj["color"], obj["size"], obj["region"]) for obj in self.objects)
        relations = tuple(sorted(self.relations, key=lambda r: (r.subject, r.object, r.relation)))
        return Meaning(objects=objects, relations=relations)


def parse_mentions(text: str) -> tuple[Meaning, list[Mention]]:
    """Read a prompt of the toy language into its :class:`Meaning`, with where in ``text`` each object is named.

    The language (any family of :func:`describe`, and mixtures of them): objects as noun phrases with their
    attributes before or after the shape, in any order or left out ("red circle", "a big circle that is red",
    "two red circles"); places after or before their object ("in the top-left corner", "in the middle"); relations
    as the main clause ("a red circle above a blue square"), as a sentence ("the red circle is above the blue
    square") or to the object named before ("a blue square with a green star to its left"); an optional count
    ("three objects.", "2 shapes:"). Counts are words or numerals (one to three).

    Returns:
        The meaning (objects in the order they are named, relations sorted by subject and object) and the mentions,
        whose spans index the lower-cased ``text``.

    Raises:
        ValueError: for words outside the language, text it cannot read, more than three objects, a repeated colour
            on another shape or a repeated region, a count that does not match the objects, or a reference to an
            object the prompt does not name.
    """
    if not isinstance(text, str):
        raise ValueError(f"A prompt must be a string, got {type(text).__name__}.")
    lowered = text.lower()
    if not lowered.strip():
        raise ValueError(f"{text!r} is not a prompt of the toy language: it is empty.")
    reader = _Reader(lowered, _tokens(lowered))
    reader.read()
    return reader.meaning(), reader.mentions


def parse_prompt(text: str) -> Meaning:
    """Read a prompt of the toy language back into its :class:`Meaning` (see :func:`parse_mentions`).

    Raises:
        ValueError: for text outside the language (see :func:`parse_mentions`).
    """
    return parse_mentions(text)[0]


# ----------------------------------------------------------------------------------------------------------------------
# Phrasing families: the same scene written the ways people write


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _place(region: str, rng: np.random.Generator) -> str:
    """A wording of a place: ``"in the upper-left corner"``, ``"on the left"``, ``"in the middle"``."""
    prepositions = {"left": "on", "right": "on", "top": "at", "bottom": "at", "center": "in"}.get(region, "in at")
    preposition = _pick(rng, prepositions.split())
    return f"{preposition} the {_pick(rng, REGION_WORDINGS[region])}"


def _size_word(size: str, rng: np.random.Generator) -> str:
    return _pick(rng, [word for word, meaning in SIZE_WORDS.items() if meaning == size])


def _noun(obj: ToyObject, rng: np.random.Generator, article: bool = True) -> str:
    """``"a big red circle"``, ``"red circle"``: the object's size (when stated), colour and shape."""
    words = " ".join(w for w in (obj.size and _size_word(obj.size, rng), obj.color, obj.shape) if w)
    return _with_article(words) if article else words


def _reference(obj: ToyObject) -> str:
    return f"the {obj.color} {obj.shape}"


def _listed(phrases: Sequence[str], rng: np.random.Generator) -> str:
    """``"A, B and C"`` (or ``"A, B, and C"``, ``"A, B, C"``)."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + _pick(rng, (" and ", ", and ", ", ")) + phrases[-1]


def _count(number: int, rng: np.random.Generator) -> str:
    return _pick(rng, [word for word, value in COUNT_WORDS.items() if value == number])


class _Caption:
    """The objects and relations a caption states, in the order it names the objects."""

    def __init__(self, meaning: Meaning, rng: np.random.Generator):
        self.scene, self.rng = meaning.objects, rng
        self.objects: list[ToyObject] = []
        self.relations: list[Relation] = []
        self.index: dict[int, int] = {}  # scene index -> caption index
        keys = [(obj.color, obj.shape) for obj in self.scene]
        #: Objects a reference or a relation can single out (not copies of one another, like two red circles).
        self.unique = [i for i, key in enumerate(keys) if keys.count(key) == 1]

    def name(self, scene_index: int, size: bool = True, region: bool = False) -> ToyObject:
        """State a scene object (with its size and region when asked); returns the stated object."""
        obj = self.scene[scene_index]
        stated = ToyObject(obj.shape, obj.color, obj.size if size else None, obj.region if region else None)
        self.index[scene_index] = len(self.objects)
        self.objects.append(stated)
        return stated

    def relation(self, subject: int, other: int) -> str:
        """State a relation that holds from scene object ``subject`` to ``other`` (both named); returns it."""
        relation = _pick(self.rng, relations_between(self.scene[subject], self.scene[other]))
        self.relations.append(Relation(self.index[subject], relation, self.index[other]))
        return relation

    def order(self) -> list[int]:
        return [int(i) for i in self.rng.permutation(len(self.scene))]

    def meaning(self) -> Meaning:
        relations = tuple(sorted(set(self.relations), key=lambda r: (r.subject, r.object, r.relation)))
        return Meaning(tuple(self.objects), relations)


def _listing_family(caption: _Caption) -> str:
    """``"2 shapes. a red circle in the upper-left corner and a blue star in the middle. the red circle is over the
    blue star."``: every object with its place (sizes in half the captions), some relations as sentences."""
    rng, sized = caption.rng, caption.rng.random() < 0.5
    named = [(i, caption.name(i, size=sized, region=True)) for i in caption.order()]
    sentences = [_listed([f"{_noun(obj, rng)} {_place(obj.region, rng)}" for _, obj in named], rng)]
    if rng.random() < 0.4:
        count = len(named)
        sentences.insert(0, f"{_count(count, rng)} {_pick(rng, ('object', 'shape'))}{'s' if count > 1 else ''}")
    pairs = [(a, b) for a, _ in named for b, _ in named if a < b and {a, b} <= set(caption.unique)]
    for a, b in pairs:
        if rng.random() < 0.5:
            a, b = (a, b) if rng.random() < 0.5 else (b, a)
            relation = caption.relation(a, b)
            wording = _pick(rng, RELATION_WORDINGS[relation])
            sentences.append(f"{_reference(caption.scene[a])} is {wording} {_reference(caption.scene[b])}")
    return ". ".join(sentences) + "."


def _relation_family(caption: _Caption) -> str:
    """``"a red circle above a blue square, and a green star to the left of the blue square"``: a relation as the
    main clause; objects that cannot be singled out are placed instead."""
    rng = caption.rng
    unique = [i for i in caption.order() if i in caption.unique]
    if len(unique) < 2:
        return _listed(
            [
                f"{_noun(caption.name(i, region=True), rng)} {_place(caption.scene[i].region, rng)}"
                for i in caption.order()
            ],
            rng,
        )
    first, second = unique[:2]
    named = [caption.name(first, size=rng.random() < 0.5), caption.name(second, size=rng.random() < 0.5)]
    relation = caption.relation(first, second)
    clauses = [f"{_noun(named[0], rng)} {_pick(rng, RELATION_WORDINGS[relation])} {_noun(named[1], rng)}"]
    for other in (i for i in range(len(caption.scene)) if i not in (first, second)):
        if other in caption.unique and rng.random() < 0.6:
            stated = caption.name(other, size=False)
            target = (first, second)[int(rng.integers(2))]
            relation = caption.relation(other, target)
            wording = _pick(rng, RELATION_WORDINGS[relation])
            clauses.append(f"{_noun(stated, rng)} {wording} {_reference(caption.scene[target])}")
        else:
            stated = caption.name(other, size=False, region=True)
            clauses.append(f"{_noun(stated, rng)} {_place(stated.region, rng)}")
    return _listed(clauses, rng)


def _clause_family(caption: _Caption) -> str:
    """``"there is a big circle that is red at the top left. a star that is blue and small."``: attributes after
    the shape, in any order."""
    rng, sentences = caption.rng, []
    for i in caption.order():
        placed = rng.random() < 0.7
        obj = caption.name(i, size=rng.random() < 0.7, region=placed)
        size = obj.size and _size_word(obj.size, rng)
        if size and rng.random() < 0.5:
            phrase = f"a {size} {obj.shape} that is {obj.color}"
        else:
            attributes = [obj.color] + ([size] if size else [])
            phrase = f"a {obj.shape} that is {' and '.join(attributes[:: 1 if rng.random() < 0.5 else -1])}"
        place = f" {_place(obj.region, rng)}" if placed else ""
        sentences.append(f"{'there is ' if rng.random() < 0.5 else ''}{phrase}{place}")
    return ". ".join(sentences) + "."


def _short_family(caption: _Caption) -> str:
    """``"red circle, blue star at the top"``: colour and shape, now and then a place."""
    rng, phrases = caption.rng, []
    for i in caption.order():
        placed = rng.random() < 0.4
        obj = caption.name(i, size=False, region=placed)
        phrases.append(_noun(obj, rng, article=False) + (f" {_place(obj.region, rng)}" if placed else ""))
    return _pick(rng, (", ", " and ")).join(phrases)


def _counted_family(caption: _Caption) -> str:
    """``"3 objects: two red circles, one at the top and a large one on the left, and one blue star"``: counts as
    words or numerals, copies of one shape as a plural."""
    rng, groups = caption.rng, {}
    for i in caption.order():
        groups.setdefault((caption.scene[i].color, caption.scene[i].shape), []).append(i)
    phrases = []
    for (color, shape), members in groups.items():
        count = _count(len(members), rng) if len(members) > 1 or rng.random() < 0.5 else "a"
        if len(members) == 1:
            obj = caption.name(members[0], size=rng.random() < 0.5, region=rng.random() < 0.5)
            phrase = f"{count} {_noun(obj, rng, article=False)}" if count != "a" else _noun(obj, rng)
            phrases.append(phrase + (f" {_place(obj.region, rng)}" if obj.region else ""))
            continue
        described = rng.random() < 0.6
        ones = []
        for i in members:
            obj = caption.name(i, size=described and rng.random() < 0.5, region=described)
            if described:
                one = f"a {_size_word(obj.size, rng)} one" if obj.size else "one"
                ones.append(f"{one} {_place(obj.region, rng)}")
        phrases.append(f"{count} {color} {shape}s" + (", " + " and ".join(ones) if ones else ""))
    text = _pick(rng, (", ", " and ")).join(phrases) if len(phrases) > 1 else phrases[0]
    if rng.random() < 0.5:
        noun = _pick(rng, ("object", "shape")) + ("s" if len(caption.scene) > 1 else "")
        text = f"{_count(len(caption.scene), rng)} {noun}: {text}"
    return text


def _with_family(caption: _Caption) -> str:
    """``"a blue square with a green star to its left and a red ring above it"`` (held out of training)."""
    rng = caption.rng
    order = caption.order()
    head = order[0]
    alone = len(order) == 1 or rng.random() < 0.3
    named = caption.name(head, size=rng.random() < 0.5, region=alone)
    text = _noun(named, rng) + (f" {_place(named.region, rng)}" if alone else "")
    others = []
    for other in order[1:]:
        if {head, other} <= set(caption.unique):
            stated = caption.name(other, size=rng.random() < 0.5)
            others.append(
                f"{_noun(stated, rng)} {_pick(rng, PRONOUN_RELATION_WORDINGS[caption.relation(other, head)])}"
            )
        else:
            stated = caption.name(other, size=rng.random() < 0.5, region=True)
            others.append(f"{_noun(stated, rng)} {_place(stated.region, rng)}")
    return f"{text} with {' and '.join(others)}" if others else text


def _fronted_family(caption: _Caption) -> str:
    """``"in the top-left corner, a large red circle; in the middle, a small blue star."`` (held out of training):
    each place before its object."""
    rng = caption.rng
    sized = rng.random() < 0.5
    items = []
    for i in caption.order():
        obj = caption.name(i, size=sized, region=True)
        items.append(f"{_place(obj.region, rng)}, {_noun(obj, rng)}")
    return _pick(rng, ("; ", ". ")).join(items) + "."


_FAMILY_WRITERS = {
    "listing": _listing_family,
    "relation": _relation_family,
    "clause": _clause_family,
    "short": _short_family,
    "counted": _counted_family,
    "with": _with_family,
    "fronted": _fronted_family,
}


def describe(meaning: Meaning, family: str, rng: np.random.Generator) -> ToyPrompt:
    """A caption of a scene's meaning written in a phrasing family, with the meaning it states.

    Families (:data:`FAMILIES`): ``canonical`` (the dense caption, :func:`dense_caption`: everything), ``listing``,
    ``relation``, ``clause``, ``short``, ``counted`` (seen in training, :data:`TRAINING_FAMILIES`), ``with`` and
    ``fronted`` (held out, :data:`HELD_OUT_FAMILIES`); each one's docstring shows an example. A family states what
    it words (some leave out sizes, places or relations), and never states anything the scene does not hold.

    Args:
        meaning: a scene's meaning, every object with its size and region (:func:`sample_scene`).
        family: one of :data:`FAMILIES`.
        rng: the random choices of wording.

    Returns:
        The caption and the meaning it states: :func:`parse_prompt` of the text equals it.
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown phrasing family {family!r}; expected one of {list(FAMILIES)}.")
    if any(obj.size is None or obj.region is None for obj in meaning.objects):
        raise ValueError("describe() writes scenes: every object needs its size and region.")
    if family == "canonical":
        return ToyPrompt(dense_caption(meaning), meaning)
    caption = _Caption(meaning, rng)
    return ToyPrompt(_FAMILY_WRITERS[family](caption), caption.meaning())


def sparse_caption(meaning: Meaning, rng: np.random.Generator) -> str:
    """A LAION-like caption: the first object only, often without attributes, padded with rare filler words."""
    obj = meaning.objects[0]
    noun = str(rng.choice(SHAPE_SYNONYMS[obj.shape]))
    words = [obj.color, noun] if rng.random() < 0.4 else [noun]
    zipf = 1.0 / np.arange(1, len(TAIL_WORDS) + 1)
    tail = rng.choice(TAIL_WORDS, size=int(rng.integers(0, 4)), replace=False, p=zipf / zipf.sum())
    for word in tail:
        words.insert(int(rng.integers(0, len(words) + 1)), str(word))
    return " ".join(words)


# ----------------------------------------------------------------------------------------------------------------------
# Sampling scenes


def _grid(region: str) -> tuple[int, int]:
    """(row, column) of a region in the 3x3 grid."""
    return divmod(REGIONS.index(region), 3)


def relations_between(a: ToyObject, b: ToyObject) -> list[str]:
    """The relations that hold from ``a`` to ``b`` given their regions: ``a`` is RELATION ``b``."""
    (row_a, col_a), (row_b, col_b) = _grid(a.region), _grid(b.region)
    relations = []
    if col_a != col_b:
        relations.append("left of" if col_a < col_b else "right of")
    if row_a != row_b:
        relations.append("above" if row_a < row_b else "below")
    return relations


def sample_scene(
    rng: np.random.Generator, min_objects: int = 1, max_objects: int = MAX_OBJECTS, group_probability: float = 0.0
) -> Scene:
    """A random scene: distinct colours and regions, large objects first, one relation per pair of objects.

    With ``group_probability``, a scene of two or more objects makes its last object a copy of the first's colour
    and shape ("two red circles"); the copies take part in no relation (a caption could not tell them apart).
    """
    if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"Need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {min_objects}, {max_objects}.")
    if not 0.0 <= group_probability <= 1.0:
        raise ValueError(f"`group_probability` must be in [0, 1], got {group_probability}.")
    count = int(rng.integers(min_objects, max_objects + 1))
    colors = rng.choice(list(COLORS), size=count, replace=False)
    regions = rng.choice(REGIONS, size=count, replace=False)
    shapes = rng.choice(SHAPES, size=count)
    sizes = rng.choice(list(SIZES["plain"]), size=count)
    objects = [ToyObject(str(s), str(c), str(z), str(r)) for s, c, z, r in zip(shapes, colors, sizes, regions)]
    objects.sort(key=lambda obj: obj.size != "large")
    if group_probability and count > 1 and rng.random() < group_probability:
        last = objects[-1]
        objects[-1] = ToyObject(objects[0].shape, objects[0].color, last.size, last.region)
    copies = {i for i, obj in enumerate(objects) if (obj.color, obj.shape) == (objects[0].color, objects[0].shape)}
    copies = copies if len(copies) > 1 else set()
    relations = tuple(
        Relation(i, str(rng.choice(relations_between(objects[i], objects[j]))), j)
        for i in range(count)
        for j in range(i + 1, count)
        if not {i, j} & copies
    )
    offsets = tuple((float(x), float(y)) for x, y in rng.uniform(-1.0, 1.0, size=(count, 2)))
    return Scene(Meaning(tuple(objects), relations), offsets)


def sample_prompts(
    n: int,
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = MAX_OBJECTS,
    family: str = "canonical",
    group_probability: float = 0.0,
) -> list[ToyPrompt]:
    """``n`` held-out prompts (scenes from a random stream no data set uses) written in a phrasing ``family``
    (:func:`describe`), with the meanings they state. Prompt ``i`` of every family describes the same scene."""
    if n < 1:
        raise ValueError(f"`n` must be at least 1, got {n}.")
    prompts = []
    for index in range(n):
        rng = np.random.default_rng([seed, index, _PROMPT_STREAM])
        meaning = sample_scene(rng, min_objects, max_objects, group_probability).meaning
        prompts.append(describe(meaning, family, rng))
    return prompts


def record_meaning(record: Mapping) -> Meaning:
    """The scene meaning of a data set's metadata record (its ``objects`` and ``relations``: :func:`make_dataset`)."""
    objects = tuple(ToyObject(o["shape"], o["color"], o["size"], o["region"]) for o in record["objects"])
    relations = tuple(Relation(r["subject"], r["relation"], r["object"]) for r in record["relations"])
    return Meaning(objects, relations)


# ----------------------------------------------------------------------------------------------------------------------
# Rendering


def _star_points(box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """The ten corners of a five-pointed star (point up), stretched to fill ``box`` exactly."""
    angles = [math.pi / 2 + k * math.pi / 5 for k in range(10)]
    radii = [1.0 if k % 2 == 0 else STAR_INNER for k in range(10)]
    xs = [r * math.cos(a) for r, a in zip(radii, angles)]
    ys = [-r * math.sin(a) for r, a in zip(radii, angles)]
    x0, y0, x1, y1 = box
    sx, sy = (x1 - x0) / (max(xs) - min(xs)), (y1 - y0) / (max(ys) - min(ys))
    return [(x0 + (x - min(xs)) * sx, y0 + (y - min(ys)) * sy) for x, y in zip(xs, ys)]


def shape_coverage(
    shape: str, box: tuple[float, float, float, float], height: int, width: int, supersample: int = 4
) -> np.ndarray:
    """Anti-aliased coverage of ``shape`` filling ``box`` = (x0, y0, x1, y1) in pixels, on a ``height x width`` canvas.

    Returns:
        float32 array (height, width) in [0, 1]: the fraction of each pixel the shape covers.
    """
    if shape not in SHAPES:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {list(SHAPES)}.")
    canvas = Image.new("L", (width * supersample, height * supersample), 0)
    draw = ImageDraw.Draw(canvas)
    # PIL fills both end pixels: a shape spanning [x0, x1) ends at the fine pixel x1 - 1.
    x0, y0, x1, y1 = box[0] * supersample, box[1] * supersample, box[2] * supersample - 1, box[3] * supersample - 1
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=255)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=255)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=255)
    elif shape == "star":
        draw.polygon(_star_points((x0, y0, x1, y1)), fill=255)
    else:  # ring
        draw.ellipse((x0, y0, x1, y1), fill=255)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * RING_HOLE, (y1 - y0) / 2 * RING_HOLE
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=0)
    small = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def object_box(
    obj: ToyObject, offset: tuple[float, float], height: int, width: int, style: str = "plain"
) -> tuple[float, float, float, float]:
    """The square box (x0, y0, x1, y1) in pixels that an object of a scene fills on a ``height x width`` image."""
    if obj.size is None or obj.region is None:
        raise ValueError(f"{obj} has no size or no region: only fully specified objects can be drawn.")
    side = SIZES[style][obj.size] * min(height, width)
    row, col = _grid(obj.region)
    cell_w, cell_h = width / 3, height / 3
    # Move the object at most 80% of the free room of its cell, so that neighbours never touch.
    cx = (col + 0.5) * cell_w + offset[0] * 0.8 * (cell_w - side) / 2
    cy = (row + 0.5) * cell_h + offset[1] * 0.8 * (cell_h - side) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _background(height: int, width: int, style: str) -> np.ndarray:
    if style == "plain":
        return np.broadcast_to(np.array(PLAIN_BACKGROUND, np.float32), (height, width, 3)).copy()
    top, bottom = (np.array(c, np.float32) for c in AESTHETIC_BACKGROUND)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top + t * (bottom - top), (height, width, 3)).copy()


def render(
    scene: Scene | Meaning,
    height: int = 64,
    width: int | None = None,
    style: str = "plain",
    palette: Mapping[str, tuple[int, int, int]] | None = None,
) -> Image.Image:
    """Draw a scene (or a fully specified meaning, objects centred in their cells) as an RGB image.

    ``style="aesthetic"`` (stage 3) uses larger objects, a gradient background, shading and soft shadows.
    ``palette`` maps the objects' colour names to RGB (default :data:`COLORS`): a wider one draws colours the toy
    world never shows (e.g. a DreamBooth concept, :mod:`.customization`).
    """
    palette = COLORS if palette is None else palette
    width = height if width is None else width
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; expected one of {list(STYLES)}.")
    if min(height, width) < 16:
        raise ValueError(f"Images of the toy world are at least 16x16 pixels, got {height}x{width}.")
    scene = scene if isinstance(scene, Scene) else Scene(scene)
    image = _background(height, width, style)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for obj, offset in zip(scene.meaning.objects, scene.offsets):
        box = object_box(obj, offset, height, width, style)
        alpha = shape_coverage(obj.shape, box, height, width)[..., None]
        color = np.array(palette[obj.color], np.float32)
        if style == "aesthetic":
            side = box[2] - box[0]
            shadow = Image.fromarray(np.uint8(alpha[..., 0] * 255)).filter(ImageFilter.GaussianBlur(side * 0.08))
            shift = max(1, round(side * 0.06))
            shadow = np.asarray(shadow, np.float32) / 255.0
            image[shift:, shift:] *= 1.0 - 0.45 * shadow[:-shift, :-shift, None]  # cast down and to the right
            # Light from the top left: brighter there, darker at the bottom right (a scaling keeps the hue).
            t = ((xs - box[0]) + (ys - box[1])) / (2 * side)
            color = color * np.clip(1.15 - 0.35 * t, 0.7, 1.15)[..., None]
        image = image * (1.0 - alpha) + np.clip(color, 0, 255) * alpha
    return Image.fromarray(np.uint8(np.clip(image, 0, 255).round()), mode="RGB")


# ----------------------------------------------------------------------------------------------------------------------
# Data sets


def bucket_sizes(resolution: int, aspect_ratios: Sequence[float | Sequence[int]] | None) -> list[tuple[int, int]]:
    """(height, width) pixel sizes for ``aspect_ratios``: (height, width) pairs as given, or height/width ratios.

    A ratio becomes the size of about ``resolution**2`` pixels with sides rounded to multiples of 16 (what an 8x VAE
    and a patch size of 2 need). ``None`` gives the square ``resolution``.
    """
    if resolution < 16:
        raise ValueError(f"`resolution` must be at least 16, got {resolution}.")
    if aspect_ratios is None:
        return [(resolution, resolution)]
    if len(aspect_ratios) == 0:
        raise ValueError("`aspect_ratios` is empty; pass None for square images.")
    sizes = []
    for ratio in aspect_ratios:
        if isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
            if ratio <= 0:
                raise ValueError(f"Aspect ratio {ratio} is not positive.")
            root = math.sqrt(ratio)
            sizes.append((max(16, round(resolution * root / 16) * 16), max(16, round(resolution / root / 16) * 16)))
        elif len(ratio) == 2 and all(isinstance(v, int) and v >= 16 for v in ratio):
            sizes.append((ratio[0], ratio[1]))
        else:
            raise ValueError(f"Aspect ratio {ratio!r} is neither a positive number nor a (height, width) pair >= 16.")
    return sizes


def make_example(
    seed: int,
    index: int,
    sizes: Sequence[tuple[int, int]] = ((64, 64),),
    style: str = "plain",
    min_objects: int = 1,
    max_objects: int = MAX_OBJECTS,
    phrasing: Mapping[str, float] | None = None,
    group_probability: float = 0.0,
) -> tuple[Image.Image, dict]:
    """Example ``index`` of the data set of ``seed``: its image and its metadata record (without ``file_name``).

    ``phrasing`` maps phrasing families to their weights (e.g. :data:`TRAINING_FAMILIES`): the caption ``text`` is
    written in one drawn from them (``None``: the canonical dense caption); ``group_probability`` goes to
    :func:`sample_scene`.
    """
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, min_objects, max_objects, group_probability)
    height, width = sizes[int(rng.integers(len(sizes)))]
    meaning = scene.meaning
    sparse_text = sparse_caption(meaning, rng)
    family = "canonical"
    if phrasing is not None:
        unknown = set(phrasing) - set(FAMILIES)
        if unknown or not phrasing or min(phrasing.values()) < 0 or sum(phrasing.values()) <= 0:
            raise ValueError(f"`phrasing` must map families of {list(FAMILIES)} to weights, got {dict(phrasing)}.")
        weights = np.array(list(phrasing.values()), np.float64)
        family = list(phrasing)[int(rng.choice(len(weights), p=weights / weights.sum()))]
    record = {
        "text": describe(meaning, family, rng).text,
        "caption_family": family,
        "sparse_text": sparse_text,
        "label": class_label(meaning.objects[0]),
        "objects": [
            {
                "shape": obj.shape,
                "color": obj.color,
                "size": obj.size,
                "region": obj.region,
                "box": [round(v, 2) for v in object_box(obj, offset, height, width, style)],
            }
            for obj, offset in zip(meaning.objects, scene.offsets)
        ],
        "relations": [{"subject": r.subject, "relation": r.relation, "object": r.object} for r in meaning.relations],
        "original_height": height,
        "original_width": width,
        "style": style,
    }
    return render(scene, height, width, style), record


def make_dataset(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    resolution: int = 64,
    aspect_ratios: Sequence[float | Sequence[int]] | None = None,
    style: str = "plain",
    min_objects: int = 1,
    max_objects: int = MAX_OBJECTS,
    phrasing: Mapping[str, float] | None = None,
    group_probability: float = 0.0,
) -> Path:
    """Write ``n`` examples as a Hugging Face ``imagefolder``: PNG images and ``metadata.jsonl``.

    Each metadata line has ``file_name``, ``text`` (the caption, in a family drawn from ``phrasing``; ``None``: the
    dense caption), ``caption_family``, ``sparse_text``, ``label`` (see
    :func:`class_names`), ``objects`` (shape, color, size, region, pixel box), ``relations``, ``original_height``,
    ``original_width`` and ``style``. ``aspect_ratios`` (see :func:`bucket_sizes`) gives each image a size drawn from
    the list. The folder is written in a temporary folder and renamed, so it is never half-written.

    Returns:
        The folder, readable with ``datasets.load_dataset("imagefolder", data_dir=out_dir)``.

    Raises:
        FileExistsError: when ``out_dir`` exists and is not empty.
    """
    if n < 1:
        raise ValueError(f"`n` must be at least 1, got {n}.")
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; expected one of {list(STYLES)}.")
    sizes = bucket_sizes(resolution, aspect_ratios)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty.")
    digits = max(5, len(str(n - 1)))
    with atomic_dir(out_dir) as tmp, open(tmp / "metadata.jsonl", "w", encoding="utf-8") as metadata:
        for index in range(n):
            image, record = make_example(
                seed, index, sizes, style, min_objects, max_objects, phrasing, group_probability
            )
            file_name = f"{index:0{digits}d}.png"
            image.save(tmp / file_name)
            metadata.write(json.dumps({"file_name": file_name, **record}) + "\n")
    return out_dir

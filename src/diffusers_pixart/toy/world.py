"""A procedural image-caption world shaped like PixArt-alpha's training data (paper section 2.4).

Each image holds one to three flat objects (a shape in one of eight well separated colours, small or large) in the cells
of a 3x3 grid, on a neutral background. Each image comes with

- a **dense** caption (the SAM-LLaVA analogue: every object with its size, colour, shape and position, then the
  relations between them): ``"two objects. a large red circle at the top left and a small blue star in the center.
  the red circle is above the blue star."``;
- a **sparse** caption (the LAION analogue: one object, often without attributes, with rare filler words);
- a **class label**, colour x shape of the first object (the ImageNet analogue of stage 1, 40 classes).

Dense captions and the held-out prompts of :func:`sample_prompts` share one grammar, which :func:`parse_prompt` reads
back into a :class:`Meaning`. The vocabulary is closed (:func:`vocabulary`), so a word-level tokenizer covers it.
Everything is deterministic for a seed, and image ``i`` of a data set does not depend on how many images are made.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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
    """Every word that dense captions, prompts and sparse captions can use, sorted (punctuation excluded)."""
    phrases = [
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


_COUNT_RE = re.compile(rf"^({'|'.join(NUMBER_WORDS)}) objects?$")
_RELATION_RE = re.compile(rf"^the (\w+) (\w+) is ({'|'.join(RELATIONS)}) the (\w+) (\w+)$")
_REGION_OF_PHRASE = {phrase: region for region, phrase in POSITION_PHRASES.items()}


def _parse_object(phrase: str) -> ToyObject:
    words = phrase.split()
    grammar = "'a [small|large] COLOR SHAPE [POSITION]'"
    if len(words) < 3 or words[0] not in ("a", "an"):
        raise ValueError(f"{phrase!r} is not an object phrase of the toy grammar {grammar}.")
    rest = words[1:]
    size = rest.pop(0) if rest[0] in SIZES["plain"] else None
    if len(rest) < 2 or rest[0] not in COLORS or rest[1] not in SHAPES:
        raise ValueError(
            f"{phrase!r} is not an object phrase of the toy grammar {grammar} with a colour in {list(COLORS)} "
            f"and a shape in {list(SHAPES)}."
        )
    position = " ".join(rest[2:])
    if position and position not in _REGION_OF_PHRASE:
        raise ValueError(f"{position!r} in {phrase!r} is not a position; expected one of {list(_REGION_OF_PHRASE)}.")
    return ToyObject(shape=rest[1], color=rest[0], size=size, region=_REGION_OF_PHRASE.get(position))


def parse_prompt(text: str) -> Meaning:
    """Read a dense caption or prompt of the toy grammar back into its :class:`Meaning`.

    Grammar (sentences end with ``.``; the count sentence, sizes, positions and relations are optional)::

        [NUMBER object(s).] OBJECT (, OBJECT)* [and OBJECT]. (the COLOR SHAPE is RELATION the COLOR SHAPE.)*
        OBJECT := a|an [small|large] COLOR SHAPE [at the top left | on the left | in the center | ...]

    Raises:
        ValueError: for text outside the grammar, more than three objects, repeated colours or regions, a count that
            does not match the objects, or a relation naming an object that is not in the prompt.
    """
    if not isinstance(text, str):
        raise ValueError(f"A prompt must be a string, got {type(text).__name__}.")
    sentences = [s.strip() for s in " ".join(text.lower().split()).split(".")]
    if sentences and not sentences[-1]:
        sentences.pop()
    if not sentences or not all(sentences):
        raise ValueError(f"{text!r} is not a prompt of the toy grammar: it is empty or has an empty sentence.")
    count = None
    match = _COUNT_RE.match(sentences[0])
    if match:
        count = NUMBER_WORDS.index(match.group(1)) + 1
        sentences.pop(0)
        if not sentences:
            raise ValueError(f"{text!r} names a count but no objects.")
    objects = tuple(_parse_object(p) for p in re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", sentences[0]))
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"{text!r} has {len(objects)} objects; the toy world holds at most {MAX_OBJECTS}.")
    if count is not None and count != len(objects):
        raise ValueError(f"{text!r} announces {count} object(s) but names {len(objects)}.")
    colors = [obj.color for obj in objects]
    if len(set(colors)) != len(colors):
        raise ValueError(f"{text!r} repeats a colour: the objects of a toy prompt have distinct colours.")
    regions = [obj.region for obj in objects if obj.region]
    if len(set(regions)) != len(regions):
        raise ValueError(f"{text!r} puts two objects in the same region.")
    references = {(obj.color, obj.shape): index for index, obj in enumerate(objects)}
    relations = []
    for sentence in sentences[1:]:
        match = _RELATION_RE.match(sentence)
        if not match:
            raise ValueError(
                f"{sentence!r} is not a relation of the toy grammar 'the COLOR SHAPE is RELATION the COLOR SHAPE' "
                f"with RELATION in {list(RELATIONS)}."
            )
        subject, relation, other = (match.group(1), match.group(2)), match.group(3), (match.group(4), match.group(5))
        for ref in (subject, other):
            if ref not in references:
                raise ValueError(f"{sentence!r} refers to a {' '.join(ref)}, which the prompt does not name.")
        if subject == other:
            raise ValueError(f"{sentence!r} relates an object to itself.")
        relations.append(Relation(references[subject], relation, references[other]))
    return Meaning(objects=objects, relations=tuple(relations))


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


def sample_scene(rng: np.random.Generator, min_objects: int = 1, max_objects: int = MAX_OBJECTS) -> Scene:
    """A random scene: distinct colours and regions, large objects first, one relation per pair of objects."""
    if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"Need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {min_objects}, {max_objects}.")
    count = int(rng.integers(min_objects, max_objects + 1))
    colors = rng.choice(list(COLORS), size=count, replace=False)
    regions = rng.choice(REGIONS, size=count, replace=False)
    shapes = rng.choice(SHAPES, size=count)
    sizes = rng.choice(list(SIZES["plain"]), size=count)
    objects = [ToyObject(str(s), str(c), str(z), str(r)) for s, c, z, r in zip(shapes, colors, sizes, regions)]
    objects.sort(key=lambda obj: obj.size != "large")
    relations = tuple(
        Relation(i, str(rng.choice(relations_between(objects[i], objects[j]))), j)
        for i in range(count)
        for j in range(i + 1, count)
    )
    offsets = tuple((float(x), float(y)) for x, y in rng.uniform(-1.0, 1.0, size=(count, 2)))
    return Scene(Meaning(tuple(objects), relations), offsets)


def sample_prompts(n: int, seed: int = 0, min_objects: int = 1, max_objects: int = MAX_OBJECTS) -> list[ToyPrompt]:
    """``n`` held-out prompts (dense captions from a random stream no data set uses) with their meanings."""
    if n < 1:
        raise ValueError(f"`n` must be at least 1, got {n}.")
    prompts = []
    for index in range(n):
        meaning = sample_scene(np.random.default_rng([seed, index, _PROMPT_STREAM]), min_objects, max_objects).meaning
        prompts.append(ToyPrompt(meaning.text, meaning))
    return prompts


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
) -> tuple[Image.Image, dict]:
    """Example ``index`` of the data set of ``seed``: its image and its metadata record (without ``file_name``)."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, min_objects, max_objects)
    height, width = sizes[int(rng.integers(len(sizes)))]
    meaning = scene.meaning
    record = {
        "text": meaning.text,
        "sparse_text": sparse_caption(meaning, rng),
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
) -> Path:
    """Write ``n`` examples as a Hugging Face ``imagefolder``: PNG images and ``metadata.jsonl``.

    Each metadata line has ``file_name``, ``text`` (dense caption), ``sparse_text``, ``label`` (see
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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        digits = max(5, len(str(n - 1)))
        with open(tmp / "metadata.jsonl", "w", encoding="utf-8") as metadata:
            for index in range(n):
                image, record = make_example(seed, index, sizes, style, min_objects, max_objects)
                file_name = f"{index:0{digits}d}.png"
                image.save(tmp / file_name)
                metadata.write(json.dumps({"file_name": file_name, **record}) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

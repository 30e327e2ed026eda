"""Edits of toy-world scenes whose right answer is known, and how well an edited image did.

Two edits, each a scene of :mod:`.world` and a caption of the scene after the edit:

- **replace an object** (inpainting): one object's grid cell is the mask, and the caption is the scene with that
  object replaced by another colour and shape (:func:`sample_replacement`, :func:`replace_object`,
  :func:`cell_mask`); :func:`score_replacement` reads the edited image with toy CompBench: is the new object in the
  cell, is the old one gone, are the other objects still there?
- **recolour every object** (img2img): the caption is the scene with every colour replaced by one
  (:func:`recolour`); :func:`score_recolouring` reads whether each object's cell now holds that colour, whether it
  still holds the object's shape (the layout kept) and how much the objects' silhouettes moved (mask IoU).

The scores read the image with :func:`.compbench.detect_objects` (no learned weights); on the renders of the scenes
themselves they are 1 (``tests/toy/test_toy_editing.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .compbench import Detection, detect_objects, score_image
from .world import COLORS, SHAPES, Meaning, Relation, Scene, _grid, dense_caption

#: Pixels whose RGB spread (max - min) reaches this count as an object's (compbench's default colour threshold).
CHROMA_THRESHOLD = 50.0


@dataclass(frozen=True)
class Replacement:
    """Object ``index`` of the scene ``before`` replaced by another of the same size, place and offset: ``after``."""

    before: Scene
    index: int
    after: Scene

    @property
    def old(self):
        return self.before.meaning.objects[self.index]

    @property
    def new(self):
        return self.after.meaning.objects[self.index]

    @property
    def caption(self) -> str:
        """The dense caption of the scene after the edit: the inpainting prompt."""
        return dense_caption(self.after.meaning)


def cell_box(region: str, height: int, width: int) -> tuple[int, int, int, int]:
    """The grid cell of ``region`` as whole pixels (x0, y0, x1, y1), x1 and y1 exclusive, rounded outward: every
    object of the cell lies inside (:func:`.world.object_box` keeps objects in their cells)."""
    row, col = _grid(region)
    return (
        math.floor(col * width / 3),
        math.floor(row * height / 3),
        math.ceil((col + 1) * width / 3),
        math.ceil((row + 1) * height / 3),
    )


def cell_mask(region: str, height: int, width: int) -> Image.Image:
    """A mask ("L", ``width`` x ``height``) white over the grid cell of ``region``, black elsewhere."""
    mask = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = cell_box(region, height, width)
    mask[y0:y1, x0:x1] = 255
    return Image.fromarray(mask, mode="L")


def replace_object(scene: Scene, index: int, color: str, shape: str) -> Replacement:
    """The scene with object ``index`` replaced by a ``color`` ``shape`` (same size, region and offset; the relations
    stay, since the places do).

    Raises:
        ValueError: an index out of range, an unknown colour or shape, or a colour another object has.
    """
    objects = scene.meaning.objects
    if not 0 <= index < len(objects):
        raise ValueError(f"Object {index} of a scene of {len(objects)} objects.")
    if color not in COLORS or shape not in SHAPES:
        raise ValueError(f"Unknown colour or shape {color!r} {shape!r}: colours {list(COLORS)}, shapes {SHAPES}.")
    if any(obj.color == color for i, obj in enumerate(objects) if i != index):
        raise ValueError(f"Another object of the scene is {color}: the toy world's objects have distinct colours.")
    new = replace(objects[index], color=color, shape=shape)
    meaning = Meaning(objects[:index] + (new,) + objects[index + 1 :], scene.meaning.relations)
    return Replacement(scene, index, Scene(meaning, scene.offsets))


def sample_replacement(rng: np.random.Generator, scene: Scene) -> Replacement:
    """A random replacement: one object, by a colour no object of the scene has and another shape."""
    objects = scene.meaning.objects
    index = int(rng.integers(len(objects)))
    colors = [c for c in COLORS if all(obj.color != c for obj in objects)]
    shapes = [s for s in SHAPES if s != objects[index].shape]
    return replace_object(scene, index, str(rng.choice(colors)), str(rng.choice(shapes)))


def recolour(meaning: Meaning, color: str = "red") -> Meaning:
    """The meaning with every object ``color``. A relation stays only where both its objects are the only one of their
    shape: with two red triangles, "the red triangle is below the red star" could mean either. (Such a meaning is
    outside the toy grammar, which gives each colour one shape; :func:`.world.dense_caption` still writes it.)"""
    if color not in COLORS:
        raise ValueError(f"Unknown colour {color!r}: one of {list(COLORS)}.")
    objects = tuple(replace(obj, color=color) for obj in meaning.objects)
    shapes = [obj.shape for obj in objects]
    relations = tuple(
        r for r in meaning.relations if shapes.count(shapes[r.subject]) == shapes.count(shapes[r.object]) == 1
    )
    return Meaning(objects, relations)


def _in_cell(detections: list[Detection], region: str) -> list[Detection]:
    return [d for d in detections if d.region == region]


def object_mask(image: Image.Image | np.ndarray) -> np.ndarray:
    """Where the image's objects are: pixels as chromatic as compbench's colour threshold (bool (H, W))."""
    array = np.asarray(image, dtype=np.float64)
    return (array.max(axis=2) - array.min(axis=2)) >= CHROMA_THRESHOLD


def mask_iou(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """Intersection over union of the object masks (:func:`object_mask`) of two images of one size (1 when neither
    has an object)."""
    mask_a, mask_b = object_mask(a), object_mask(b)
    union = np.logical_or(mask_a, mask_b).sum()
    return float(np.logical_and(mask_a, mask_b).sum() / union) if union else 1.0


def score_replacement(
    image: Image.Image, edit: Replacement, mask: Image.Image | None = None, original: Image.Image | None = None
) -> dict[str, float | None]:
    """How well ``image`` shows ``edit``, each in [0, 1] (toy CompBench reads the image):

    - ``new_color``, ``new_shape``, ``new_place``: CompBench's colour, shape and spatial scores of the new object
      alone (its colour present; that colour's largest region of its shape; in its cell); ``new_object``: all three;
    - ``old_gone``: no object of the old colour is left (the scene's colours are distinct, so anywhere);
    - ``rest_color``, ``rest_shape``, ``rest_spatial``: CompBench on the other objects and their relations;
      ``rest_kept``: the share of the other objects found in their cells with their colour and shape (``None`` for
      a scene of one object);
    - ``overall``: CompBench overall of the image against the caption after the edit;
    - ``outside_mae``: with ``mask`` and ``original``, the mean absolute difference (0..255) from the original
      outside the mask (what inpainting should keep), else ``None``.
    """
    detections = detect_objects(image)
    new = score_image(image, Meaning((edit.new,)))
    scores: dict[str, float | None] = {
        "new_color": new["color"],
        "new_shape": new["shape"],
        "new_place": new["spatial"],
        "new_object": float(new["color"] == new["shape"] == new["spatial"] == 1.0),
        "old_gone": float(all(d.color != edit.old.color for d in detections)),
    }
    kept = [i for i in range(len(edit.after.meaning.objects)) if i != edit.index]
    if kept:
        position = {old: new_index for new_index, old in enumerate(kept)}
        relations = tuple(
            Relation(position[r.subject], r.relation, position[r.object])
            for r in edit.after.meaning.relations
            if r.subject in position and r.object in position
        )
        objects = tuple(edit.after.meaning.objects[i] for i in kept)
        rest = score_image(image, Meaning(objects, relations))
        found = [
            any(d.color == obj.color and d.shape == obj.shape for d in _in_cell(detections, obj.region))
            for obj in objects
        ]
        scores.update(
            rest_color=rest["color"], rest_shape=rest["shape"], rest_spatial=rest["spatial"], rest_kept=np.mean(found)
        )
    else:
        scores.update(rest_color=None, rest_shape=None, rest_spatial=None, rest_kept=None)
    scores["rest_kept"] = None if scores["rest_kept"] is None else float(scores["rest_kept"])
    scores["overall"] = score_image(image, edit.after.meaning)["overall"]
    scores["outside_mae"] = None
    if mask is not None and original is not None:
        outside = np.asarray(mask.convert("L")) < 128
        difference = np.abs(np.asarray(image, np.float64) - np.asarray(original.convert("RGB"), np.float64))
        scores["outside_mae"] = float(difference[outside].mean()) if outside.any() else 0.0
    return scores


def score_recolouring(image: Image.Image, scene: Scene | Meaning, original: Image.Image, color: str = "red"):
    """How far ``image`` is ``scene`` with every object ``color``, each in [0, 1], means over the scene's objects:

    - ``colored``: the object's cell holds an object of ``color``;
    - ``layout``: the object's cell holds an object (any colour) of the object's shape: the layout kept;
    - ``both``: the cell holds a ``color`` object of the object's shape;
    - ``count``: the image holds as many objects as the scene;
    - ``mask_iou``: intersection over union of the objects' silhouettes in ``image`` and in ``original``
      (:func:`mask_iou`): how much of the layout is kept, pixel for pixel, whatever the colours.
    """
    meaning = scene.meaning if isinstance(scene, Scene) else scene
    detections = detect_objects(image)
    colored, layout, both = [], [], []
    for obj in meaning.objects:
        cell = _in_cell(detections, obj.region)
        colored.append(any(d.color == color for d in cell))
        layout.append(any(d.shape == obj.shape for d in cell))
        both.append(any(d.color == color and d.shape == obj.shape for d in cell))
    return {
        "colored": float(np.mean(colored)),
        "layout": float(np.mean(layout)),
        "both": float(np.mean(both)),
        "count": float(len(detections) == len(meaning.objects)),
        "mask_iou": mask_iou(image, original),
    }


def mean_of(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Mean of each key over the rows where it is not ``None`` (``None`` where it is ``None`` in every row)."""
    if not rows:
        raise ValueError("No scores to average.")
    means: dict[str, float | None] = {}
    for key in rows[0]:
        values = [row[key] for row in rows if row[key] is not None]
        means[key] = float(np.mean(values)) if values else None
    return means

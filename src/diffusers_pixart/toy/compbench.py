"""Toy CompBench: an analytic scorer of images against prompts of the toy world (the T2I-CompBench analogue).

T2I-CompBench (paper Table 3) scores attribute binding (colour, shape) and object relationships (spatial) with learned
detectors. In the toy world these are read off the pixels with no learned weights:

1. **colour segmentation**: a pixel whose chroma (max - min of RGB) passes a threshold belongs to the palette colour of
   nearest hue, if that hue is near enough (the neutral backgrounds have almost no chroma; shading and anti-aliasing
   keep the hue);
2. **objects**: the connected regions of each colour, dropping specks;
3. **shape**: each region's outline at half its own chroma (its 50%-coverage outline, which a fixed threshold blurs
   outward at soft edges) is compared with every shape drawn into its bounding box; the best intersection over union
   wins, and a region that no shape fits well is a blotch, not an object;
4. **positions**: region centroids, for the 3x3 regions and the relations of the prompt.

Per prompt and image, with each prompted object matched to a region of its colour (the largest; copies of one shape,
"two red circles", take the largest regions of their colour, those in their stated places first):

- ``color``: fraction of prompted objects whose colour is present;
- ``shape``: fraction of prompted objects whose colour region has the prompted shape (shape bound to colour);
- ``spatial``: fraction of the prompt's spatial statements (each object's region, each relation) that hold;
- ``count``: 1 when the image holds exactly as many objects as the prompt names, else 0;
- ``overall``: mean of the above.

A wider palette measures a colour the toy world does not have: :func:`concept_palette` adds one that the detector
can tell apart from the palette's, and :func:`object_colors` reads the colour of each image's largest object over it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .world import COLORS, REGIONS, SHAPES, Meaning, parse_prompt, shape_coverage

CATEGORIES = ("color", "shape", "spatial", "count")


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of float RGB values (..., 3)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) % 360.0


_PALETTE_HUES = _hue(np.array(list(COLORS.values()), np.float64))

RGB = tuple[int, int, int]

#: How far (degrees of hue) a new colour must be from every palette colour: the toy CompBench's default
#: ``max_hue_distance``, within which it reads a pixel as a palette colour.
MIN_HUE_GAP = 20.0
#: Least chroma (max - min of RGB) of a new colour: the detector's default ``chroma_threshold``.
MIN_CHROMA = 50


@dataclass(frozen=True)
class Detection:
    """An object found in an image: its colour, shape, centroid (x, y as fractions of width, height) and area."""

    color: str
    shape: str
    centroid: tuple[float, float]
    area: float  # fraction of the image
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive
    fit: float  # intersection over union of the region and its shape drawn into its box

    @property
    def region(self) -> str:
        """The cell of the 3x3 grid that holds the centroid."""
        col, row = (min(int(v * 3), 2) for v in self.centroid)
        return REGIONS[row * 3 + col]


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Validate an image and return it as float64 (H, W, 3) in 0..255."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"Toy CompBench scores RGB images; got mode {image.mode!r} (use image.convert('RGB')).")
        array = np.asarray(image)
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Expected a uint8 array (H, W, 3), got {image.dtype} {image.shape}.")
        array = image
    else:
        raise ValueError(f"Expected a PIL image or a numpy array, got {type(image).__name__}.")
    if min(array.shape[:2]) < 16:
        raise ValueError(f"Toy CompBench needs images of at least 16x16 pixels, got {array.shape[0]}x{array.shape[1]}.")
    return array.astype(np.float64)


def _classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """The shape whose drawing into the bounding box of ``mask`` (bool (h, w), cropped) overlaps it best, and that
    intersection over union.

    The true box is known to a pixel only, so each shape is also tried in the box grown by half a pixel each side.
    """
    height, width = mask.shape
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        for grow in (0.0, 0.5):
            box = (-grow, -grow, width + grow, height + grow)
            template = shape_coverage(shape, box, height, width) >= 0.5
            iou = np.logical_and(mask, template).sum() / max(np.logical_or(mask, template).sum(), 1)
            if iou > best_iou:
                best, best_iou = shape, float(iou)
    return best, best_iou


def _outline(
    component: np.ndarray, chroma: np.ndarray, chroma_threshold: float, min_pixels: float, min_fit: float
) -> tuple[np.ndarray, tuple[int, int], str, float]:
    """The outline of a colour region (bool (h, w)) cropped to its bounding box, with its offset (row, column) in the
    region, the shape that fits it best and their intersection over union.

    The outline is the region's pixels at least half as chromatic as the region's own colour (its 90th percentile
    of chroma): over the neutral background a pixel's chroma is proportional to how much of it the object covers,
    so this is the object's 50%-coverage outline, the one the shape templates are drawn with. The fixed
    ``chroma_threshold`` alone draws it further out where an edge is soft, filling a blurred ring's hole or a star's
    notches. Where that outline breaks up (lines thinner than two pixels) or no shape fits it, the region as
    segmented is used.
    """
    level = max(chroma_threshold, 0.5 * float(np.percentile(chroma[component], 90)))
    for mask in (component & (chroma >= level), component):
        rows, cols = ndimage.find_objects(mask.astype(np.int8))[0]
        mask = mask[rows, cols]
        shape, fit = _classify_shape(mask)
        if fit >= min_fit and mask.sum() >= min_pixels:
            break
    return mask, (rows.start, cols.start), shape, fit


def detect_objects(
    image: Image.Image | np.ndarray,
    chroma_threshold: float = 50.0,
    max_hue_distance: float = 20.0,
    min_area: float = 0.006,
    min_fit: float = 0.6,
    palette: Mapping[str, tuple[int, int, int]] | None = None,
) -> list[Detection]:
    """Every object of the palette in ``image``, largest first.

    Args:
        image: RGB PIL image or uint8 array (H, W, 3), at least 16x16.
        chroma_threshold: minimum max-min of a pixel's RGB (0..255) for it to count as coloured.
        max_hue_distance: maximum distance in degrees from the hue of a palette colour.
        min_area: regions smaller than this fraction of the square of the image's shorter side are specks, not
            objects (the smallest object of the toy world, a small star, covers 1.5%).
        min_fit: regions whose best shape overlaps them less (intersection over union) are blotches, not objects;
            this keeps the colourful noise of an untrained model from passing for objects.
        palette: colour names -> RGB whose hues the pixels are read against (default :data:`.world.COLORS`); a wider
            one also finds colours outside the toy world's (see :func:`concept_palette`).
    """
    array = _as_array(image)
    height, width = array.shape[:2]
    palette = COLORS if palette is None else palette
    hues = _PALETTE_HUES if palette is COLORS else _hue(np.array(list(palette.values()), np.float64).reshape(-1, 3))
    chroma = array.max(axis=2) - array.min(axis=2)
    distance = np.abs(_hue(array)[..., None] - hues)
    distance = np.minimum(distance, 360.0 - distance)
    nearest = np.where(distance.min(axis=2) <= max_hue_distance, distance.argmin(axis=2), -1)
    min_pixels = max(4, min_area * min(height, width) ** 2)
    detections = []
    for index, color in enumerate(palette):
        labels, count = ndimage.label((chroma >= chroma_threshold) & (nearest == index))
        for component, region in enumerate(ndimage.find_objects(labels), start=1):
            mask = labels[region] == component
            if mask.sum() < min_pixels:
                continue
            mask, (top, left), shape, fit = _outline(mask, chroma[region], chroma_threshold, min_pixels, min_fit)
            if fit < min_fit:
                continue
            ys, xs = np.nonzero(mask)
            y0, x0 = region[0].start + top, region[1].start + left
            detections.append(
                Detection(
                    color=color,
                    shape=shape,
                    centroid=((xs.mean() + x0 + 0.5) / width, (ys.mean() + y0 + 0.5) / height),
                    area=float(mask.sum()) / (height * width),
                    box=(x0, y0, x0 + mask.shape[1] - 1, y0 + mask.shape[0] - 1),
                    fit=fit,
                )
            )
    return sorted(detections, key=lambda d: -d.area)


def concept_palette(name: str, color: Sequence[int], min_hue_gap: float = MIN_HUE_GAP) -> dict[str, RGB]:
    """The toy palette plus a new colour ``name`` -> ``color``, checked to be one the toy CompBench can tell apart.

    Raises:
        ValueError: ``name`` is a palette colour's, ``color`` is not three integers in 0..255, is grey (chroma below
            :data:`MIN_CHROMA`), or its hue is within ``min_hue_gap`` degrees of a palette colour's (the detector
            reads colours by hue: teal (0, 128, 128) is cyan to it).
    """
    if name in COLORS:
        raise ValueError(f"{name!r} is a colour of the toy palette {list(COLORS)}: name the new colour otherwise.")
    if not name or not name.isalpha():
        raise ValueError(f"The new colour's name {name!r} must be a word of letters.")
    rgb = tuple(color)
    if len(rgb) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in rgb):
        raise ValueError(f"The new colour {color!r} must be three integers (R, G, B) in 0..255.")
    if max(rgb) - min(rgb) < MIN_CHROMA:
        raise ValueError(f"The new colour {rgb} is too grey (chroma {max(rgb) - min(rgb)} < {MIN_CHROMA}).")
    hue = float(_hue(np.array(rgb, np.float64)))
    for (other, other_rgb), other_hue in zip(COLORS.items(), _PALETTE_HUES.tolist()):
        if tuple(other_rgb) == rgb:
            raise ValueError(f"The new colour {rgb} is the palette colour {other!r}.")
        gap = min(abs(hue - other_hue), 360.0 - abs(hue - other_hue))
        if gap < min_hue_gap:
            raise ValueError(
                f"The new colour {rgb} has hue {hue:.0f} degrees, {gap:.0f} from {other!r} ({other_hue:.0f}): the toy "
                f"CompBench reads colours by hue and needs at least {min_hue_gap:.0f} degrees between them."
            )
    return {**COLORS, name: rgb}


def object_colors(images: Sequence[Image.Image], palette: Mapping[str, RGB]) -> list[str | None]:
    """The colour (a name of ``palette``) of each image's largest object, as the toy CompBench detects it over
    ``palette``; ``None`` where it finds no object."""
    colors = []
    for image in images:
        detections = detect_objects(image, palette=palette)
        colors.append(detections[0].color if detections else None)
    return colors


def _relation_holds(a: Detection, relation: str, b: Detection, margin: float) -> bool:
    (ax, ay), (bx, by) = a.centroid, b.centroid
    return {
        "left of": ax + margin < bx,
        "right of": ax > bx + margin,
        "above": ay + margin < by,
        "below": ay > by + margin,
    }[relation]


def _match(meaning: Meaning, detections: Sequence[Detection]) -> list[Detection | None]:
    """The detection each prompted object is matched to (``None``: none left of its colour).

    Each object takes the largest detection of its colour; copies of one shape (objects that share a colour) take
    that colour's detections largest first, those with a stated region the largest one in it when there is one.
    """
    colors = [obj.color for obj in meaning.objects]
    free = list(detections)  # largest first
    matched: list[Detection | None] = [None] * len(meaning.objects)
    placed_first = sorted(range(len(meaning.objects)), key=lambda i: meaning.objects[i].region is None)
    for index in placed_first:
        obj = meaning.objects[index]
        candidates = [d for d in free if d.color == obj.color]
        in_place = [d for d in candidates if d.region == obj.region and colors.count(obj.color) > 1]
        if candidates:
            matched[index] = (in_place or candidates)[0]
            free.remove(matched[index])
    return matched


def score_image(
    image: Image.Image | np.ndarray,
    prompt: str | Meaning,
    margin: float = 0.05,
    **detect_kwargs,
) -> dict[str, float | None]:
    """Scores of one image against one prompt of the toy grammar, each in [0, 1].

    ``margin`` is how far apart (fraction of the image side) two centroids must be for a relation to hold;
    ``detect_kwargs`` go to :func:`detect_objects`. ``spatial``
    is ``None`` for a prompt with no position and no relation; ``overall`` is the mean of the other scores.

    Raises:
        ValueError: for an image that is not RGB or smaller than 16x16, or a prompt outside the toy grammar.
    """
    meaning = prompt if isinstance(prompt, Meaning) else parse_prompt(prompt)
    detections = detect_objects(image, **detect_kwargs)
    matched = _match(meaning, detections)
    spatial = [det is not None and det.region == obj.region for obj, det in zip(meaning.objects, matched) if obj.region]
    for rel in meaning.relations:
        a, b = matched[rel.subject], matched[rel.object]
        spatial.append(a is not None and b is not None and _relation_holds(a, rel.relation, b, margin))
    scores: dict[str, float | None] = {
        "color": float(np.mean([det is not None for det in matched])),
        "shape": float(
            np.mean([det is not None and det.shape == obj.shape for obj, det in zip(meaning.objects, matched)])
        ),
        "spatial": float(np.mean(spatial)) if spatial else None,
        "count": float(len(detections) == len(meaning.objects)),
    }
    scores["overall"] = float(np.mean([v for v in scores.values() if v is not None]))
    return scores


def score(
    images: Sequence[Image.Image | np.ndarray], prompts: Sequence[str | Meaning], **kwargs
) -> dict[str, float | None]:
    """Mean :func:`score_image` scores over image-prompt pairs (``spatial`` over the prompts that have any).

    Raises:
        ValueError: for empty or unequal lists, and for any bad image or prompt.
    """
    if len(images) == 0:
        raise ValueError("No images to score.")
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts.")
    return mean_scores([score_image(image, prompt, **kwargs) for image, prompt in zip(images, prompts)])


def mean_scores(per_image: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Mean of per-image :func:`score_image` results, each category over the images where it is not ``None``."""
    if len(per_image) == 0:
        raise ValueError("No scores to average.")
    means: dict[str, float | None] = {}
    for key in (*CATEGORIES, "overall"):
        values = [s[key] for s in per_image if s[key] is not None]
        means[key] = float(np.mean(values)) if values else None
    return means

"""The toy world: a procedural image-caption data set shaped like PixArt-alpha's, and an analytic CompBench for it.

Also here: the toy world's language (:mod:`.language`, its T5) and the scores of edits of its scenes (:mod:`.editing`).
The experiments on it (the toy recipe that trained the embedded model, customization, LoRA, editing) are scripts of
``examples/toy``.
"""

from .compbench import CATEGORIES, Detection, detect_objects, mean_scores, score, score_image
from .world import (
    COLORS,
    FAMILIES,
    HELD_OUT_FAMILIES,
    REGIONS,
    RELATIONS,
    SHAPES,
    STYLES,
    TRAINING_FAMILIES,
    Meaning,
    Relation,
    Scene,
    ToyObject,
    ToyPrompt,
    bucket_sizes,
    class_label,
    class_names,
    dense_caption,
    describe,
    make_dataset,
    make_example,
    parse_prompt,
    render,
    sample_prompts,
    sample_scene,
    vocabulary,
)

__all__ = [
    "CATEGORIES",
    "COLORS",
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "REGIONS",
    "RELATIONS",
    "SHAPES",
    "STYLES",
    "TRAINING_FAMILIES",
    "Detection",
    "Meaning",
    "Relation",
    "Scene",
    "ToyObject",
    "ToyPrompt",
    "bucket_sizes",
    "class_label",
    "class_names",
    "dense_caption",
    "describe",
    "detect_objects",
    "make_dataset",
    "make_example",
    "mean_scores",
    "parse_prompt",
    "render",
    "sample_prompts",
    "sample_scene",
    "score",
    "score_image",
    "vocabulary",
]

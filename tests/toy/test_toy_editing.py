"""diffusers_pixart.toy.editing: scenes with one object replaced or every object recoloured, and their scores, which
are 1 on the renders of the edited scenes themselves (the measured runs are examples/toy/eval_editing.py)."""

from __future__ import annotations

import numpy as np
import pytest

from diffusers_pixart.toy import dense_caption, parse_prompt, render, sample_scene
from diffusers_pixart.toy.editing import (
    cell_box,
    cell_mask,
    mask_iou,
    mean_of,
    recolour,
    replace_object,
    sample_replacement,
    score_recolouring,
    score_replacement,
)
from diffusers_pixart.toy.world import REGIONS, object_box


def _scenes(n: int, min_objects: int = 2):
    return [sample_scene(np.random.default_rng([5, i]), min_objects=min_objects) for i in range(n)]


def test_every_object_lies_in_its_cell_mask():
    for scene in _scenes(40, min_objects=1):
        for obj, offset in zip(scene.meaning.objects, scene.offsets):
            x0, y0, x1, y1 = object_box(obj, offset, 64, 64)
            cx0, cy0, cx1, cy1 = cell_box(obj.region, 64, 64)
            assert cx0 <= x0 and cy0 <= y0 and x1 <= cx1 and y1 <= cy1
    mask = np.asarray(cell_mask("center", 64, 64))
    assert mask[32, 32] == 255 and mask[5, 5] == 0 and mask.sum() == 255 * 22 * 22  # 21 1/3 px rounded outward
    assert {cell_box(region, 48, 96) for region in REGIONS} and cell_box("bottom right", 48, 96) == (64, 32, 96, 48)


def test_a_replacement_changes_one_object_and_the_caption():
    scene = _scenes(1)[0]
    edit = sample_replacement(np.random.default_rng(0), scene)
    assert edit.new.region == edit.old.region and edit.new.size == edit.old.size
    assert edit.new.color != edit.old.color and edit.new.shape != edit.old.shape
    assert edit.after.offsets == scene.offsets and edit.after.meaning.relations == scene.meaning.relations
    assert f"{edit.new.color} {edit.new.shape}" in edit.caption and f"{edit.old.color} " not in edit.caption
    other = next(i for i in range(len(scene.meaning.objects)) if i != edit.index)
    with pytest.raises(ValueError, match="distinct colours"):
        replace_object(scene, edit.index, scene.meaning.objects[other].color, "star")
    with pytest.raises(ValueError, match="Object 5"):
        replace_object(scene, 5, "red", "star")


def test_the_edited_scenes_render_scores_one_and_the_original_does_not():
    for i, scene in enumerate(_scenes(12)):
        edit = sample_replacement(np.random.default_rng(i), scene)
        before, after = render(edit.before), render(edit.after)
        mask = cell_mask(edit.new.region, 64, 64)
        scores = score_replacement(after, edit, mask=mask, original=before)
        assert scores["new_object"] == scores["old_gone"] == scores["rest_kept"] == 1.0, scores
        assert scores["outside_mae"] == 0.0  # the render changes only the cell
        unedited = score_replacement(before, edit)
        assert unedited["new_object"] == unedited["old_gone"] == 0.0 and unedited["rest_kept"] == 1.0
        assert unedited["outside_mae"] is None


def test_recolouring_scores_the_red_render_one_and_keeps_distinct_shapes_relations():
    for scene in _scenes(12):
        red = recolour(scene.meaning)
        assert {obj.color for obj in red.objects} == {"red"}
        shapes = [obj.shape for obj in red.objects]
        assert all(shapes.count(shapes[r.subject]) == shapes.count(shapes[r.object]) == 1 for r in red.relations)
        original = render(scene)
        scores = score_recolouring(render(type(scene)(red, scene.offsets)), scene, original)
        iou = scores.pop("mask_iou")  # below 1 only at anti-aliased edges, whose chroma depends on the colour
        assert scores == {"colored": 1.0, "layout": 1.0, "both": 1.0, "count": 1.0} and iou > 0.95, (scores, iou)
        unchanged = score_recolouring(original, scene, original)
        assert unchanged["layout"] == 1.0 and unchanged["colored"] == np.mean(
            [obj.color == "red" for obj in scene.meaning.objects]
        )
    assert mask_iou(render(scene), render(_scenes(2)[1])) < 1.0
    # Two triangles and a star: "the red triangle" could be either triangle, so only no relation is left.
    meaning = parse_prompt(
        "three objects. a large red triangle at the bottom left, a small pink triangle in the center and a small "
        "orange star at the top left. the red triangle is below the orange star. the orange star is left of the "
        "pink triangle."
    )
    assert len(meaning.relations) == 2 and recolour(meaning).relations == ()
    assert dense_caption(recolour(meaning)).startswith(
        "three objects. a large red triangle at the bottom left, a small red"
    )
    assert mean_of([{"a": 1.0, "b": None}, {"a": 0.0, "b": None}]) == {"a": 0.5, "b": None}

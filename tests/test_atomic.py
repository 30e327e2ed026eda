"""Atomic writes: the final name holds the previous version until the new one is complete."""

import json

import pytest
from PIL import Image

from diffusers_pixart.atomic import atomic_dir, atomic_file, replace_dir, write_json_atomic, write_png_atomic


def test_atomic_file_replaces_only_on_success(tmp_path):
    path = tmp_path / "sub" / "scores.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["scores.json"]
    with atomic_file(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new"


def test_atomic_dir_keeps_previous_folder_on_error(tmp_path):
    out = tmp_path / "pipeline"
    with atomic_dir(out) as tmp:
        (tmp / "model.safetensors").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "model.safetensors").write_text("v2-partial")
            raise RuntimeError("disk full")
    assert (out / "model.safetensors").read_text() == "v1"
    with atomic_dir(out) as tmp:
        (tmp / "other.txt").write_text("v2")
    assert sorted(p.name for p in out.iterdir()) == ["other.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"]


def test_replace_dir_recovers_from_a_leftover_old_folder(tmp_path):
    final, tmp = tmp_path / "ckpt", tmp_path / ".tmp-ckpt"
    (tmp_path / ".old-ckpt").mkdir()
    final.mkdir()
    tmp.mkdir()
    (tmp / "state").write_text("new")
    replace_dir(tmp, final)
    assert (final / "state").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_write_png_atomic_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "images" / "sheet.png"
    write_png_atomic(path, Image.new("RGB", (4, 2), (255, 0, 0)))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (4, 2) and image.getpixel((0, 0)) == (255, 0, 0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["sheet.png"]

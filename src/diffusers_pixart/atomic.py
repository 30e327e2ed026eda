"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything the package saves for a user (pipelines, checkpoints, images, scores, shards) is written under a temporary
name beside its final path, ``.tmp-<name>``, and renamed when complete. A run killed while writing leaves the previous
version as it was and, at worst, a ``.tmp-`` leftover that the next write replaces.

    with atomic_file("out/scores.json") as tmp:
        tmp.write_text(text)
    with atomic_dir("out/pipeline") as tmp:
        pipe.save_pretrained(tmp)
"""

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMPORARY_PREFIX = ".tmp-"


def temporary_path(final: str | os.PathLike) -> Path:
    """The name ``final`` is written under until complete: ``.tmp-<name>`` in the same folder (same file system)."""
    final = Path(final)
    return final.with_name(f"{TEMPORARY_PREFIX}{final.name}")


def remove(path: Path) -> None:
    """Remove the file or folder ``path`` if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing a previous ``final`` only once ``tmp`` is complete.

    The previous folder is first renamed to ``.old-<name>`` and removed after the new one is in place, so at every
    moment one complete version exists under ``final`` or ``.old-<name>``.
    """
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(f".old-{final.name}")
    remove(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    remove(old)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write the file ``path`` to; renamed to ``path`` when the block ends without error.

    On an error the temporary file is removed and ``path`` keeps its previous content. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; it replaces the folder ``path`` when the block ends without error.

    On an error the temporary folder is removed and ``path`` keeps its previous content. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        remove(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True))


def write_png_atomic(path: str | os.PathLike, image: Any) -> None:
    """Write the PIL ``image`` as a PNG to ``path`` atomically: a partly written file never replaces a previous one."""
    with atomic_file(path) as tmp:
        image.save(tmp, format="PNG")

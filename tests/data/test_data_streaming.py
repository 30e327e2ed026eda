"""Streaming image-text loading: local formats, skipping, buckets, micro-conditions, rank splits and exact resuming.

The ``write_*`` helpers build small sources on disk; other data tests import them.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_pixart.data.buckets import nearest_bucket, resize_and_center_crop
from diffusers_pixart.data.streaming import ImageTextLoader, load_streaming_dataset

#: (height, width) of the valid images: several aspect ratios, two per bucket at 256px.
SIZES = [(32, 32), (33, 31), (16, 64), (17, 66), (64, 16), (60, 15), (24, 36), (25, 37), (40, 30), (41, 30)] * 2


def png_bytes(height: int, width: int, seed: int) -> bytes:
    """A PNG of random pixels (reproducible from ``seed``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_imagefolder(root: Path, sizes=SIZES, bad: bool = True) -> list[str]:
    """An ``imagefolder`` with one image per size (caption ``"image i"``, label ``i % 3``); with ``bad``, also one
    undecodable file, one truncated PNG, one 4x4 image and one empty caption. Returns the valid captions."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (height, width) in enumerate(sizes):
        (root / f"{i:03d}.png").write_bytes(png_bytes(height, width, i))
        rows.append({"file_name": f"{i:03d}.png", "text": f"image {i}", "label": i % 3})
    if bad:
        (root / "garbage.png").write_bytes(b"not an image")
        (root / "truncated.png").write_bytes(png_bytes(40, 40, 99)[:200])
        (root / "tiny.png").write_bytes(png_bytes(4, 4, 98))
        (root / "empty.png").write_bytes(png_bytes(32, 32, 97))
        rows += [
            {"file_name": "garbage.png", "text": "garbage", "label": 0},
            {"file_name": "truncated.png", "text": "truncated", "label": 0},
            {"file_name": "tiny.png", "text": "tiny", "label": 0},
            {"file_name": "empty.png", "text": "  ", "label": 0},
        ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return [f"image {i}" for i in range(len(sizes))]


def loader(source, **kwargs) -> ImageTextLoader:
    options = dict(resolution=256, multi_scale=True, batch_size=2, min_size=8, max_epochs=1, seed=3)
    options.update(kwargs)
    return ImageTextLoader(source, **options)


def texts(batches) -> list[str]:
    return [text for batch in batches for text in batch["text"]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    write_imagefolder(root)
    return root


def test_imagefolder_batches_buckets_and_skips(folder):
    stream = loader(load_streaming_dataset(str(folder)), drop_last=False, shuffle_buffer_size=8, label_column="label")
    batches = list(stream)
    assert sorted(texts(batches)) == sorted(f"image {i}" for i in range(len(SIZES)))
    assert dict(stream.skipped) == {"undecodable image": 2, "image too small": 1, "empty caption": 1}
    for batch in batches:
        n, _, height, width = batch["pixel_values"].shape
        assert batch["pixel_values"].dtype == torch.float32
        assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
        assert batch["resolution"].shape == (n, 2) and batch["aspect_ratio"].shape == (n, 1)
        assert batch["label"].dtype == torch.long
        for j, text in enumerate(batch["text"]):
            i = int(text.split()[1])
            original = SIZES[i]
            bucket = nearest_bucket(*original, 256)
            assert (height, width) == (bucket.height, bucket.width)  # one bucket per batch
            assert batch["resolution"][j].tolist() == [float(original[0]), float(original[1])]
            assert batch["aspect_ratio"][j].item() == pytest.approx(bucket.ratio)
            assert batch["label"][j].item() == i % 3
            image = Image.open(folder / f"{i:03d}.png").convert("RGB")
            expected = np.asarray(resize_and_center_crop(image, height, width), dtype=np.float32) / 127.5 - 1
            assert torch.allclose(batch["pixel_values"][j].permute(1, 2, 0), torch.from_numpy(expected), atol=1e-6)


def test_square_resolution_without_buckets(folder):
    batches = list(loader(load_streaming_dataset(str(folder)), resolution=48, multi_scale=False, batch_size=5))
    assert len(batches) == 4  # 20 valid images, drop_last keeps full batches only
    assert all(b["pixel_values"].shape == (5, 3, 48, 48) and (b["aspect_ratio"] == 1).all() for b in batches)


def test_webdataset_and_parquet_with_configured_columns(tmp_path):
    shards = tmp_path / "wds"
    shards.mkdir()
    for shard in range(2):
        with tarfile.open(shards / f"shard-{shard}.tar", "w") as tar:
            for i in range(3):
                for extension, data in (("jpg", png_bytes(20, 30, i)), ("txt", f"wds {shard} {i}".encode())):
                    info = tarfile.TarInfo(f"{shard}{i:03d}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    got = texts(loader(load_streaming_dataset(str(shards)), image_column="jpg", caption_column="txt", drop_last=False))
    assert sorted(got) == sorted(f"wds {s} {i}" for s in range(2) for i in range(3))

    table = tmp_path / "parquet"
    table.mkdir()
    images = [{"bytes": png_bytes(30, 20, i), "path": None} for i in range(4)]
    data = datasets.Dataset.from_dict({"picture": images, "caption": [f"pq {i}" for i in range(4)]})
    data.cast_column("picture", datasets.Image()).to_parquet(str(table / "part-0.parquet"))
    stream = loader(load_streaming_dataset(str(table)), image_column="picture", caption_column="caption")
    batches = list(stream)
    assert sorted(texts(batches)) == [f"pq {i}" for i in range(4)]
    assert batches[0]["pixel_values"].shape[2:] == (
        nearest_bucket(30, 20, 256).height,
        nearest_bucket(30, 20, 256).width,
    )


def test_epochs_reshuffle_and_ranks_are_disjoint(folder):
    source = load_streaming_dataset(str(folder))
    both = list(loader(source, batch_size=1, shuffle_buffer_size=16, max_epochs=2, multi_scale=False, resolution=16))
    first, second = texts(both[:20]), texts(both[20:])
    assert sorted(first) == sorted(second) and first != second  # the seed changes with the epoch
    parts = [texts(loader(source, rank=r, world_size=2, shuffle_buffer_size=16, drop_last=False)) for r in range(2)]
    assert set(parts[0]).isdisjoint(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(first)


@pytest.mark.parametrize("stop_after", [1, 7])
def test_resume_neither_repeats_nor_skips(folder, stop_after):
    source = load_streaming_dataset(str(folder))
    options = dict(shuffle_buffer_size=6, batch_size=2, max_epochs=2, drop_last=True)
    uninterrupted = texts(loader(source, **options))

    first = loader(source, **options)
    delivered = []
    for batch in first:
        delivered += batch["text"]
        if len(delivered) == 2 * stop_after:
            state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint would store
            break
    resumed = loader(source, **options)
    resumed.load_state_dict(state)
    delivered += texts(resumed)
    assert delivered == uninterrupted
    assert sum(resumed.skipped.values()) == 8  # 4 bad records per epoch, counted once each


def test_errors(folder, tmp_path):
    source = load_streaming_dataset(str(folder))
    with pytest.raises(ValueError, match="caption_column"):
        loader(source, caption_column=None)
    with pytest.raises(ValueError, match="Column 'caption' is not in the dataset"):
        loader(source, caption_column="caption")
    with pytest.raises(ValueError, match="No aspect-ratio buckets for resolution 100"):
        loader(source, resolution=100)
    with pytest.raises(ValueError, match="rank"):
        loader(source, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size=2"):
        loader(source).load_state_dict(loader(source, world_size=2).state_dict())
    with pytest.raises(ValueError, match="datasets.IterableDataset"):
        loader([1, 2, 3])
    # Four images per bucket: with batches of 5 and drop_last an epoch gives nothing (it used to loop forever).
    with pytest.raises(ValueError, match="no batch of 5 on rank 0: no bucket filled one .20 usable records"):
        next(iter(loader(source, batch_size=5, drop_last=True, max_epochs=None)))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="supported single files"):
        load_streaming_dataset(str(tmp_path / "notes.txt"))


def assert_same_batches(got: list[dict], expected: list[dict]) -> None:
    """The same batches, bit for bit (both sides run the same code on the same records)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert torch.equal(value, b[key]) if isinstance(value, torch.Tensor) else value == b[key], key


def test_summary_counts_records_seen_used_skipped_and_dropped(folder):
    stream = loader(load_streaming_dataset(str(folder)), drop_last=False, shuffle_buffer_size=8)
    list(stream)
    skipped = {"undecodable image": 2, "image too small": 1, "empty caption": 1}
    assert stream.summary() == {"seen": 24, "used": 20, "skipped": skipped, "dropped": 0, "waiting": 0}
    # In batches of 3 with drop_last, what does not fill a batch of its bucket is dropped at the end of each epoch.
    per_bucket = Counter(nearest_bucket(height, width, 256) for height, width in SIZES)
    used = 2 * sum(n - n % 3 for n in per_bucket.values())
    dropping = loader(load_streaming_dataset(str(folder)), batch_size=3, max_epochs=2, drop_last=True)
    assert sum(len(batch["text"]) for batch in dropping) == used
    doubled = {kind: 2 * n for kind, n in skipped.items()}
    assert dropping.summary() == {"seen": 48, "used": used, "skipped": doubled, "dropped": 40 - used, "waiting": 0}


def test_every_skip_is_logged_on_its_own_line_up_to_a_limit(tmp_path, caplog, monkeypatch):
    import diffusers_pixart.data.streaming as streaming

    monkeypatch.setattr(streaming, "SKIPS_LOGGED", 3)
    write_imagefolder(tmp_path, sizes=[(2, 2)] * 5 + [(32, 32)] * 2, bad=False)
    stream = loader(load_streaming_dataset(str(tmp_path)), shuffle_buffer_size=0, min_size=16)
    with caplog.at_level("WARNING", logger="diffusers_pixart.data.streaming"):
        assert texts(stream) == ["image 5", "image 6"]
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "rank 0, epoch 0: skipped record 0: image too small (2x2 < 16) (1 so far)",
        "rank 0, epoch 0: skipped record 1: image too small (2x2 < 16) (2 so far)",
        "rank 0, epoch 0: skipped record 2: image too small (2x2 < 16) (3 so far; further 'image too small' skips "
        "are counted, not logged)",
    ]
    assert stream.skipped == {"image too small": 5}


@pytest.mark.parametrize("stop_after", [3, 12])
def test_worker_processes_give_the_in_process_batches_and_resume_exactly(folder, stop_after):
    source = load_streaming_dataset(str(folder))
    options = dict(shuffle_buffer_size=6, batch_size=2, max_epochs=2, drop_last=True)
    expected = list(loader(source, **options))
    workers = loader(source, num_workers=2, **options)
    got = []
    for batch in workers:
        got.append(batch)
        if len(got) == stop_after:  # a checkpoint here (the second epoch from 11 batches on)
            state = json.loads(json.dumps(workers.state_dict()))
            break
    resumed = loader(source, num_workers=2, **options)
    resumed.load_state_dict(state)
    got += list(resumed)
    assert_same_batches(got, expected)
    assert resumed.summary()["seen"] == 48 and sum(resumed.skipped.values()) == 8

"""Aspect-ratio buckets: diffusers' tables, nearest-bucket choice, resize and crop, the per-bucket batcher."""

from __future__ import annotations

import numpy as np
import pytest
from diffusers.image_processor import PixArtImageProcessor
from diffusers.pipelines.pixart_alpha import pipeline_pixart_alpha, pipeline_pixart_sigma
from PIL import Image

from diffusers_pixart.data.buckets import (
    ASPECT_RATIO_BINS,
    BucketBatcher,
    nearest_bucket,
    resize_and_center_crop,
    square_bucket,
)


def test_tables_are_diffusers_own():
    assert ASPECT_RATIO_BINS[256] is pipeline_pixart_alpha.ASPECT_RATIO_256_BIN
    assert ASPECT_RATIO_BINS[512] is pipeline_pixart_alpha.ASPECT_RATIO_512_BIN
    assert ASPECT_RATIO_BINS[1024] is pipeline_pixart_alpha.ASPECT_RATIO_1024_BIN
    assert ASPECT_RATIO_BINS[2048] is pipeline_pixart_sigma.ASPECT_RATIO_2048_BIN
    for table in ASPECT_RATIO_BINS.values():
        ratios = sorted(float(key) for key in table)
        assert ratios[0] == 0.25 and ratios[-1] == 4.0


@pytest.mark.parametrize("resolution", [256, 512, 1024])
def test_nearest_bucket_matches_diffusers_binning(resolution):
    table = ASPECT_RATIO_BINS[resolution]
    for height in range(40, 2000, 97):
        for width in range(40, 2000, 89):
            bucket = nearest_bucket(height, width, resolution)
            expected = PixArtImageProcessor.classify_height_width_bin(height, width, table)
            assert (bucket.height, bucket.width) == expected
            assert table[str(bucket.ratio)] == list(map(float, expected))
            # no other bucket is nearer in ratio
            assert all(abs(bucket.ratio - height / width) <= abs(float(k) - height / width) + 1e-12 for k in table)


def test_bucket_errors():
    with pytest.raises(ValueError, match="No aspect-ratio buckets for resolution 300"):
        nearest_bucket(10, 10, 300)
    with pytest.raises(ValueError, match="positive"):
        nearest_bucket(0, 10, 256)
    with pytest.raises(ValueError, match="positive"):
        square_bucket(0)
    assert square_bucket(64).ratio == 1.0 and (square_bucket(64).height, square_bucket(64).width) == (64, 64)


def test_resize_and_center_crop_keeps_the_centre():
    # A 200x100 (w x h) image whose red channel is the column index: a square crop at the same scale keeps 50..149.
    columns = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    image = Image.fromarray(np.stack([columns, columns * 0, columns * 0], axis=-1))
    crop = resize_and_center_crop(image, 100, 100)
    assert crop.size == (100, 100)
    red = np.asarray(crop)[50, :, 0].astype(int)
    assert abs(red[0] - 50) <= 1 and abs(red[-1] - 149) <= 1
    # Down-scaling: a 300x600 (w x h) image to a 64x32 (h x w) bucket covers and crops to the exact size.
    assert resize_and_center_crop(Image.new("RGB", (300, 600)), 64, 32).size == (32, 64)
    assert resize_and_center_crop(Image.new("RGB", (301, 97)), 48, 144).size == (144, 48)


def test_bucket_batcher_groups_by_key_and_flushes():
    batcher = BucketBatcher(batch_size=2)
    pairs = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5), ("a", 6)]
    assert list(batcher.batches(pairs)) == [[1, 3], [2, 5]]
    assert batcher.pending() == [4, 6]
    flushed = batcher.flush()
    assert next(flushed) == [4] and batcher.pending() == [6]
    assert list(flushed) == [[6]] and batcher.pending() == []
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatcher(0)

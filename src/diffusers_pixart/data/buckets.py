"""Aspect-ratio buckets for multi-scale training (paper appendix A.5, after SDXL).

The bucket tables are diffusers' own (``ASPECT_RATIO_{256,512,1024}_BIN`` of the PixArt-alpha pipeline and
``ASPECT_RATIO_2048_BIN`` of PixArt-Sigma): keys are height/width ratios written as strings ("0.25" .. "4.0"), values
``[height, width]`` in pixels. Training images go to the bucket with the nearest ratio, are resized to cover it and
centre-cropped; a batch holds one bucket, and the micro-conditions carry the original size and the bucket ratio.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..diffusers_compat import ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN, ASPECT_RATIO_2048_BIN

#: The bucket table of each base resolution: ``{ratio string: [height, width]}``.
ASPECT_RATIO_BINS: dict[int, dict[str, list[float]]] = {
    256: ASPECT_RATIO_256_BIN,
    512: ASPECT_RATIO_512_BIN,
    1024: ASPECT_RATIO_1024_BIN,
    2048: ASPECT_RATIO_2048_BIN,
}


@dataclass(frozen=True)
class Bucket:
    """One aspect-ratio bucket: its ratio (height / width, the table's key as a float) and its size in pixels."""

    ratio: float
    height: int
    width: int


def bucket_table(resolution: int, multiple: int = 16) -> dict[str, list[float]]:
    """The bucket table of a base ``resolution``; a ``ValueError`` names the valid ones.

    256, 512, 1024 and 2048 have the official tables. The small resolutions of the toy world (128, 64, 32: 256
    divided by a power of two) get the 256 table scaled down, each side rounded to a multiple of ``multiple`` (the
    VAE factor times the patch size, so that every bucket is a whole number of patches).
    """
    if resolution in ASPECT_RATIO_BINS:
        return ASPECT_RATIO_BINS[resolution]
    factor = 256 // resolution if 0 < resolution < 256 and 256 % resolution == 0 else 0
    if factor and factor & (factor - 1) == 0:
        return {
            key: [float(max(multiple, round(side / factor / multiple) * multiple)) for side in sides]
            for key, sides in ASPECT_RATIO_256_BIN.items()
        }
    raise ValueError(
        f"No aspect-ratio buckets for resolution {resolution}; choose one of {sorted(ASPECT_RATIO_BINS)} "
        "or 256 divided by a power of two."
    )


def nearest_bucket(height: int, width: int, resolution: int) -> Bucket:
    """The bucket of ``resolution``'s table whose height/width ratio is nearest to the image's."""
    if height <= 0 or width <= 0:
        raise ValueError(f"Image size must be positive, got height={height}, width={width}.")
    ratio = height / width
    table = bucket_table(resolution)
    key = min(table, key=lambda k: abs(float(k) - ratio))
    bucket_height, bucket_width = table[key]
    return Bucket(ratio=float(key), height=int(bucket_height), width=int(bucket_width))


def square_bucket(resolution: int) -> Bucket:
    """The single bucket of fixed-resolution training: ``resolution`` x ``resolution``, ratio 1."""
    if resolution <= 0:
        raise ValueError(f"`resolution` must be positive, got {resolution}.")
    return Bucket(ratio=1.0, height=resolution, width=resolution)


def resize_and_center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Resize ``image`` (bicubic, anti-aliased) to the smallest size that covers ``height`` x ``width``, then crop the
    centre to exactly that size."""
    scale = max(height / image.height, width / image.width)
    resized_width = max(width, round(image.width * scale))
    resized_height = max(height, round(image.height * scale))
    image = image.resize((resized_width, resized_height), Image.Resampling.BICUBIC)
    left = (resized_width - width) // 2
    top = (resized_height - height) // 2
    return image.crop((left, top, left + width, top + height))


class BucketBatcher:
    """Groups a stream of ``(key, item)`` pairs into lists of ``batch_size`` items that share a key.

    Works on streams: each key has its own buffer, and a batch is yielded as soon as one buffer is full, so at most
    ``batch_size - 1`` items per key wait. :meth:`pending` lists the items still waiting (for resumable loaders);
    :meth:`flush` yields the incomplete batches at the end of a stream.
    """

    def __init__(self, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
        self.batch_size = batch_size
        self._buffers: dict[Hashable, list[Any]] = {}

    def add(self, key: Hashable, item: Any) -> list[Any] | None:
        """Buffer ``item`` under ``key``; returns the full batch of that key when it completes, else ``None``."""
        buffer = self._buffers.setdefault(key, [])
        buffer.append(item)
        if len(buffer) < self.batch_size:
            return None
        del self._buffers[key]
        return buffer

    def batches(self, pairs: Iterable[tuple[Hashable, Any]]) -> Iterator[list[Any]]:
        """Yield the full batches of ``pairs`` as they complete (incomplete ones stay buffered)."""
        for key, item in pairs:
            batch = self.add(key, item)
            if batch is not None:
                yield batch

    def pending(self) -> list[Any]:
        """The buffered items that are not in a yielded batch yet, in arrival order within each key."""
        return [item for buffer in self._buffers.values() for item in buffer]

    def flush(self) -> Iterator[list[Any]]:
        """Yield and forget the incomplete batches, one per key."""
        while self._buffers:
            yield self._buffers.pop(next(iter(self._buffers)))

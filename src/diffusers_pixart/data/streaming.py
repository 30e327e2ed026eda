"""Streaming image-text data with ``datasets``: Hub or local sources, per-rank splits, buckets and exact resuming.

A loader here is a plain iterable of batches (dicts of tensors) built on a ``datasets.IterableDataset``:

* the source is shuffled with a buffer whose seed changes with the epoch (``set_epoch``), then split between ranks
  with ``split_dataset_by_node``, so every accelerate process reads its own part;
* records that cannot be used (undecodable image, image below ``min_size``, empty caption) are skipped, counted in
  :attr:`StreamingBatchLoader.skipped` and logged (the first :data:`SKIPS_LOGGED` of each kind, one line each); they
  never stop a run. :meth:`StreamingBatchLoader.summary` counts the records read, used and skipped by reason;
* with ``num_workers`` the per-record work (:meth:`StreamingBatchLoader.prepare`: decoding, resizing, edge maps)
  runs in worker processes, in order: the batches, and so the resume, are those of the in-process loader;
* samples go to aspect-ratio buckets and a batch holds one bucket (:class:`~.buckets.BucketBatcher`);
* :meth:`StreamingBatchLoader.state_dict` records the epoch, how many records of the epoch were read and which of them
  still wait in a bucket. ``datasets``' own ``state_dict`` drops the shuffle buffer on resume (some records are then
  repeated and others skipped), so a resumed loader instead replays its epoch from the start with the same seed,
  passing over the records already delivered without decoding them. Nothing is repeated and nothing is lost.

Iterate a loader directly in every process (do not pass it through ``accelerator.prepare``: it is already split).
"""

from __future__ import annotations

import abc
import io
import logging
import multiprocessing
from collections import Counter, deque
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL.Image
import torch
from datasets.distributed import split_dataset_by_node
from PIL import ImageOps

from .buckets import Bucket, BucketBatcher, nearest_bucket, resize_and_center_crop, square_bucket

logger = logging.getLogger(__name__)

#: Extensions of the files that decide a local source's ``datasets`` builder.
_LOCAL_FORMATS = {".tar": "webdataset", ".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


#: Mixed into the seed of the caption-column draw (:meth:`ImageTextLoader.pick_caption`), apart from other draws.
_CAPTION_STREAM = 104729

#: Skips of each kind logged one by one; further ones are counted (see :meth:`StreamingBatchLoader.summary`).
SKIPS_LOGGED = 10
#: Images whose shorter side is below this many pixels are skipped by default (``--min_image_side``).
DEFAULT_MIN_IMAGE_SIDE = 16


class SkipSample(Exception):
    """Raised by :meth:`StreamingBatchLoader.prepare` for a record that must be skipped; the message is the reason."""


#: The loader of a worker process (:meth:`StreamingBatchLoader._prepared_in_workers`), set by its initializer.
_worker_loader: StreamingBatchLoader | None = None


def _init_worker(loader: StreamingBatchLoader) -> None:
    """Pool initializer: one thread per worker (the workers run side by side) and the loader whose records it
    prepares."""
    global _worker_loader
    torch.set_num_threads(1)
    _worker_loader = loader


def _prepare_in_worker(epoch: int, chunk: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, Any]]:
    """``(index, (key, item) or SkipSample)`` of each ``(index, record)`` of a chunk of ``epoch``, in a worker process
    (the worker's copy of the loader was made when the pool started: its epoch is set here)."""
    _worker_loader.epoch = epoch
    return [(index, _worker_loader._prepare_or_skip(record, index)) for index, record in chunk]


def load_streaming_dataset(
    path: str,
    *,
    split: str = "train",
    name: str | None = None,
    data_files: str | list[str] | None = None,
) -> datasets.IterableDataset:
    """Open an image-text source as a streaming ``datasets.IterableDataset``.

    Args:
        path: a Hub dataset id (``"user/name"``), a local folder or a local file. A folder of ``.tar`` shards is read
            as ``webdataset``, a folder of ``.parquet`` files as ``parquet``, any other folder as ``imagefolder``
            (captions and labels in its ``metadata.jsonl``); a single ``.tar``/``.parquet``/``.jsonl`` file by its
            extension. Hidden files and folders (the ``.tmp-`` leftovers of an interrupted write) are not read.
        split: the split to read.
        name: the Hub dataset's configuration name.
        data_files: explicit data files (overrides the folder inspection).
    """
    local = Path(path)
    if local.is_dir():
        files = data_files or sorted(
            str(f)
            for f in local.rglob("*")
            if f.suffix in (".tar", ".parquet") and not any(part.startswith(".") for part in f.relative_to(local).parts)
        )
        suffixes = {Path(f).suffix for f in ([files] if isinstance(files, str) else files)}
        if not files:
            return datasets.load_dataset("imagefolder", data_dir=str(local), split=split, streaming=True)
        if len(suffixes) != 1:
            raise ValueError(f"{path} mixes data file types {sorted(suffixes)}; pass `data_files` to choose.")
        return datasets.load_dataset(_LOCAL_FORMATS[suffixes.pop()], data_files=files, split=split, streaming=True)
    if local.is_file():
        if local.suffix not in _LOCAL_FORMATS:
            raise ValueError(f"Cannot read {path}: supported single files are {sorted(_LOCAL_FORMATS)}.")
        return datasets.load_dataset(_LOCAL_FORMATS[local.suffix], data_files=str(local), split=split, streaming=True)
    return datasets.load_dataset(path, name, data_files=data_files, split=split, streaming=True)


def decode_image(value: Any) -> PIL.Image.Image:
    """Decode a ``datasets`` image value (``{"bytes", "path"}``, a path or raw bytes) into an RGB image.

    The whole image is decoded here (EXIF orientation applied), so a truncated file fails now; every decoding failure
    is raised as :class:`SkipSample`.
    """
    try:
        if isinstance(value, PIL.Image.Image):
            image = value
        elif isinstance(value, bytes | bytearray):
            image = PIL.Image.open(io.BytesIO(value))
        else:
            image = datasets.Image().decode_example(
                value if isinstance(value, dict) else {"path": value, "bytes": None}
            )
        image.load()
        return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise SkipSample(f"undecodable image ({type(error).__name__}: {error})") from error


def image_to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """An RGB image as a float tensor (3, H, W) in [-1, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def _require_iterable_dataset(dataset: Any) -> None:
    if not isinstance(dataset, datasets.IterableDataset):
        raise ValueError(f"`dataset` must be a datasets.IterableDataset, got {type(dataset).__name__}.")


class StreamingBatchLoader(abc.ABC):
    """The shared machinery of the loaders: shuffle, rank split, epochs, skipping, buckets and exact resuming.

    Subclasses turn one record into ``(bucket key, item)`` in :meth:`prepare` (raising :class:`SkipSample` to skip it)
    and a list of items of one bucket into a batch in :meth:`collate`.

    Args:
        dataset: the source, unshuffled and unsplit.
        batch_size: items per batch (per process).
        shuffle_buffer_size: size of the example shuffle buffer; 0 keeps the source order (and does not shuffle shards).
        seed: shuffle seed; epoch ``e`` shuffles with ``seed + e`` (``datasets``' ``set_epoch``).
        rank, world_size: this process and the number of processes (``accelerator.process_index``/``num_processes``).
        drop_last: drop the incomplete batches left in the buckets at the end of an epoch.
        max_epochs: stop after this many epochs; ``None`` loops over the data forever.
        num_workers: worker processes running :meth:`prepare` (0: in this process). Records are read here, sent to
            the workers in chunks of ``batch_size`` (at most ``2 x num_workers`` chunks ahead) and taken back in
            order, so batches and resume positions do not depend on it. The workers are forked (spawned once CUDA
            is initialised in this process) with one thread each, and end with the iteration.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        *,
        batch_size: int,
        shuffle_buffer_size: int = 1000,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        max_epochs: int | None = None,
        num_workers: int = 0,
    ):
        _require_iterable_dataset(dataset)
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
        if shuffle_buffer_size < 0:
            raise ValueError(f"`shuffle_buffer_size` must be >= 0, got {shuffle_buffer_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"`rank` must be in [0, world_size={world_size}), got {rank}.")
        if max_epochs is not None and max_epochs < 1:
            raise ValueError(f"`max_epochs` must be at least 1 or None, got {max_epochs}.")
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, got {num_workers}.")
        if shuffle_buffer_size > 0:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        self.dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.max_epochs = max_epochs
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers
        self.epoch = 0
        self.skipped: Counter[str] = Counter()
        self.seen = self.used = self.dropped = 0
        self._position = 0
        self._pending: list[int] = []
        self._batcher: BucketBatcher | None = None

    @abc.abstractmethod
    def prepare(self, record: dict[str, Any], index: int) -> tuple[Hashable, Any]:
        """Turn the ``index``-th record of the epoch into ``(bucket key, item)``; raise :class:`SkipSample` to skip."""

    @abc.abstractmethod
    def collate(self, items: list[Any]) -> dict[str, Any]:
        """Turn the items of one bucket into a batch."""

    def records(self) -> Iterator[dict[str, Any]]:
        """This epoch's records of this process, in order (a subclass may read them in bulk, in the same order)."""
        return iter(self.dataset)

    def _pending_indices(self) -> list[int]:
        """The records of this epoch read but waiting in a bucket, by index."""
        return list(self._pending if self._batcher is None else sorted(i for i, _ in self._batcher.pending()))

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: epoch, records read this epoch, records waiting in a bucket, and the counts of
        :meth:`summary`."""
        return {
            "epoch": self.epoch,
            "position": self._position,
            "pending": self._pending_indices(),
            "skipped": dict(self.skipped),
            "seen": self.seen,
            "used": self.used,
            "dropped": self.dropped,
            "seed": self.seed,
            "world_size": self.world_size,
        }

    def summary(self) -> dict[str, Any]:
        """What this process's loader did since the start (resumed runs included): records ``seen`` (read and
        prepared, or skipped), ``used`` in batches, ``skipped`` by reason, ``dropped`` (left in incomplete buckets at
        the end of an epoch, with ``drop_last``) and ``waiting`` in a bucket now."""
        return {
            "seen": self.seen,
            "used": self.used,
            "skipped": dict(self.skipped),
            "dropped": self.dropped,
            "waiting": len(self._pending_indices()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the seed and the number of processes must be the ones saved."""
        for key in ("seed", "world_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"Cannot resume: the state was saved with {key}={state[key]}, this loader has "
                    f"{key}={getattr(self, key)}."
                )
        self.epoch = state["epoch"]
        self._position = state["position"]
        self._pending = list(state["pending"])
        self.skipped = Counter(state["skipped"])
        # States saved before these counts existed resume with them at 0.
        self.seen, self.used, self.dropped = (state.get(key, 0) for key in ("seen", "used", "dropped"))

    def _skip(self, index: int, reason: str) -> None:
        """Count a skipped record; log it on its own line while its kind has been seen at most SKIPS_LOGGED times."""
        kind = reason.split(" (")[0]
        self.skipped[kind] += 1
        count = self.skipped[kind]
        if count <= SKIPS_LOGGED:
            more = f"; further {kind!r} skips are counted, not logged" if count == SKIPS_LOGGED else ""
            logger.warning(
                "rank %d, epoch %d: skipped record %d: %s (%d so far%s)",
                self.rank,
                self.epoch,
                index,
                reason,
                count,
                more,
            )

    def _prepare_or_skip(self, record: dict[str, Any], index: int) -> tuple[Hashable, Any] | SkipSample:
        """:meth:`prepare`'s ``(key, item)``, or the :class:`SkipSample` it raised."""
        try:
            return self.prepare(record, index)
        except SkipSample as skip:
            return skip

    def _to_prepare(self, resume_position: int, replay: set[int]) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(index, record)`` of this epoch's records still to deliver: those after the resume position, and the
        ones before it that waited in a bucket when the state was saved."""
        for index, record in enumerate(self.records()):
            if index >= resume_position or index in replay:
                yield index, record

    def _prepared_in_workers(
        self, records: Iterator[tuple[int, dict[str, Any]]], pool: Any
    ) -> Iterator[tuple[int, Any]]:
        """:meth:`_prepare_or_skip` of ``records`` run by ``pool``, in chunks of ``batch_size``, yielded in order."""
        in_flight: deque = deque()
        chunk: list[tuple[int, dict[str, Any]]] = []
        for pair in records:
            chunk.append(pair)
            if len(chunk) == self.batch_size:
                in_flight.append(pool.apply_async(_prepare_in_worker, (self.epoch, chunk)))
                chunk = []
                if len(in_flight) >= 2 * self.num_workers:
                    yield from in_flight.popleft().get()
        if chunk:
            in_flight.append(pool.apply_async(_prepare_in_worker, (self.epoch, chunk)))
        while in_flight:
            yield from in_flight.popleft().get()

    def _start_workers(self) -> Any:
        """The pool of ``num_workers`` processes (forked; spawned when this process has initialised CUDA)."""
        context = multiprocessing.get_context("spawn" if torch.cuda.is_initialized() else None)
        return context.Pool(self.num_workers, initializer=_init_worker, initargs=(self,))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pool = self._start_workers() if self.num_workers else None
        try:
            yield from self._epochs(pool)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()

    def _epochs(self, pool: Any) -> Iterator[dict[str, Any]]:
        """The batches of the epochs left, records prepared in this process (``pool`` None) or by ``pool``."""
        while self.max_epochs is None or self.epoch < self.max_epochs:
            self.dataset.set_epoch(self.epoch)
            resume_position, replay = self._position, set(self._pending)
            self._batcher = BucketBatcher(self.batch_size)
            index, batches = -1, 0
            records = self._to_prepare(resume_position, replay)
            if pool is None:
                prepared = ((i, self._prepare_or_skip(record, i)) for i, record in records)
            else:
                prepared = self._prepared_in_workers(records, pool)
            for index, outcome in prepared:
                self._position = max(resume_position, index + 1)
                self.seen += index >= resume_position  # a replayed record was counted before the resume
                if isinstance(outcome, SkipSample):
                    self._skip(index, str(outcome))
                    continue
                key, item = outcome
                batch = self._batcher.add(key, (index, item))
                if batch is not None:
                    batches += 1
                    self.used += len(batch)
                    yield self.collate([item for _, item in batch])
            if not self.drop_last:
                for batch in self._batcher.flush():
                    batches += 1
                    self.used += len(batch)
                    yield self.collate([item for _, item in batch])
            if index < 0 and resume_position == 0:
                raise ValueError(f"The dataset has no record for rank {self.rank} of {self.world_size}.")
            if batches == 0 and resume_position == 0:  # would loop over the data forever without a batch
                raise ValueError(
                    f"A whole epoch gave no batch of {self.batch_size} on rank {self.rank}: no bucket filled one "
                    f"({len(self._batcher.pending())} usable records, skipped: {dict(self.skipped)}). Use a smaller "
                    "batch size or more data."
                )
            self.dropped += len(self._batcher.pending())
            self.epoch += 1
            self._position, self._pending, self._batcher = 0, [], None


def caption_column_weights(caption_column: str | Mapping[str, float] | None) -> dict[str, float]:
    """The caption columns of ``caption_column`` with their weights: ``"text"`` -> ``{"text": 1.0}``;
    ``"dense=0.7,short=0.3"`` (the command line's form) or ``{"dense": 0.7, "short": 0.3}`` as given; None -> ``{}``.

    Raises:
        ValueError: an empty column name, a weight that is not a positive number, or a column named twice.
    """
    if caption_column is None:
        return {}
    if isinstance(caption_column, Mapping):
        pairs = [(str(name), weight) for name, weight in caption_column.items()]
    elif "=" in caption_column or "," in caption_column:
        pairs = []
        for part in caption_column.split(","):
            name, sep, weight = part.partition("=")
            try:
                pairs.append((name.strip(), float(weight) if sep else 1.0))
            except ValueError:
                raise ValueError(
                    f"Caption column weight {weight!r} in {caption_column!r} is not a number: write "
                    "'column=weight,column=weight', e.g. 'dense=0.7,short=0.3'."
                ) from None
    else:
        pairs = [(caption_column, 1.0)]
    names = [name for name, _ in pairs]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise ValueError(f"Caption columns {caption_column!r}: each column must be named, and only once.")
    bad = [f"{name}={weight}" for name, weight in pairs if not (isinstance(weight, (int, float)) and weight > 0)]
    if bad:
        raise ValueError(f"Caption column weights must be positive numbers, got {bad} in {caption_column!r}.")
    return {name: float(weight) for name, weight in pairs}


def micro_conditions(sizes: list[tuple[int, int]], ratios: list[float]) -> dict[str, torch.Tensor]:
    """``resolution`` (B, 2) original (height, width) and ``aspect_ratio`` (B, 1) bucket ratio, both float."""
    return {
        "resolution": torch.tensor(sizes, dtype=torch.float32).reshape(-1, 2),
        "aspect_ratio": torch.tensor(ratios, dtype=torch.float32).reshape(-1, 1),
    }


class ImageTextLoader(StreamingBatchLoader):
    """Batches of raw images for training with on-the-fly encoding.

    Each batch: ``pixel_values`` (B, 3, H, W) in [-1, 1] (one bucket), ``text`` (list of B captions) when
    ``caption_column`` is set, ``label`` (B,) long when ``label_column`` is set, and the micro-conditions
    ``resolution`` (B, 2) original (height, width) and ``aspect_ratio`` (B, 1) bucket ratio.

    Args:
        dataset: the source (see :func:`load_streaming_dataset`).
        resolution: base resolution in pixels. With ``multi_scale`` it picks the bucket table (256/512/1024/2048),
            otherwise every image is resized and centre-cropped to ``resolution`` x ``resolution``.
        multi_scale: use the aspect-ratio buckets.
        image_column, caption_column, label_column: column names (``caption_column``/``label_column`` may be None,
            not both). ``caption_column`` may name several columns with weights (``{"dense": 0.7, "short": 0.3}`` or
            ``"dense=0.7,short=0.3"``): each record's caption is drawn from them (:meth:`pick_caption`).
        min_size: skip images whose shorter side is below this many pixels.
        **kwargs: the arguments of :class:`StreamingBatchLoader` (batch_size, shuffle_buffer_size, seed, rank, ...).
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        *,
        resolution: int,
        multi_scale: bool = False,
        image_column: str = "image",
        caption_column: str | Mapping[str, float] | None = "text",
        label_column: str | None = None,
        min_size: int = 0,
        **kwargs: Any,
    ):
        if caption_column is None and label_column is None:
            raise ValueError("Set `caption_column` or `label_column` (or both): a sample needs a condition.")
        _require_iterable_dataset(dataset)
        caption_weights = caption_column_weights(caption_column)
        columns = dataset.column_names
        for column in (image_column, *caption_weights, label_column):
            if column is not None and columns is not None and column not in columns:
                raise ValueError(f"Column {column!r} is not in the dataset; its columns are {columns}.")
        if columns is not None and isinstance((dataset.features or {}).get(image_column), datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        (nearest_bucket(1, 1, resolution) if multi_scale else square_bucket(resolution))  # validates `resolution`
        super().__init__(dataset, **kwargs)
        self.resolution, self.multi_scale, self.min_size = resolution, multi_scale, min_size
        self.image_column, self.caption_column, self.label_column = image_column, caption_column, label_column
        #: Each caption column with its weight (one column: weight 1).
        self.caption_weights = caption_weights

    def bucket_for(self, height: int, width: int) -> Bucket:
        """The bucket an image of this size goes to."""
        return nearest_bucket(height, width, self.resolution) if self.multi_scale else square_bucket(self.resolution)

    def pick_caption(self, record: dict[str, Any], index: int) -> str:
        """The caption of the ``index``-th record of the epoch: its one caption column's, or with several columns one
        drawn by their weights among those that hold a caption for this record, from a generator seeded by
        ``(seed, epoch, rank, index)`` (the same draw after a resume, with any number of workers).

        Raises:
            SkipSample: the record has no (non-empty) caption in any of the columns.
        """
        texts = {column: record.get(column) for column in self.caption_weights}
        usable = [column for column, text in texts.items() if isinstance(text, str) and text.strip()]
        if not usable:
            raise SkipSample("empty caption")
        if len(self.caption_weights) == 1:
            return texts[usable[0]].strip()
        weights = np.array([self.caption_weights[column] for column in usable], np.float64)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, index, _CAPTION_STREAM])
        return texts[usable[int(rng.choice(len(usable), p=weights / weights.sum()))]].strip()

    def prepare(self, record: dict[str, Any], index: int) -> tuple[Hashable, dict[str, Any]]:
        item: dict[str, Any] = {}
        if self.caption_column is not None:
            item["text"] = self.pick_caption(record, index)
        if self.label_column is not None:
            item["label"] = int(record[self.label_column])
        image = decode_image(record[self.image_column])
        if min(image.size) < self.min_size:
            raise SkipSample(f"image too small ({image.width}x{image.height} < {self.min_size})")
        bucket = self.bucket_for(image.height, image.width)
        item["pixel_values"] = image_to_tensor(resize_and_center_crop(image, bucket.height, bucket.width))
        item["size"], item["ratio"] = (image.height, image.width), bucket.ratio
        return bucket, item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"pixel_values": torch.stack([item["pixel_values"] for item in items])}
        if self.caption_column is not None:
            batch["text"] = [item["text"] for item in items]
        if self.label_column is not None:
            batch["label"] = torch.tensor([item["label"] for item in items], dtype=torch.long)
        batch.update(micro_conditions([item["size"] for item in items], [item["ratio"] for item in items]))
        return batch

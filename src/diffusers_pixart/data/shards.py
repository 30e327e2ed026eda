"""Resumable, atomic writing of dataset shards (parquet) by several processes.

Each process (rank) writes ``{prefix}-r{rank:03d}-{shard:05d}.parquet`` files and a ``progress-r{rank:03d}.json`` that
records, after every shard, how many rows it holds and the state of the loader that produced them. A shard is written
to a temporary file and renamed, then the progress file is replaced the same way: a killed run leaves complete shards
only, and a rerun resumes from the last recorded state (rewriting, with the same rows, a shard that was renamed but
not yet recorded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from ..atomic import atomic_file, write_json_atomic


class ShardWriter:
    """Buffers rows and writes them as parquet shards of about ``rows_per_shard`` rows, recording progress.

    Args:
        output_dir: the folder of the shards (created if missing).
        features: the ``datasets.Features`` of a row (``None`` infers them from the rows).
        rank, world_size: this process and the number of processes; a resumed run must use the same ``world_size``.
        rows_per_shard: a shard is written as soon as this many rows are buffered.
        prefix: the shards' file-name prefix.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        features: datasets.Features | None,
        *,
        rank: int = 0,
        world_size: int = 1,
        rows_per_shard: int = 1000,
        prefix: str = "data",
    ):
        if rows_per_shard < 1:
            raise ValueError(f"`rows_per_shard` must be at least 1, got {rows_per_shard}.")
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.features, self.rank, self.world_size = features, rank, world_size
        self.rows_per_shard, self.prefix = rows_per_shard, prefix
        self.progress_path = self.output_dir / f"progress-r{rank:03d}.json"
        self._rows: list[dict[str, Any]] = []
        self._progress: dict[str, Any] = {"world_size": world_size, "shards": 0, "rows": 0, "loader_state": None}
        if self.progress_path.exists():
            saved = json.loads(self.progress_path.read_text())
            if saved["world_size"] != world_size:
                raise ValueError(
                    f"{self.output_dir} was written by {saved['world_size']} processes; resume it with as many "
                    f"(this run has {world_size})."
                )
            self._progress = saved

    @property
    def loader_state(self) -> dict[str, Any] | None:
        """The loader state recorded with the last written shard (``None`` for a fresh folder)."""
        return self._progress["loader_state"]

    @property
    def rows_written(self) -> int:
        """Rows in written shards plus rows buffered."""
        return self._progress["rows"] + len(self._rows)

    def add(self, rows: list[dict[str, Any]], loader_state: dict[str, Any]) -> None:
        """Buffer ``rows``; ``loader_state`` is the state of the loader right after producing them."""
        self._rows.extend(rows)
        if len(self._rows) >= self.rows_per_shard:
            self.flush(loader_state)

    def flush(self, loader_state: dict[str, Any]) -> None:
        """Write the buffered rows (if any) as one shard and record ``loader_state`` as the resume point."""
        if self._rows:
            path = self.output_dir / f"{self.prefix}-r{self.rank:03d}-{self._progress['shards']:05d}.parquet"
            with atomic_file(path) as temporary:
                datasets.Dataset.from_list(self._rows, features=self.features).to_parquet(str(temporary))
            self._progress["shards"] += 1
            self._progress["rows"] += len(self._rows)
            self._rows = []
        self._progress["loader_state"] = loader_state
        write_json_atomic(self.progress_path, self._progress)


def write_loader(
    loader,
    writer: ShardWriter,
    to_rows: Callable[[dict[str, Any]], list[dict[str, Any]]],
    max_samples: int | None = None,
) -> int:
    """Turn every batch of ``loader`` (a :class:`~.streaming.StreamingBatchLoader`) into rows and write them,
    resuming from the loader state that ``writer`` recorded last.

    Args:
        loader: the batches' source, of ``writer``'s rank.
        writer: where the rows go.
        to_rows: batch -> rows.
        max_samples: stop once this process has written at least this many rows (whole batches).

    Returns:
        The rows this process has written in the folder, earlier runs included.
    """
    if writer.loader_state is not None:
        loader.load_state_dict(writer.loader_state)
    if max_samples is not None and writer.rows_written >= max_samples:
        return writer.rows_written
    for batch in loader:
        writer.add(to_rows(batch), loader.state_dict())
        if max_samples is not None and writer.rows_written >= max_samples:
            break
    writer.flush(loader.state_dict())
    return writer.rows_written

"""What a training run logged, read back: the scalars the engine wrote to TensorBoard under ``<output_dir>/logs``."""

from __future__ import annotations

import os
from pathlib import Path


def read_loss_curve(run_dir: str | os.PathLike, tag: str = "loss") -> list[tuple[int, float]]:
    """The ``(step, value)`` pairs of a scalar the training engine logged to TensorBoard under ``run_dir/logs``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(Path(run_dir, "logs").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            points.update((event.step, event.value) for event in accumulator.Scalars(tag))
    return sorted(points.items())

"""Checkpoints of a training run: where the run stands, saving and loading it, and finding the one to resume from.

A checkpoint is the folder ``<output_dir>/checkpoints/checkpoint-<step>`` that accelerate's ``save_state`` writes:
the trained module's weights (``model.safetensors``; with a LoRA adapter only the adapter's), the optimizer, the
learning-rate schedule, the random states and the objects registered for checkpointing (the EMA, if any, then the
:class:`TrainingProgress`), plus ``data_state_<rank>.json`` per process when the loader can tell its position
(``state_dict``/``load_state_dict``). Every process writes into ``.tmp-checkpoint-<step>``, which the main process
renames when all are done: a run killed while saving leaves the previous checkpoints as they were.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import safe_open

from ..atomic import remove, replace_dir, temporary_path

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"


class TrainingProgress:
    """Where the run stands: optimizer steps done, epoch, batches consumed in the epoch. Saved in checkpoints."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.step, self.epoch, self.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The complete checkpoints ``checkpoint-<step>`` of a folder, oldest first (unfinished ones are dot-prefixed)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def find_checkpoint(resume_from_checkpoint: str | None, checkpoints_dir: Path) -> Path | None:
    """The checkpoint ``--resume_from_checkpoint`` names: ``latest`` (None when there is none yet) or a folder.

    Raises:
        FileNotFoundError: the named folder does not exist.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(checkpoints_dir)
        return found[-1] if found else None
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume_from_checkpoint}: no such checkpoint folder.")
    return path


def check_checkpoint_shapes(path: Path, expected: Mapping[str, torch.Tensor], what: str) -> None:
    """Compare the checkpoint's model tensors with ``expected`` (the state a checkpoint of this run holds).

    Raises:
        ValueError: listing the tensors whose shapes differ, that are missing, or that the model lacks; ``what`` names
            the model in the message.
    """
    weights = path / "model.safetensors"
    if not weights.is_file():  # DeepSpeed and FSDP checkpoints are sharded: accelerate checks them on load
        return
    with safe_open(str(weights), framework="pt") as f:
        saved = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    shapes = {key: tuple(value.shape) for key, value in expected.items()}
    problems = [
        f"{k}: checkpoint {saved[k]} vs model {shapes[k]}"
        for k in sorted(saved.keys() & shapes.keys())
        if saved[k] != shapes[k]
    ]
    problems += [f"{k}: missing from the checkpoint" for k in sorted(shapes.keys() - saved.keys())]
    problems += [f"{k}: not in the model" for k in sorted(saved.keys() - shapes.keys())]
    if problems:
        raise ValueError(
            f"Checkpoint {path} does not fit this {what} ({len(problems)} tensors differ): " + "; ".join(problems[:8])
        )


def save_checkpoint(
    accelerator: Accelerator, checkpoints_dir: Path, step: int, data: Any, total_limit: int | None
) -> Path:
    """Save the full training state to ``checkpoints_dir/checkpoint-<step>``, atomically (see the module docstring);
    then keep the ``total_limit`` newest checkpoints (all when None). Every process calls this."""
    final = checkpoints_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = temporary_path(final)
    if accelerator.is_main_process:
        remove(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if hasattr(data, "state_dict"):
        (tmp / f"data_state_{accelerator.process_index}.json").write_text(json.dumps(data.state_dict()))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, final)
        if total_limit is not None:
            for old in list_checkpoints(checkpoints_dir)[:-total_limit]:
                remove(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path, data: Any, strict: bool) -> None:
    """Restore the training state of the checkpoint ``path`` (``strict``: the model file holds every weight) and the
    loader's position when it has one."""
    accelerator.load_state(str(path), strict=strict)
    if hasattr(data, "load_state_dict"):
        state_file = path / f"data_state_{accelerator.process_index}.json"
        data.load_state_dict(json.loads(state_file.read_text(encoding="utf-8")))


def data_position(data: Any, progress: TrainingProgress, batch_size: int) -> tuple[int, int]:
    """(epoch, sample) the data continues from: a stateful loader's epoch and records read in it, else the run's
    epoch and batches consumed in it times the batch size."""
    if hasattr(data, "state_dict"):
        state = data.state_dict()
        return state["epoch"], state["position"]
    return progress.epoch, progress.batches_in_epoch * batch_size

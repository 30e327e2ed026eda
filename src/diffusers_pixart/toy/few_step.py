"""The few-step settings measured on the toy world (issue 20): the teacher with DPM-Solver and CFG against its LCM
student (the model with its LCM-LoRA, LCM sampler, no guidance), the LCM-LoRA fused into the weights as ``pixart
generate --scheduler lcm`` serves it, and once unfused (the adapter's layers kept, as ``load_lora_weights`` leaves it).

Shared by ``examples/toy/run_distill.py`` (toy CompBench and time of each) and ``benchmarks/bench_inference.py``
(``--configs toy-few-step``: the prompt-to-PNG time of each, interleaved in one run).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..default_model import load_sampling_pipeline
from ..pipelines.pixart_alpha import PixArtAlphaPipeline


class FewStepSetting(NamedTuple):
    """How one row of the measurement samples."""

    student: bool  # with the LCM-LoRA
    sampler: str  # a name of diffusers_pixart.schedulers.SCHEDULERS
    steps: int
    guidance: float
    fused: bool = False  # the LCM-LoRA merged into the weights (default_model.fuse_lora_weights)


#: The rows: the teacher at its default 20 steps, at 4 steps (the baseline distillation must beat), the student (fused,
#: as the CLI serves it) at 1, 2, 4 and 8 steps, and the unfused student at 4 steps (what fusing saves).
FEW_STEP_SETTINGS = {
    "teacher, DPM-Solver 20 steps": FewStepSetting(False, "dpm", 20, 4.5),
    "teacher, DPM-Solver 4 steps": FewStepSetting(False, "dpm", 4, 4.5),
    "student (LCM-LoRA), 1 step": FewStepSetting(True, "lcm", 1, 0.0, fused=True),
    "student (LCM-LoRA), 2 steps": FewStepSetting(True, "lcm", 2, 0.0, fused=True),
    "student (LCM-LoRA), 4 steps": FewStepSetting(True, "lcm", 4, 0.0, fused=True),
    "student (LCM-LoRA), 8 steps": FewStepSetting(True, "lcm", 8, 0.0, fused=True),
    "student (LCM-LoRA unfused), 4 steps": FewStepSetting(True, "lcm", 4, 0.0),
}
#: The setting the others are compared with.
TEACHER_SETTING = "teacher, DPM-Solver 20 steps"


def few_step_pipeline(
    model: str | os.PathLike, setting: FewStepSetting, lora: str | os.PathLike | None
) -> PixArtAlphaPipeline:
    """The pipeline of ``setting``: ``model`` loaded, with the LCM-LoRA ``lora`` for the student (fused if the setting
    says so), its sampler set and the progress bar off (:func:`..default_model.load_sampling_pipeline`, as ``pixart
    generate`` loads it).

    Raises:
        ValueError: a student setting without ``lora``.
    """
    if setting.student and lora is None:
        raise ValueError(f"The student setting {setting} needs the LCM-LoRA: pass `lora` (an lcm_lora/ folder).")
    pipe, _ = load_sampling_pipeline(
        str(model), setting.sampler, str(lora) if setting.student else None, fuse_lora=setting.fused
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe

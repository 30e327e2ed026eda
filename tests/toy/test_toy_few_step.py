"""The few-step settings of the toy measurement, and the benchmark's teacher-against-student configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, LCMScheduler
from peft.tuners.tuners_utils import BaseTunerLayer
from tolerances import IMAGES

from diffusers_pixart.default_model import shipped_lcm_lora
from diffusers_pixart.toy.few_step import FEW_STEP_SETTINGS, TEACHER_SETTING, few_step_pipeline

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_inference.py"
needs_shipped_lora = pytest.mark.skipif(shipped_lcm_lora(None) is None, reason="the package ships no LCM-LoRA")


@needs_shipped_lora
def test_the_student_settings_load_the_lcm_lora_fused_or_not_and_the_teacher_none(tmp_path):
    teacher = few_step_pipeline(shipped_lcm_lora(None).parent, FEW_STEP_SETTINGS[TEACHER_SETTING], None)
    assert type(teacher.scheduler) is DPMSolverMultistepScheduler
    assert not getattr(teacher.transformer, "_hf_peft_config_loaded", False)
    unfused = few_step_pipeline(
        shipped_lcm_lora(None).parent, FEW_STEP_SETTINGS["student (LCM-LoRA unfused), 4 steps"], shipped_lcm_lora(None)
    )
    assert type(unfused.scheduler) is LCMScheduler and unfused.transformer.active_adapters()
    student = FEW_STEP_SETTINGS["student (LCM-LoRA), 4 steps"]
    fused = few_step_pipeline(shipped_lcm_lora(None).parent, student, shipped_lcm_lora(None))
    assert student.fused and type(fused.scheduler) is LCMScheduler
    assert not any(isinstance(module, BaseTunerLayer) for module in fused.transformer.modules())  # merged, layers gone

    def image(pipe) -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        return pipe("a red circle", num_inference_steps=4, guidance_scale=0.0, generator=generator, output_type="np")[0]

    assert np.abs(image(fused) - image(unfused)).max() <= IMAGES
    assert np.abs(image(fused) - image(teacher)).max() > 0.1  # the LoRA is in the weights
    with pytest.raises(ValueError, match="needs the LCM-LoRA"):
        few_step_pipeline(shipped_lcm_lora(None).parent, student, None)


@needs_shipped_lora
def test_the_benchmark_times_every_setting_in_one_run(tmp_path):
    results = tmp_path / "few_step.jsonl"
    command = [sys.executable, str(BENCH), "--configs", "toy-few-step", "--repeats", "1", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, "--json", str(results)], check=True, env=env, capture_output=True, timeout=600)
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["config"] == "toy-few-step" and list(row["settings"]) == list(FEW_STEP_SETTINGS)
    assert row["settings"][TEACHER_SETTING]["vs_teacher"] == 1.0
    assert all(result["seconds"] > 0 for result in row["settings"].values())

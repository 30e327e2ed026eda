"""What a training run reports: the logged loss (a mean over --logging_steps), skipped samples, the data summary, the
resume position, and a one-line error for FSDP/DeepSpeed launches on a machine without GPUs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from launching import free_port, run_launch
from PIL import Image
from test_training_engine import make_config, raw_batches, train_on_captions
from test_training_stage2 import env, write_config

from diffusers_pixart import tiny
from diffusers_pixart.training.diffusion import IDDPMDiffusion
from diffusers_pixart.training.logs import read_loss_curve
from diffusers_pixart.training.stages import main_stage2

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_stage2_alignment.py"


def test_logged_loss_is_the_mean_over_the_logging_steps(tmp_path, monkeypatch):
    losses = []  # of every step
    loss = IDDPMDiffusion.loss

    def recording_loss(self, output, noised):
        result = loss(self, output, noised)
        losses.append(result["loss"].mean().item())
        return result

    monkeypatch.setattr(IDDPMDiffusion, "loss", recording_loss)
    config = make_config(tmp_path, max_train_steps=5, logging_steps=2, report_to="tensorboard")
    train_on_captions(config, tiny.make_pipeline(), raw_batches(n=3))
    assert len(losses) == 5 and len(set(losses)) == 5
    logged = read_loss_curve(tmp_path)
    assert [step for step, _ in logged] == [2, 4]  # step 5 ends no window of 2
    # tensorboard stores float32: relative 1e-6.
    assert logged[0][1] == pytest.approx(np.mean(losses[:2]), rel=1e-6)
    assert logged[1][1] == pytest.approx(np.mean(losses[2:4]), rel=1e-6)
    assert read_loss_curve(tmp_path, "data/used") == [(5, 10.0)]  # the end-of-run summary: 5 batches of 2


def run_script(*args, timeout=240):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def lines_of(stream: str) -> list[str]:
    """The lines as a terminal shows them: after the last carriage return of each (tqdm redraws with one)."""
    return [line.split("\r")[-1] for line in stream.split("\n")]


def test_stage2_reports_skipped_samples_a_summary_and_where_it_resumed(training_assets, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(training_assets / "toy", data)
    Image.new("RGB", (1, 1), (255, 0, 0)).save(data / "dot.png")
    with open(data / "metadata.jsonl", "a") as metadata:
        metadata.write("\n" + json.dumps({"file_name": "dot.png", "text": "a red dot"}))
    out = tmp_path / "out"
    # One epoch is 8 steps of 2 (16 images); the 1x1 image is read within the first 9 steps whatever the shuffle.
    config = write_config(tmp_path / "run.yaml", training_assets, out, train_data=str(data), checkpointing_steps=9)
    first = run_script("--config", str(config), "--max_train_steps", "9", "--report_to", "tensorboard")
    assert first.returncode == 0, first.stderr[-3000:]
    lines = lines_of(first.stderr)
    skip = [line for line in lines if "skipped record" in line]
    assert len(skip) == 1 and skip[0].startswith("rank 0, epoch 0: skipped record ")  # on its own line
    assert skip[0].endswith(": image too small (1x1 < 16) (1 so far)")
    summary = "data, 1 process(es) since the start of training: 19 seen, 18 used, 1 skipped, "
    assert summary + "0 dropped (incomplete buckets at epoch ends), 0 waiting in buckets" in lines
    assert "  skipped, image too small: 1" in lines
    assert read_loss_curve(out, "data/skipped/image_too_small") == [(9, 1.0)]

    state = json.loads((out / "checkpoints/checkpoint-9/data_state_0.json").read_text())
    second = run_script("--config", str(config), "--max_train_steps", "10", "--resume_from_checkpoint", "latest")
    assert second.returncode == 0, second.stderr[-3000:]
    lines = lines_of(second.stderr)
    assert f"resumed from checkpoint-9: step 9, epoch {state['epoch']}, sample {state['position']}" in lines
    assert any(line.startswith("data, 1 process(es) since the start of training: ") for line in lines)
    assert "  skipped, image too small: 1" in lines  # counted once, across the resume


def test_min_image_side_zero_trains_on_every_image(training_assets, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (1, 1), (255, 0, 0)).save(data / "dot.png")
    Image.new("RGB", (1, 1), (0, 0, 255)).save(data / "dot2.png")
    rows = [{"file_name": "dot.png", "text": "a red dot"}, {"file_name": "dot2.png", "text": "a blue dot"}]
    (data / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    config = write_config(tmp_path / "run.yaml", training_assets, tmp_path / "out", train_data=str(data))
    assert main_stage2(["--config", str(config), "--max_train_steps", "1"]) == 2
    assert "A whole epoch gave no batch of 2" in capsys.readouterr().err  # both skipped by default
    assert main_stage2(["--config", str(config), "--max_train_steps", "1", "--min_image_side", "0"]) == 0
    assert main_stage2(["--config", str(config), "--min_image_side", "-1"]) == 2
    assert "--min_image_side must be >= 0" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without GPUs")
def test_fsdp_and_deepspeed_launches_without_gpus_fail_in_one_line(training_assets, tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path / "run.yaml", training_assets, tmp_path / "out", max_train_steps=1)
    for variable in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        with monkeypatch.context() as patch:
            patch.setenv(variable, "true")
            assert main_stage2(["--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: FSDP and DeepSpeed need GPUs, and this launch (with ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()

    # Through accelerate launch with the example config (one process): the script's line, not accelerate's error.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "examples/configs/fsdp.yaml"]
    launch += ["--num_processes", "1", "--main_process_port", str(free_port()), SCRIPT, "--config", config]
    result = run_launch(launch, env=env(), cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert "error: FSDP and DeepSpeed need GPUs, and this launch (with FSDP) has none" in result.stderr
    assert "no available devices found" not in result.stderr
    assert not (tmp_path / "out").exists()

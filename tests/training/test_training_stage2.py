"""Stage 2 end to end in real processes: two-process DDP on CPU, and a run killed with SIGKILL then resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import torch
import yaml
from launching import free_port, run_launch
from safetensors.torch import load_file

from diffusers_pixart.training.checkpoints import list_checkpoints
from diffusers_pixart.training.stages import main_stage2

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_stage2_alignment.py"

# Run inside `accelerate launch`: records the captions each rank trains on and each rank's final weights.
DDP_PROBE = """
import json, os, sys
import torch
from diffusers_pixart.training import conditioning, stages

rank, out = int(os.environ["RANK"]), sys.argv[1]
seen, pipelines = [], []
encode, train = conditioning.CaptionConditioning.encode, stages.train

def recording_encode(self, batch, device):
    seen.extend(batch["text"])
    return encode(self, batch, device)

def recording_train(config, pipeline, *args, **kwargs):
    pipelines.append(pipeline)
    return train(config, pipeline, *args, **kwargs)

conditioning.CaptionConditioning.encode, stages.train = recording_encode, recording_train
code = stages.main_stage2(sys.argv[2:])
torch.save(pipelines[0].transformer.state_dict(), os.path.join(out, f"weights_{rank}.pt"))
json.dump(seen, open(os.path.join(out, f"seen_{rank}.json"), "w"))
sys.exit(code)
"""


def write_config(path, training_assets, out, **overrides):
    values = {
        "pretrained_model_name_or_path": str(training_assets / "base"),
        "train_data": str(training_assets / "toy"),
        "output_dir": str(out),
        "resolution": 32,
        "train_batch_size": 2,
        "learning_rate": 1e-3,
        "lr_warmup_steps": 1,
        "validation_steps": 0,
        "report_to": "none",
        "shuffle_buffer_size": 16,
    }
    values.update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def env():
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_two_processes_read_different_data_and_end_with_identical_weights(training_assets, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(DDP_PROBE)
    config = write_config(
        tmp_path / "run.yaml", training_assets, tmp_path / "out", max_train_steps=3, checkpointing_steps=3
    )
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += [
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    result = run_launch([*command, probe, tmp_path, "--config", config], env=env(), cwd=ROOT, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [json.loads((tmp_path / f"seen_{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6  # 3 steps x batch 2 on each rank
    assert not set(seen[0]) & set(seen[1]), seen  # within an epoch (8 records each) the ranks read different records
    weights = [torch.load(tmp_path / f"weights_{rank}.pt") for rank in (0, 1)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
    saved = load_file(str(tmp_path / "out/checkpoints/checkpoint-3/model.safetensors"))
    assert {k for k in saved} == set(weights[0])
    assert (tmp_path / "out/checkpoints/checkpoint-3/data_state_1.json").is_file()
    assert (tmp_path / "out/pipeline/model_index.json").is_file()


def test_sigkill_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(training_assets, tmp_path):
    steps = 30
    common = dict(max_train_steps=steps, checkpointing_steps=2, use_ema=True, ema_decay=0.9)
    full = write_config(tmp_path / "full.yaml", training_assets, tmp_path / "full", **common)
    killed_out = tmp_path / "killed"
    # The interrupted run loads its data in two worker processes, the uninterrupted one in its own process.
    killed = write_config(tmp_path / "killed.yaml", training_assets, killed_out, dataloader_num_workers=2, **common)

    process = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(killed)], env=env(), cwd=ROOT)
    deadline = time.time() + 120
    while not list_checkpoints(killed_out / "checkpoints") and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    last = list_checkpoints(killed_out / "checkpoints")[-1]
    assert int(last.name.split("-")[1]) < steps

    resume = [sys.executable, str(SCRIPT), "--config", str(killed), "--resume_from_checkpoint", "latest"]
    assert subprocess.run(resume, env=env(), cwd=ROOT, timeout=240).returncode == 0
    assert subprocess.run([sys.executable, str(SCRIPT), "--config", str(full)], env=env(), cwd=ROOT).returncode == 0

    final = f"checkpoints/checkpoint-{steps}"
    a = load_file(str(tmp_path / "full" / final / "model.safetensors"))
    b = load_file(str(killed_out / final / "model.safetensors"))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-6, diff
    ema_a = load_file(str(tmp_path / "full/pipeline/transformer/diffusion_pytorch_model.safetensors"))
    ema_b = load_file(str(killed_out / "pipeline/transformer/diffusion_pytorch_model.safetensors"))
    assert max((ema_a[k] - ema_b[k]).abs().max().item() for k in ema_a) <= 1e-6


def test_stage2_rejects_bad_input_before_training(training_assets, tmp_path, capsys):
    empty = tmp_path / "empty.parquet"
    datasets.Dataset.from_dict({"image": [], "text": []}).to_parquet(str(empty))
    cases = [
        ({"train_data": str(empty)}, "no record"),
        ({"caption_column": "caption"}, "Column 'caption' is not in the dataset"),
        ({"resolution": 40}, "multiple of the patch size"),
        ({"features": str(training_assets / "toy")}, "exactly one of --train_data"),
        ({"resume_from_checkpoint": str(tmp_path / "missing")}, "no such checkpoint folder"),
    ]
    for overrides, message in cases:
        config = write_config(tmp_path / "bad.yaml", training_assets, tmp_path / "out", max_train_steps=1, **overrides)
        assert main_stage2(["--config", str(config)]) == 2, overrides
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out/checkpoints").exists()


def test_example_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    from diffusers_pixart.models.pixart_transformer import PixArtBlock
    from diffusers_pixart.training.config import parse_config
    from diffusers_pixart.training.stages import Stage2Config

    configs = ROOT / "examples" / "configs"
    kinds = {name: load_config_from_file(str(configs / f"{name}.yaml")).distributed_type for name in
             ("single_gpu", "multi_gpu", "multi_node", "deepspeed_zero2", "fsdp")}  # fmt: skip
    assert [str(kind).split(".")[-1] for kind in kinds.values()] == [
        "NO",
        "MULTI_GPU",
        "MULTI_GPU",
        "DEEPSPEED",
        "FSDP",
    ]
    fsdp = load_config_from_file(str(configs / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == PixArtBlock.__name__
    config = parse_config(Stage2Config, ["--config", str(configs / "stage2_alignment.yaml")])
    assert (config.learning_rate, config.adam_epsilon, config.resolution) == (2e-5, 1e-10, 256)

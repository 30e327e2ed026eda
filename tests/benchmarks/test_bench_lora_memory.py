"""bench_lora_memory.py: one measured step of a tiny model (LoRA and full), the README table from a results file,
and its command-line errors."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_lora_memory.py"


@pytest.fixture
def bench(monkeypatch):
    """The benchmark module with a tiny transformer in place of XL/2."""
    spec = importlib.util.spec_from_file_location("bench_lora_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = dict(module.XL2, num_attention_heads=2, attention_head_dim=8, num_layers=2, cross_attention_dim=16)
    monkeypatch.setattr(module, "XL2", tiny)
    return module


@pytest.mark.parametrize("trained", ["lora", "full"])
def test_a_step_trains_the_adapter_or_every_weight(bench, trained):
    record = bench.run_one(64, "bf16", True, "adamw", 1, "cpu", trained)
    model = bench.build_transformer(64, bench.torch.float32, bench.torch.device("cpu"))
    total = sum(p.numel() for p in model.parameters())
    assert (record["trained"], record["steps"]) == (trained, 1)
    if trained == "full":  # every weight trained, kept in float32 under bf16 autocast
        assert (record["trained_parameters"], record["base_parameters"]) == (total, 0)
    else:  # a rank-16 adapter on the attention layers beside the frozen base
        assert record["base_parameters"] == total and 0 < record["trained_parameters"] < total
    assert record["peak_memory_gb"] > 0 and math.isfinite(record["loss"])


def record(resolution: int, dtype: str, checkpointing: bool, optimizer: str, peak: float, **extra) -> dict:
    return {
        **extra,
        "resolution": resolution,
        "base_dtype": dtype,
        "gradient_checkpointing": checkpointing,
        "optimizer": optimizer,
        "optimizer_class": {"adamw": "torch.optim.adamw.AdamW", "came": "came_pytorch.CAME.CAME"}[optimizer],
        "peak_memory_gb": peak,
        "step_time_s": 12.4,
        "load_average": [1.5, 1.0, 1.0],
    }


def test_table_orders_rows_from_the_largest_configuration_to_the_leanest(tmp_path):
    results = [
        record(1024, "bf16", True, "came", 4.5),
        record(512, "bf16", True, "adamw", 2.55),
        record(512, "fp32", False, "adamw", 8.02),
        record(1024, "bf16", True, "adamw", 14.1, trained="full"),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = subprocess.run([sys.executable, SCRIPT, "--table", "--out", path], capture_output=True, text=True, check=True)
    rows = out.stdout.strip().splitlines()
    assert rows[0].startswith("| trained | resolution | base dtype |")
    assert rows[2:] == [  # records without "trained" are LoRA steps
        "| LoRA | 512 px | fp32 | off | adamw (torch) | 8.02 | 12 | 1.5 |",
        "| LoRA | 512 px | bf16 | on | adamw (torch) | 2.55 | 12 | 1.5 |",
        "| LoRA | 1024 px | bf16 | on | came (came_pytorch) | 4.50 | 12 | 1.5 |",
        "| all weights | 1024 px | fp32, bf16 autocast | on | adamw (torch) | 14.10 | 12 | 1.5 |",
    ]


def test_table_needs_an_existing_results_file(tmp_path):
    out = subprocess.run(
        [sys.executable, SCRIPT, "--table", "--out", tmp_path / "missing.json"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "--table needs --out naming an existing results file" in out.stderr

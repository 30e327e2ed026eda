"""bench_lora_memory.py's report: the README table from a results file, and its command-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_lora_memory.py"


def record(resolution: int, dtype: str, checkpointing: bool, optimizer: str, peak: float) -> dict:
    return {
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
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = subprocess.run([sys.executable, SCRIPT, "--table", "--out", path], capture_output=True, text=True, check=True)
    rows = out.stdout.strip().splitlines()
    assert rows[0].startswith("| resolution | base dtype |")
    assert rows[2:] == [
        "| 512 px | fp32 | off | adamw (torch) | 8.02 | 12 | 1.5 |",
        "| 512 px | bf16 | on | adamw (torch) | 2.55 | 12 | 1.5 |",
        "| 1024 px | bf16 | on | came (came_pytorch) | 4.50 | 12 | 1.5 |",
    ]


def test_table_needs_an_existing_results_file(tmp_path):
    out = subprocess.run(
        [sys.executable, SCRIPT, "--table", "--out", tmp_path / "missing.json"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "--table needs --out naming an existing results file" in out.stderr

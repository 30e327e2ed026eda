"""The benchmarks' peak FLOP/s: rate per core from CPU flags, the larger of nominal and measured, never >100%."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("common", Path(__file__).parents[2] / "benchmarks" / "common.py")
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

SAPPHIRE_RAPIDS = {
    "vendor_id": "GenuineIntel",
    "cpu family": "6",
    "flags": "sse sse2 avx fma avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8",
}
ZEN4 = {"vendor_id": "AuthenticAMD", "cpu family": "25", "flags": "sse sse2 avx fma avx2 avx512f avx512_bf16"}
ZEN5 = {"vendor_id": "AuthenticAMD", "cpu family": "26", "flags": "sse sse2 avx fma avx2 avx512f avx512_bf16"}
HASWELL = {"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "sse sse2 avx fma avx2"}
SANDY_BRIDGE = {"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "sse sse2 avx"}
OLD = {"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "sse sse2"}


@pytest.mark.parametrize(
    "cpuinfo, dtype, expected",
    [
        (SAPPHIRE_RAPIDS, torch.float32, 64),
        (SAPPHIRE_RAPIDS, torch.bfloat16, 1024),
        (SAPPHIRE_RAPIDS, torch.float16, 128),  # avx512_fp16 vectors, no amx_fp16 tiles
        ({**SAPPHIRE_RAPIDS, "flags": SAPPHIRE_RAPIDS["flags"] + " amx_fp16"}, torch.float16, 1024),
        ({**SAPPHIRE_RAPIDS, "flags": "sse avx fma avx2 avx512f avx512_bf16"}, torch.bfloat16, 128),
        (ZEN4, torch.float32, 32),
        (ZEN4, torch.bfloat16, 64),
        (ZEN5, torch.float32, 64),
        (ZEN5, torch.bfloat16, 128),
        (HASWELL, torch.float32, 32),
        (HASWELL, torch.bfloat16, 32),
        (SANDY_BRIDGE, torch.float32, 16),
        (OLD, torch.float32, 8),
        ({}, torch.float32, 8),
    ],
)
def test_flops_per_cycle_from_flags(cpuinfo: dict, dtype: torch.dtype, expected: int) -> None:
    rate, why = common.cpu_flops_per_cycle(cpuinfo, dtype)
    assert rate == expected
    assert why


def test_read_cpuinfo_takes_the_first_processor(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nflags\t\t: fpu avx2 fma\n\n"
        "processor\t: 1\nvendor_id\t: Other\n"
    )
    fields = common.read_cpuinfo(str(path))
    assert fields["vendor_id"] == "GenuineIntel"
    assert common.cpu_flops_per_cycle(fields, torch.float32)[0] == 32


@pytest.mark.parametrize("nominal, measured", [(100e9, 80e9), (100e9, 130e9)])
def test_cpu_peak_is_the_larger_of_nominal_and_measured(monkeypatch, nominal: float, measured: float) -> None:
    monkeypatch.setattr(common, "nominal_cpu_peak", lambda flops_per_cycle: nominal)
    monkeypatch.setattr(common, "measured_matmul_peak", lambda device, dtype: measured)
    peak, source = common.peak_flops(torch.device("cpu"), torch.float32, flops_per_cycle=64)
    assert peak == max(nominal, measured)
    assert "nominal 100" in source and f"{measured / 1e9:.0f}" in source and "64" in source


def test_fraction_of_peak_never_above_one(capsys) -> None:
    assert common.fraction_of_peak(50e9, 100e9) == 0.5
    assert capsys.readouterr().err == ""
    assert common.fraction_of_peak(130e9, 100e9) == 1.0
    assert "above the stated peak" in capsys.readouterr().err

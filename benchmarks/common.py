"""Shared pieces of the benchmarks: device and machine description, peak FLOP/s, timing, FLOP counting, memory.

Peak FLOP/s, as the benchmarks state it:

- CPU: the larger of two rates for the dtype, both printed. Nominal: threads x clock (the ``cpu MHz`` of
  ``/proc/cpuinfo``, the TSC rate under KVM) x FLOP per cycle per core derived from the CPU's flags by
  :func:`cpu_flops_per_cycle` (or ``--cpu-flops-per-cycle``). Measured: the best rate of a large matmul in the same
  process (turbo clocks can beat the nominal clock). A rate above the peak is printed as 100% with a note
  (:func:`fraction_of_peak`), never above.
- GPU: the datasheet dense rate of the card for the dtype (H100/H200 SXM: 989 TFLOP/s bf16, 67 TFLOP/s fp32).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode

#: Dense datasheet TFLOP/s by GPU name fragment and dtype.
GPU_PEAK_TFLOPS = {
    "H100": {torch.bfloat16: 989.0, torch.float16: 989.0, torch.float32: 67.0},
    "H200": {torch.bfloat16: 989.0, torch.float16: 989.0, torch.float32: 67.0},
    "A100": {torch.bfloat16: 312.0, torch.float16: 312.0, torch.float32: 19.5},
}


def pick_device(name: str) -> torch.device:
    """``auto`` gives CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def machine(device: torch.device) -> str:
    """One line naming the machine: CPU or GPU model, threads, torch version."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = platform.processor() or "cpu"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The fields of the first processor in ``/proc/cpuinfo`` (``flags``, ``vendor_id``, ``cpu family``, ...)."""
    fields: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def cpu_flops_per_cycle(cpuinfo: dict[str, str], dtype: torch.dtype) -> tuple[int, str]:
    """``(FLOP per cycle per core, why)`` of matmuls in ``dtype``, from the ``/proc/cpuinfo`` fields.

    FP32: the widest FMA the flags report, with two FMA units (the most an x86 core has, so an upper bound): AVX-512
    64 (2 x 16 lanes x 2), except on AMD before Zen 5 (``cpu family`` 25 or less: 512-bit ops on 256-bit pipes) 32;
    AVX2 with FMA 32; AVX without FMA 16 (separate add and multiply); SSE 8. bf16: AMX tiles (``amx_bf16``) 1024
    (16 x 16 x 32 multiply-adds per 16 cycles), AVX512-BF16 dot products (``avx512_bf16``) twice FP32, else FP32's
    rate (bf16 is computed in FP32). fp16 likewise with ``amx_fp16`` and ``avx512_fp16``.
    """
    flags = set(cpuinfo.get("flags", "").split())
    amd_256_bit_pipes = cpuinfo.get("vendor_id") == "AuthenticAMD" and int(cpuinfo.get("cpu family", "0")) <= 25
    if "avx512f" in flags and not amd_256_bit_pipes:
        fp32, why = 64, "avx512f: 2 FMA x 16 FP32 lanes x 2"
    elif "avx512f" in flags or {"avx2", "fma"} <= flags:
        fp32, why = (
            32,
            "2 FMA x 8 FP32 lanes x 2 (" + ("AMD AVX-512 on 256-bit pipes)" if "avx512f" in flags else "avx2+fma)"),
        )
    elif "avx" in flags:
        fp32, why = 16, "avx: 8 FP32 adds + 8 multiplies"
    else:
        fp32, why = 8, "sse: 4 FP32 adds + 4 multiplies"
    tiles, vectors = {torch.bfloat16: ("amx_bf16", "avx512_bf16"), torch.float16: ("amx_fp16", "avx512_fp16")}.get(
        dtype, (None, None)
    )
    if tiles in flags:
        return 1024, f"{tiles}: AMX tiles, 16 x 16 x 32 multiply-adds per 16 cycles"
    if vectors in flags:
        return 2 * fp32, f"{vectors}: twice the FP32 rate of {why}"
    return fp32, why


def nominal_cpu_peak(flops_per_cycle: int) -> float:
    """Nominal FLOP/s of the threads torch uses at ``flops_per_cycle`` per core (see the module docstring)."""
    with open("/proc/cpuinfo") as f:
        mhz = [float(line.split(":", 1)[1]) for line in f if line.startswith("cpu MHz")]
    return torch.get_num_threads() * max(mhz) * 1e6 * flops_per_cycle


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of a (size x size) @ (size x size) matmul over ``repeats`` runs."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype, flops_per_cycle: int | None = None) -> tuple[float, str]:
    """``(FLOP/s, how it was derived)`` of the machine's peak for ``dtype`` (see the module docstring).

    On CPU, ``flops_per_cycle`` overrides the rate per core derived from the CPU's flags.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, table in GPU_PEAK_TFLOPS.items():
            if fragment in name and dtype in table:
                return table[dtype] * 1e12, f"{fragment} datasheet dense {dtype}"
        return measured_matmul_peak(device, dtype), "measured matmul (card not in the datasheet table)"
    why = "given"
    if flops_per_cycle is None:
        flops_per_cycle, why = cpu_flops_per_cycle(read_cpuinfo(), dtype)
    nominal, measured = nominal_cpu_peak(flops_per_cycle), measured_matmul_peak(device, dtype)
    source = (
        f"the larger of nominal {nominal / 1e9:.0f} (threads x cpu MHz x {flops_per_cycle} {dtype} FLOP/cycle: "
        f"{why}) and a measured {dtype} matmul's {measured / 1e9:.0f}"
    )
    return max(nominal, measured), source


def fraction_of_peak(flop_per_s: float, peak: float) -> float:
    """``flop_per_s / peak``, at most 1: a rate above the peak is reported as 100%, with a note on stderr."""
    if flop_per_s > peak:
        print(
            f"note: {flop_per_s / 1e9:.0f} GFLOP/s is above the stated peak {peak / 1e9:.0f}: printed as 100%",
            file=sys.stderr,
        )
        return 1.0
    return flop_per_s / peak


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions and attention), by ``torch.utils.flop_counter``."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


class PeakMemory:
    """Peak memory of a block: CUDA's allocator high-water mark, or on CPU the process RSS above its starting value,
    polled every 2 ms by a thread (so short spikes can be missed)."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0
        self._stop = threading.Event()

    def _poll(self, base: int) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss - base)
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._thread = threading.Thread(target=self._poll, args=(psutil.Process().memory_info().rss,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of one ``fn()`` (synchronized on CUDA before and after), and its result."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def median_time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs, and the last result."""
    result, times = None, []
    for run in range(warmup + repeats):
        seconds, result = timed(fn, device)
        if run >= warmup:
            times.append(seconds)
    return statistics.median(times), result


def paired_times(runs: dict[str, Callable[[], Any]], device: torch.device, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of ``runs``, ``repeats`` rounds of one call each, the order reversed every other round.

    Interleaving puts both sides under the same load on a shared host; the alternating order cancels what the first
    or second run of a round pays (caches, clocks).
    """
    times: dict[str, list[float]] = {label: [] for label in runs}
    labels = list(runs)
    for round_index in range(repeats):
        for label in labels if round_index % 2 == 0 else labels[::-1]:
            times[label].append(timed(runs[label], device)[0])
    return times

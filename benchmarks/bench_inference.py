"""Inference benchmark: our PixArtAlphaPipeline against diffusers' on the same weights and inputs, in one process.

For each configuration: the median wall time of one generation, prompt to PNG bytes, with the model already loaded
(``--repeats`` rounds after one warm-up, each round one run of ours and one of diffusers' in alternating order, so
that load changes on a shared host hit both), for ours and diffusers', the ratio ours / diffusers' (the median of the
rounds' ratios), the max abs difference
of the images (0..1 scale), the peak memory of a run, the FLOPs of one transformer forward (counted by
``torch.utils.flop_counter``), the transformer's share of the time and its achieved FLOP/s as a fraction of the
machine's peak (see ``common.py`` for how the peak is derived). Configurations:

- ``tiny``: the test components of :mod:`diffusers_pixart.tiny` (256px, 2 blocks of width 24);
- ``toy``: the embedded toy model (``diffusers_pixart.default_model.TOY_MODEL_PATH``), skipped when not shipped;
- ``xl256``, ``xl512``, ``xl1024``: the full PixArt-XL/2 transformer (28 blocks, width 1152, 611M parameters, random
  weights) at 256/512/1024px, an sd-vae-ft-ema-shaped VAE and a one-block T5 of width 4096 standing in for T5-XXL
  (so the time is the transformer's and the VAE's). ``xl1024`` is meant for a GPU.

Options of ours (off unless given): ``--fuse`` (fused QKV/KV projections), ``--drop-padding`` (cross-attention over
valid caption tokens only), ``--compile MODE`` (``torch.compile(fullgraph=True)`` of our transformer's forward, or
with ``--compile-scope blocks`` of its blocks only: diffusers' regional ``compile_repeated_blocks``, which leaves the
caption cache working), ``--fp8`` (the blocks' linear layers as float8 matmuls with dynamic per-row activation
scales, through torchao; CUDA cards with float8 tensor cores: compute capability 8.9 or higher), ``--compile-vae``
(the VAE in channels-last memory format with its decoder compiled).
On CUDA the pipelines run in ``--dtype`` (bf16 by default there). Each row reports the PSNR of ours' images against
diffusers' (dB; infinite when identical), the deviation an option costs.

``--kernels`` profiles one more generation per pipeline (``torch.profiler``) and reports the time inside the matmul,
attention and convolution kernels (self time of those aten ops; device time on CUDA). Ours' kernel time over
diffusers' total time is the lowest ratio ours could reach by cutting everything else (Python, elementwise ops,
scheduler) to nothing while running the same kernels.

``--sampler`` picks both pipelines' sampler by name (:data:`diffusers_pixart.schedulers.SCHEDULERS`; ``--steps`` and
``--guidance`` default to its own): ``--sampler lcm`` times a few-step model's 4 steps without guidance.

``toy-few-step`` is another kind of configuration (ours only; ``--sampler``, ``--steps`` and ``--guidance`` do not
apply): the embedded toy model as the teacher (DPM-Solver 20 and 4 steps, CFG 4.5) and as its LCM student (its
shipped ``lcm_lora/`` fused into the weights as ``pixart generate --scheduler lcm`` serves it, LCM at 1, 2, 4 and 8
steps, no guidance; and unfused at 4 steps), the settings of
:data:`diffusers_pixart.toy.few_step.FEW_STEP_SETTINGS`: the median prompt-to-PNG time of each, ``--repeats`` rounds
interleaved as above, and its ratio to the 20-step teacher's. Run:
``python benchmarks/bench_inference.py --configs toy-few-step --repeats 7 --threads 1``.

Run: ``python benchmarks/bench_inference.py --configs tiny xl256 --steps 20 --repeats 3 --threads 1``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from common import (
    PeakMemory,
    count_flops,
    fraction_of_peak,
    load_average,
    machine,
    paired_times,
    peak_flops,
    pick_device,
    synchronize,
)
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler
from torch.profiler import ProfilerActivity, profile

from diffusers_pixart import PixArtAlphaPipeline, PixArtTransformer2DModel
from diffusers_pixart.default_model import TOY_MODEL_PATH, shipped_lcm_lora
from diffusers_pixart.models.attention import caption_cache
from diffusers_pixart.schedulers import SCHEDULERS
from diffusers_pixart.tiny import make_components, make_text_encoder, make_tokenizer
from diffusers_pixart.toy.few_step import FEW_STEP_SETTINGS, TEACHER_SETTING, few_step_pipeline

PROMPT = "a red circle above a blue square"


def xl_components(resolution: int) -> dict:
    """PixArt-XL/2 at ``resolution`` px with random weights; a one-block T5 of the real width."""
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    sample_size = resolution // 8
    return {
        "tokenizer": tokenizer,
        "text_encoder": make_text_encoder(len(tokenizer), d_model=4096, num_layers=1, num_heads=64),
        "vae": AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            sample_size=resolution,
        ).eval(),
        "transformer": PixArtTransformer2DModel(sample_size=sample_size, caption_channels=4096).eval(),
        "scheduler": DPMSolverMultistepScheduler(),
    }


def toy_components() -> dict | None:
    """The embedded toy model's components, or None when the package does not ship it.

    diffusers' pipeline passes micro-conditions only to ``sample_size == 128`` models and fails on the toy model's
    (sample_size 16), so both pipelines get the toy transformer without its two micro-condition embedders (same
    blocks and weights otherwise; they are two small MLPs run once per step).
    """
    if not (TOY_MODEL_PATH / "model_index.json").is_file():
        return None
    components = PixArtAlphaPipeline.from_pretrained(TOY_MODEL_PATH).components
    toy = components["transformer"]
    transformer = PixArtTransformer2DModel.from_config(toy.config, use_additional_conditions=False).eval()
    kept = {k: v for k, v in toy.state_dict().items() if "resolution_embedder" not in k and "aspect_ratio" not in k}
    transformer.load_state_dict(kept, strict=True)
    return {**components, "transformer": transformer}


CONFIGS = {
    "tiny": make_components,
    "toy": toy_components,
    "xl256": lambda: xl_components(256),
    "xl512": lambda: xl_components(512),
    "xl1024": lambda: xl_components(1024),
}
#: The teacher-against-student configuration (:func:`run_few_step`).
FEW_STEP_CONFIG = "toy-few-step"


def twin_pipelines(
    components: dict, device: torch.device, dtype: torch.dtype
) -> tuple[PixArtAlphaPipeline, diffusers.PixArtAlphaPipeline]:
    """Ours and diffusers' pipeline sharing every component but the transformer, which has the same weights."""
    theirs_transformer = diffusers.PixArtTransformer2DModel.from_config(components["transformer"].config).eval()
    theirs_transformer.load_state_dict(components["transformer"].state_dict(), strict=True)
    ours = PixArtAlphaPipeline(**components)
    theirs = diffusers.PixArtAlphaPipeline(**{**components, "transformer": theirs_transformer})
    for pipe in (ours, theirs):
        pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


class TransformerTimer:
    """Accumulates the wall time spent in a transformer's forward (synchronized on CUDA)."""

    def __init__(self, transformer: torch.nn.Module, device: torch.device):
        self.seconds, self.calls, self.device = 0.0, 0, device
        transformer.register_forward_pre_hook(self.start)
        transformer.register_forward_hook(self.stop)

    def start(self, module, args) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def stop(self, module, args, output) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._start
        self.calls += 1


def generate_png(
    pipe, steps: int, guidance: float, options: Callable[[], AbstractContextManager]
) -> tuple[np.ndarray, list[bytes]]:
    """One generation, prompt to PNG bytes, within ``options()``; returns the images (B, H, W, 3) and PNG files."""
    with options():
        images = pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            use_resolution_binning=False,  # diffusers bins only 256/512/1024 models; square default sizes: no-op
        )
    files = []
    for image in pipe.numpy_to_pil(images.images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return images.images, files


KERNELS = {
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "mkl::", "mkldnn::_linear"),
    "attention": ("aten::_scaled_dot_product_", "aten::_flash_attention", "aten::_efficient_attention"),
    "convolution": ("aten::mkldnn_convolution", "aten::_slow_conv2d", "aten::cudnn_convolution"),
}


def kernel_seconds(run: Callable[[], Any], device: torch.device) -> dict[str, float]:
    """Seconds of one ``run()`` spent inside each kind of :data:`KERNELS` (self time of the matching ops)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        synchronize(device)
    seconds = dict.fromkeys(KERNELS, 0.0)
    for event in prof.key_averages():
        for kind, prefixes in KERNELS.items():
            if event.key.startswith(prefixes):
                self_us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
                seconds[kind] += self_us / 1e6
    return seconds


def transformer_flops(pipe, resolution: int, device: torch.device, dtype: torch.dtype) -> int:
    """FLOPs of one guided transformer forward (batch 2, 120 caption tokens) at ``resolution`` px."""
    transformer = pipe.transformer
    side = resolution // pipe.vae_scale_factor
    caption_channels = transformer.config.caption_channels or transformer.config.cross_attention_dim
    kwargs = dict(
        hidden_states=torch.zeros(2, transformer.config.in_channels, side, side, device=device, dtype=dtype),
        encoder_hidden_states=torch.zeros(2, 120, caption_channels, device=device, dtype=dtype),
        timestep=torch.tensor([500, 500], device=device),
        added_cond_kwargs={
            "resolution": torch.tensor([[resolution, resolution]] * 2, device=device, dtype=dtype),
            "aspect_ratio": torch.ones(2, 1, device=device, dtype=dtype),
        },
    )
    with torch.no_grad():
        return count_flops(lambda: transformer(**kwargs))


def float8_blocks(transformer: torch.nn.Module) -> None:
    """Quantize the blocks' linear layers in place: float8 weights (per output row) and activations (per token).

    torchao's ``Float8DynamicActivationFloat8WeightConfig``; the embedders, the caption projection and the output
    layer stay in the pipeline's dtype. The caption cache keeps working: the cross-attention's key/value projections
    are still called once per generation, now as float8 matmuls.
    """
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    def in_blocks(module: torch.nn.Module, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and name.startswith("transformer_blocks.")

    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=in_blocks)


def psnr(images: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of ``images`` against ``reference`` (both 0..1); inf when equal."""
    mse = float(np.mean((images.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def run_config(name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype, peak: float) -> dict:
    """Time one configuration; returns a row of results."""
    components = CONFIGS[name]()
    if components is None:
        print(f"{name}: skipped (no embedded toy model at {TOY_MODEL_PATH})")
        return {"config": name, "skipped": "no embedded toy model"}
    ours, theirs = twin_pipelines(components, device, dtype)
    ours.set_scheduler(args.sampler)
    theirs.scheduler = type(ours.scheduler).from_config(ours.scheduler.config)
    if args.fuse:
        ours.transformer.fuse_qkv_projections()
    if args.fp8:
        float8_blocks(ours.transformer)
    if args.compile_vae:
        ours.vae.to(memory_format=torch.channels_last)
        ours.vae.decoder = torch.compile(ours.vae.decoder)
    resolution = ours.transformer.config.sample_size * ours.vae_scale_factor
    row = {"config": name, "resolution": resolution, "steps": args.steps, "load_before": load_average()}
    row.update(sampler=args.sampler, guidance=args.guidance)
    flops = transformer_flops(ours, resolution, device, dtype)
    # after counting (the FLOP counter's mode does not trace); the forward only, so the timer hooks stay eager
    if args.compile and args.compile_scope == "blocks":
        ours.transformer.compile_repeated_blocks(fullgraph=True, mode=args.compile)
    elif args.compile:
        ours.transformer.forward = torch.compile(ours.transformer.forward, fullgraph=True, mode=args.compile)
    pipes = {"ours": ours, "diffusers": theirs}
    dropping = partial(caption_cache, drop_padding=True) if args.drop_padding else nullcontext
    runs = {
        "ours": partial(generate_png, ours, args.steps, args.guidance, dropping),
        "diffusers": partial(generate_png, theirs, args.steps, args.guidance, nullcontext),
    }
    with torch.no_grad():
        if args.compile or args.compile_vae:
            runs["ours"]()  # compiles: kept out of the timer and the peak memory
        timers = {label: TransformerTimer(pipe.transformer, device) for label, pipe in pipes.items()}
        images = {}
        for label, run in runs.items():
            with PeakMemory(device) as memory:
                images[label], _ = run()  # warm-up
            row[label] = {"peak_memory_mb": memory.peak / 2**20}
        times = paired_times(runs, device, args.repeats)
        for label, timer in timers.items():
            per_run = timer.seconds / (args.repeats + 1)
            row[label]["seconds"] = statistics.median(times[label])
            row[label]["transformer_seconds"] = per_run
            row[label]["transformer_flop_per_s"] = flops * timer.calls / (args.repeats + 1) / per_run
            row[label]["fraction_of_peak"] = fraction_of_peak(row[label]["transformer_flop_per_s"], peak)
            if args.kernels:
                row[label]["kernel_seconds"] = kernel_seconds(runs[label], device)
    row["ratio"] = statistics.median(o / t for o, t in zip(times["ours"], times["diffusers"]))
    row["max_abs_diff"] = float(np.abs(images["ours"] - images["diffusers"]).max())
    row["psnr_db"] = psnr(images["ours"], images["diffusers"])
    row["transformer_gflop_per_forward"] = flops / 1e9
    row["load_after"] = load_average()
    return row


def run_few_step(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    """Time the toy teacher and its LCM student in every few-step setting, prompt to PNG; returns a row of results."""
    lora = shipped_lcm_lora(None)
    if lora is None:
        print(f"{FEW_STEP_CONFIG}: skipped (no embedded toy model with an lcm_lora/ at {TOY_MODEL_PATH})")
        return {"config": FEW_STEP_CONFIG, "skipped": "no embedded toy model with an LCM-LoRA"}
    runs = {}
    for name, setting in FEW_STEP_SETTINGS.items():
        pipe = few_step_pipeline(TOY_MODEL_PATH, setting, lora)
        pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
        runs[name] = partial(generate_png, pipe, setting.steps, setting.guidance, nullcontext)
    with torch.no_grad():
        for run in runs.values():
            run()  # warm-up
        times = paired_times(runs, device, args.repeats)
    teacher = statistics.median(times[TEACHER_SETTING])
    settings = {}
    for name, setting in FEW_STEP_SETTINGS.items():
        seconds = statistics.median(times[name])
        settings[name] = {**setting._asdict(), "seconds": seconds, "vs_teacher": seconds / teacher}
    return {"config": FEW_STEP_CONFIG, "repeats": args.repeats, "settings": settings, "load_after": load_average()}


def print_few_step(row: dict) -> None:
    """The few-step configuration's table: each setting's time and its ratio to the teacher's."""
    print(f"{FEW_STEP_CONFIG} (prompt to PNG, median of {row['repeats']}):")
    for name, result in row["settings"].items():
        print(f"  {name:36} {result['seconds']:7.3f} s  {result['vs_teacher']:6.0%} of the teacher's")
    print(f"  ({row['load_after']})")


def append_json(path: Path | None, row: dict) -> None:
    """Append ``row`` to the JSON-lines file ``path`` (nothing without one)."""
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    """Run the chosen configurations, print a table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "toy", "xl256"], choices=[*CONFIGS, FEW_STEP_CONFIG])
    parser.add_argument(
        "--sampler", default="dpm", choices=list(SCHEDULERS), help="Both pipelines' sampler (lcm: a few-step model's)."
    )
    parser.add_argument("--steps", type=int, default=None, help="Denoising steps (default: the sampler's own).")
    parser.add_argument("--guidance", type=float, default=None, help="Guidance scale (default: the sampler's own).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per pipeline (after one warm-up).")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda.")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="Default: bf16 on CUDA.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    parser.add_argument("--fuse", action="store_true", help="Ours with fused QKV/KV projections.")
    parser.add_argument("--drop-padding", action="store_true", help="Ours attends to valid caption tokens only.")
    parser.add_argument(
        "--compile",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="Ours with torch.compile(fullgraph=True) of the transformer in this mode (compiled in the warm-up run).",
    )
    parser.add_argument(
        "--compile-scope",
        default="model",
        choices=["model", "blocks"],
        help="What --compile compiles: the transformer's forward, or each block (regional compilation).",
    )
    parser.add_argument("--fp8", action="store_true", help="Ours with float8 linear layers in its blocks (torchao).")
    parser.add_argument("--compile-vae", action="store_true", help="Ours' VAE channels-last, its decoder compiled.")
    parser.add_argument("--kernels", action="store_true", help="Also profile the matmul/attention/conv kernel time.")
    parser.add_argument(
        "--cpu-flops-per-cycle", type=int, default=None, help="FLOP/cycle/core for the peak (default: from the flags)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Append the results to this JSON-lines file.")
    args = parser.parse_args()
    _, _, default_steps, default_guidance = SCHEDULERS[args.sampler]
    args.steps = args.steps or default_steps
    args.guidance = default_guidance if args.guidance is None else args.guidance
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    peak, peak_source = peak_flops(device, dtype, args.cpu_flops_per_cycle)
    print(f"{machine(device)}; diffusers {diffusers.__version__}; {dtype}; {load_average()}")
    print(
        f"peak {peak / 1e9:.0f} GFLOP/s ({peak_source}); {args.sampler} {args.steps} steps, guidance {args.guidance}; "
        f"options: fuse={args.fuse} drop_padding={args.drop_padding} "
        f"compile={args.compile} ({args.compile_scope}) fp8={args.fp8} compile_vae={args.compile_vae}"
    )
    header = "config   ours(s)  diffusers(s) ratio  max|diff|  PSNR(dB)  GFLOP/fwd  ours-MFU  theirs-MFU  mem(MB)"
    print(header)
    for name in args.configs:
        row = (
            run_few_step(args, device, dtype)
            if name == FEW_STEP_CONFIG
            else run_config(name, args, device, dtype, peak)
        )
        if "skipped" in row:
            continue
        row.update(machine=machine(device), dtype=str(dtype), peak_flop_per_s=peak, peak_source=peak_source)
        if name == FEW_STEP_CONFIG:
            print_few_step(row)
            append_json(args.json, row)
            continue
        row.update(fuse=args.fuse, drop_padding=args.drop_padding, compile=args.compile)
        row.update(compile_scope=args.compile_scope, fp8=args.fp8, compile_vae=args.compile_vae)
        ours, theirs = row["ours"], row["diffusers"]
        print(
            f"{name:8} {ours['seconds']:7.3f} {theirs['seconds']:12.3f} {row['ratio']:6.3f} "
            f"{row['max_abs_diff']:9.2e} {row['psnr_db']:8.1f} "
            f"{row['transformer_gflop_per_forward']:10.1f} {ours['fraction_of_peak']:8.1%} "
            f"{theirs['fraction_of_peak']:10.1%}  {ours['peak_memory_mb']:.0f}/{theirs['peak_memory_mb']:.0f}"
            f"  ({row['load_after']})"
        )
        if args.kernels:
            for label in ("ours", "diffusers"):
                kernels = row[label]["kernel_seconds"]
                parts = " + ".join(f"{kind} {seconds:.3f}" for kind, seconds in kernels.items())
                print(f"  {label} kernels: {parts} = {sum(kernels.values()):.3f} s")
            floor = sum(row["ours"]["kernel_seconds"].values()) / theirs["seconds"]
            print(f"  ours' kernels / diffusers' total: {floor:.3f} (the ratio left if all else cost nothing)")
        append_json(args.json, row)


if __name__ == "__main__":
    main()

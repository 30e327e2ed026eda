"""Peak memory and step time of one XL/2 LoRA or full fine-tuning step (batch 1) for each memory option.

    OMP_NUM_THREADS=1 python benchmarks/bench_lora_memory.py --out benchmarks/results/lora_memory.json

Each configuration runs in its own process, one after the other: the full-size PixArt XL/2 transformer (28 blocks,
hidden 1152, random weights built in place in the base dtype) with a rank-16 LoRA on the attention layers
(``--target_modules attention``), 120 random caption embeddings of width 4096 and one latent of the resolution, the
IDDPM loss, backward, gradient clipping and the optimizer step, as the training engine runs them
(``diffusers_pixart.training``: ``add_adapter``, ``make_optimizer``, ``IDDPMDiffusion``). This is the whole training
state of a ``--features`` run, where T5 and the VAE's encoder never load (see the README for what a raw-image run
adds). Options per configuration: ``--base_dtype`` fp32 or bf16 (bf16 runs under bf16 autocast, as
``--mixed_precision bf16``), ``--gradient_checkpointing``, ``--optimizer adamw|adamw8bit|came``.

``--trained full`` measures a full fine-tuning step instead (every weight trained, as the stage scripts and
``train_dreambooth.py`` without ``--lora_rank`` do): the weights stay float32 (the optimizer's master copy), and
"bf16" means ``--mixed_precision bf16``, bf16 autocast over float32 weights. Measure those with ``--steps 2``: the
optimizer allocates its state in the first step's ``optimizer.step()``, after the backward pass has freed the
activations, so only a second step holds both.

CPU: the peak resident set size of the process (``ru_maxrss``, including the Python interpreter and torch, ~0.4 GB)
after ``--steps`` steps; the time of the last step. ``--device cuda``: ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffusers_pixart.atomic import write_json_atomic

#: PixArt-α XL/2 (diffusers' PixArt-alpha/PixArt-XL-2-1024-MS transformer config), its sample size set per run.
XL2 = dict(
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    cross_attention_dim=1152,
    caption_channels=4096,
    patch_size=2,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    attention_bias=True,
    activation_fn="gelu-approximate",
)
OPTIONS = {
    "trained": ("lora", "full"),
    "base_dtype": ("fp32", "bf16"),
    "gradient_checkpointing": (False, True),
    "optimizer": ("adamw", "adamw8bit", "came"),
}


def build_transformer(resolution: int, dtype: torch.dtype, device: torch.device):
    """XL/2 for ``resolution`` px with random weights, allocated once in ``dtype`` on ``device``."""
    from diffusers_pixart.models.pixart_transformer import PixArtTransformer2DModel

    config = dict(XL2, sample_size=resolution // 8, use_additional_conditions=resolution >= 512)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = PixArtTransformer2DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    model.to_empty(device=device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02, generator=generator)
        for buffer in model.buffers():  # position embeddings: any finite values
            buffer.normal_(0.0, 0.02, generator=generator)
    return model


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def run_one(
    resolution: int,
    base_dtype: str,
    checkpointing: bool,
    optimizer_name: str,
    steps: int,
    device_name: str,
    trained: str = "lora",
) -> dict:
    """Measure one configuration in this process (``trained``: "lora" or "full"); returns its record."""
    from diffusers_pixart.training.diffusion import IDDPMDiffusion
    from diffusers_pixart.training.lora import LoraTrainingConfig, add_adapter
    from diffusers_pixart.training.optimizers import make_optimizer
    from diffusers_pixart.training.parameters import trainable_parameters

    device = torch.device(device_name)
    autocast = base_dtype == "bf16"
    dtype = torch.bfloat16 if autocast and trained == "lora" else torch.float32
    config = LoraTrainingConfig(
        output_dir="unused", rank=16, target_modules=["attention"], optimizer=optimizer_name,
        base_dtype="bf16" if dtype == torch.bfloat16 else "fp32", mixed_precision="bf16" if autocast else "no",
    )  # fmt: skip
    model = build_transformer(resolution, dtype, device)
    if trained == "lora":
        add_adapter(model, config)
    model.train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    params = trainable_parameters(model)
    optimizer = make_optimizer(config, params)
    objective = IDDPMDiffusion(learn_sigma=True)
    generator = torch.Generator(device).manual_seed(0)
    size = resolution // 8
    latents = torch.randn(1, 4, size, size, generator=generator, device=device)
    embeds = torch.randn(1, 120, 4096, generator=generator, device=device).to(dtype)
    mask = torch.ones(1, 120, dtype=torch.long, device=device)
    added = {
        "resolution": torch.tensor([[resolution, resolution]], dtype=torch.float32, device=device),
        "aspect_ratio": torch.tensor([[1.0]], device=device),
    }
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        noised = objective.noise(latents, {}, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            output = model(
                noised.noisy, embeds, timestep=noised.timesteps, encoder_attention_mask=mask, added_cond_kwargs=added
            ).sample
        loss = objective.loss(output, noised)["loss"].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {
        "trained": trained,
        "resolution": resolution,
        "base_dtype": base_dtype,
        "gradient_checkpointing": checkpointing,
        "optimizer": optimizer_name,
        "optimizer_class": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
        "trained_parameters": sum(p.numel() for p in params),
        "base_parameters": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "peak_memory_gb": round(peak_memory_gb(device), 3),
        "steps": steps,
        "step_time_s": round(times[-1], 2),
        "first_step_time_s": round(times[0], 2),
        "loss": float(loss),
        "threads": torch.get_num_threads(),
        "device": device_name,
    }


def table(results: list[dict]) -> str:
    """The results as the markdown tables of ``benchmarks/README.md``: trained weights, resolution, base dtype,
    checkpointing, optimizer (its class's package), peak memory and step time, sorted from the largest configuration
    to the leanest (records without ``trained`` are LoRA steps)."""
    lines = [
        "| trained | resolution | base dtype | gradient checkpointing | optimizer | peak memory (GB) | step time (s) "
        "| load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {"fp32": 0, "bf16": 1}
    precision = {("lora", "fp32"): "fp32", ("lora", "bf16"): "bf16", ("full", "fp32"): "fp32",
                 ("full", "bf16"): "fp32, bf16 autocast"}  # fmt: skip

    def key(r: dict) -> tuple:
        return (
            r.get("trained", "lora") == "full",  # LoRA rows first
            r["resolution"],
            order[r["base_dtype"]],
            r["gradient_checkpointing"],
            r["optimizer"],
        )

    for r in sorted(results, key=key):
        package = r["optimizer_class"].split(".")[0]
        trained = r.get("trained", "lora")
        lines.append(
            f"| {'LoRA' if trained == 'lora' else 'all weights'} | {r['resolution']} px | "
            f"{precision[trained, r['base_dtype']]} | {'on' if r['gradient_checkpointing'] else 'off'} | "
            f"{r['optimizer']} ({package}) | {r['peak_memory_gb']:.2f} | {r['step_time_s']:.0f} | "
            f"{r.get('load_average', ['-'])[0]} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Peak memory and step time of an XL/2 LoRA step per memory option.")
    parser.add_argument("--trained", nargs="+", default=["lora"], choices=list(OPTIONS["trained"]))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--base_dtypes", nargs="+", default=list(OPTIONS["base_dtype"]))
    parser.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIONS["optimizer"]))
    parser.add_argument("--steps", type=int, default=2, help="Steps per configuration (the last one is timed).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="JSON file; results already there are kept and not rerun.")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: one configuration
    parser.add_argument("--table", action="store_true", help="Print --out's results as a markdown table and stop.")
    args = parser.parse_args()
    if args.table:
        if not args.out or not Path(args.out).is_file():
            parser.error("--table needs --out naming an existing results file.")
        print(table(json.loads(Path(args.out).read_text())))
        return 0
    if args.one:
        resolution, base_dtype, checkpointing, optimizer_name, *trained = args.one.split(",")
        record = run_one(
            int(resolution), base_dtype, checkpointing == "on", optimizer_name, args.steps, args.device, *trained
        )
        print(json.dumps(record), flush=True)
        return 0

    out = Path(args.out) if args.out else None
    results = json.loads(out.read_text()) if out and out.is_file() else []
    done = {
        (r.get("trained", "lora"), r["resolution"], r["base_dtype"], r["gradient_checkpointing"], r["optimizer"])
        for r in results
    }
    print(f"torch threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load {os.getloadavg()}")
    for trained, resolution, base_dtype, checkpointing, optimizer_name in itertools.product(
        args.trained, args.resolutions, args.base_dtypes, args.checkpointing, args.optimizers
    ):
        if (trained, resolution, base_dtype, checkpointing == "on", optimizer_name) in done:
            continue
        spec = f"{resolution},{base_dtype},{checkpointing},{optimizer_name},{trained}"
        child = subprocess.run(
            [sys.executable, __file__, "--one", spec, "--steps", str(args.steps), "--device", args.device],
            capture_output=True,
            text=True,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        if child.returncode or not lines:
            print(f"{spec}: failed ({child.returncode}): {child.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        record = json.loads(lines[-1])
        record["load_average"] = [round(v, 1) for v in os.getloadavg()]
        results.append(record)
        print(json.dumps(record), flush=True)
        if out:
            write_json_atomic(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

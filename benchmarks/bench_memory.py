"""Peak memory of one 1024 px generation with the real-size PixArt-alpha models, default bf16 vs the low-memory options.

The components have the real architectures and random weights, built in code (no download): the T5-XXL encoder
(d_model 4096, 24 layers, d_ff 10240, 64 heads, gated-gelu, vocabulary 32128; 4.76 B parameters), the XL/2 transformer
(28 blocks, width 1152, 1024 px with micro-conditions) and the sd-vae-ft-ema-shaped VAE, all in bf16. Every
configuration runs in its own subprocess, one after the other, so each peak is that process's alone:

- ``default``: the plain pipeline;
- ``int8``: T5's linear weights int8 (torchao weight-only, quantized module by module while the encoder is built, as
  ``from_pretrained(low_memory=True)`` does while loading);
- ``drop``: the text encoder dropped before the transformer runs;
- ``tiling``: the VAE decodes in 512 px tiles;
- ``all``: the three together (``from_pretrained(low_memory=True)``'s mode).

Memory: on CPU the process's peak resident set (``ru_maxrss``: building the models and the generation, with the
interpreter's and libraries' own ~0.5 GB) and the resident set once the models are built; on CUDA
``torch.cuda.max_memory_allocated`` (the models are built on the GPU). Each configuration's caption embeddings
(over the caption's real tokens) and image are compared with the default's.

Run: ``nice -n 10 python benchmarks/bench_memory.py --steps 2 --json benchmarks/results/memory_cpu.json``, or
``--device cuda`` on a GPU machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from common import load_average, machine
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler
from transformers import T5Config, T5EncoderModel

from diffusers_pixart import PixArtAlphaPipeline, PixArtTransformer2DModel
from diffusers_pixart.pipelines.low_memory import int8_weight_only_config, quantize_text_encoder
from diffusers_pixart.text import encode_prompts
from diffusers_pixart.tiny import make_tokenizer

PROMPT = "a photo of a small red cat next to a big blue house with a tree on the left and the sea in the background"

#: The T5 v1.1 XXL encoder of PixArt-alpha (google/t5-v1_1-xxl).
T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.0,
    is_encoder_decoder=False,
    use_cache=False,
    tie_word_embeddings=False,
)

#: Configuration name: (int8 T5, drop the text encoder, VAE tile size).
CONFIGS = {
    "default": (False, False, None),
    "int8": (True, False, None),
    "drop": (False, True, None),
    "tiling": (False, False, 512),
    "all": (True, True, 512),
}


def random_t5(device: torch.device, dtype: torch.dtype, int8: bool, seed: int = 0) -> T5EncoderModel:
    """The T5-XXL encoder with seeded random weights, built one module at a time on ``device``.

    T5's own initialisation (``T5PreTrainedModel._init_weights``): linear weights ~ N(0, 1/fan_in), the queries' with
    a further 1/d_kv (T5 does not scale its attention logits), embeddings ~ N(0, 1), relative position biases ~
    N(0, 1/d_model), norms 1. With
    ``int8`` each linear layer is quantized as soon as it is filled, so the whole encoder is never resident in
    ``dtype``. The same seed gives the same weights with and without ``int8``.
    """
    with torch.device("meta"):
        model = T5EncoderModel(T5Config(**T5_XXL))
    model.encoder.embed_tokens = model.shared  # one table, as in the checkpoints
    generator = torch.Generator(device=device).manual_seed(seed)
    quantize_config = int8_weight_only_config() if int8 else None
    for name, module in model.named_modules():
        parameters = list(module.named_parameters(recurse=False))
        if not parameters:
            continue
        for parameter_name, parameter in parameters:
            value = torch.empty(parameter.shape, device=device, dtype=dtype)
            if parameter.ndim == 1:
                value.fill_(1.0)
            elif "relative_attention" in name:
                value.normal_(0.0, T5_XXL["d_model"] ** -0.5, generator=generator)
            else:
                std = 1.0 if isinstance(module, torch.nn.Embedding) else parameter.shape[-1] ** -0.5
                std *= T5_XXL["d_kv"] ** -0.5 if name.endswith("SelfAttention.q") else 1.0
                value.normal_(0.0, std, generator=generator)
            setattr(module, parameter_name, torch.nn.Parameter(value, requires_grad=False))
        if quantize_config is not None and isinstance(module, torch.nn.Linear):
            from torchao.quantization import quantize_

            quantize_(module, quantize_config)
    return model.eval()


def random_transformer_and_vae(device: torch.device, dtype: torch.dtype) -> tuple:
    """The XL/2 1024 px transformer and the sd-vae-ft-ema-shaped VAE, random (seeded), created directly in ``dtype``."""
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        transformer = PixArtTransformer2DModel(sample_size=128, caption_channels=T5_XXL["d_model"])
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            sample_size=512,
        )
    finally:
        torch.set_default_dtype(default_dtype)
    return transformer.to(device, dtype).eval(), vae.to(device, dtype).eval()


def resident_bytes(device: torch.device) -> int:
    """Memory in use now: the process's resident set on CPU, the allocator's allocated bytes on CUDA."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return psutil.Process().memory_info().rss


def peak_bytes(device: torch.device) -> int:
    """The process's peak so far: ``ru_maxrss`` on CPU, ``max_memory_allocated`` on CUDA."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def run_worker(config: str, device: torch.device, steps: int, size: int, out: Path) -> None:
    """Build the pipeline for ``config``, generate one image, save the numbers and tensors to ``out``."""
    int8, drop, tile_size = CONFIGS[config]
    dtype = torch.bfloat16
    baseline, start = resident_bytes(device), time.perf_counter()
    transformer, vae = random_transformer_and_vae(device, dtype)
    pipe = PixArtAlphaPipeline(
        tokenizer=make_tokenizer(),
        text_encoder=random_t5(device, dtype, int8),
        vae=vae,
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    if drop or tile_size is not None:
        pipe.enable_low_memory(
            text_encoder_loader=lambda: random_t5(device, dtype, int8),
            int8_text_encoder=int8,
            drop_text_encoder=drop,
            vae_tile_size=tile_size,
        )
    loaded, build_peak, build_seconds = resident_bytes(device), peak_bytes(device), time.perf_counter() - start
    captured: dict[str, torch.Tensor] = {}

    def capture(pipeline: PixArtAlphaPipeline, step: int, t: torch.Tensor, tensors: dict) -> dict:
        if step == 0:
            captured.update({name: tensor.float().cpu() for name, tensor in tensors.items()})
        return {}

    start = time.perf_counter()
    image = pipe(
        PROMPT,
        **generation_options(device, steps, size),
        callback_on_step_end=capture,
        callback_on_step_end_tensor_inputs=["prompt_embeds", "prompt_attention_mask"],
    ).images
    generate_seconds = time.perf_counter() - start
    torch.save(
        {
            "config": config,
            "steps": steps,
            "baseline_bytes": baseline,
            "loaded_bytes": loaded,
            "build_peak_bytes": build_peak,
            "peak_bytes": peak_bytes(device),
            "build_seconds": build_seconds,
            "generate_seconds": generate_seconds,
            "text_encoder_after": pipe.text_encoder is not None,
            "image": image.float().cpu(),
            **captured,
        },
        out,
    )


def generation_options(device: torch.device, steps: int, size: int) -> dict:
    """The pipeline arguments every measured generation shares: ``size`` px square, no binning, seed 0, a tensor."""
    return dict(
        num_inference_steps=steps,
        height=size,
        width=size,
        use_resolution_binning=False,
        generator=torch.Generator(device=device).manual_seed(0),
        output_type="pt",
    )


def int8_error(device: torch.device, steps: int, size: int) -> dict[str, float]:
    """The int8 encoder's caption embeddings and image against the bf16 encoder's, same weights, in one process.

    The bf16 encoder encodes, is quantized in place and encodes again; then, with the encoder freed, the transformer
    and VAE generate from each encoder's embeddings with the same noise.
    """
    dtype, tokenizer, results = torch.bfloat16, make_tokenizer(), {}
    encoder = random_t5(device, dtype, int8=False)
    for int8 in (False, True):
        if int8:
            quantize_text_encoder(encoder)
        embeds, mask = encode_prompts(tokenizer, encoder, [PROMPT, ""])
        results[int8] = {"prompt_embeds": embeds.float().cpu(), "prompt_attention_mask": mask.cpu()}
    del encoder
    gc.collect()
    transformer, vae = random_transformer_and_vae(device, dtype)
    pipe = PixArtAlphaPipeline(None, None, vae, transformer, DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    for result in results.values():
        embeds, mask = (result[name].to(device) for name in ("prompt_embeds", "prompt_attention_mask"))
        result["image"] = (
            pipe(
                prompt_embeds=embeds[:1].to(dtype),
                prompt_attention_mask=mask[:1],
                negative_prompt=None,
                negative_prompt_embeds=embeds[1:].to(dtype),
                negative_prompt_attention_mask=mask[1:],
                **generation_options(device, steps, size),
            )
            .images.float()
            .cpu()
        )
    return compare(results[True], results[False])


def compare(result: dict, reference: dict) -> dict[str, float]:
    """Caption embeddings (real tokens only) and image of ``result`` against ``reference``: max abs, cosine."""
    keep = reference["prompt_attention_mask"].bool()
    ours, theirs = result["prompt_embeds"][keep], reference["prompt_embeds"][keep]
    cosine = torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0)
    row_cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
    image_diff = (result["image"] - reference["image"]).abs()
    return {
        "embeds_max_abs": (ours - theirs).abs().max().item(),
        "embeds_ref_max_abs": theirs.abs().max().item(),
        "embeds_cosine": cosine.item(),
        "embeds_min_token_cosine": row_cosine.min().item(),
        "image_max_abs": image_diff.max().item(),
        "image_mean_abs": image_diff.mean().item(),
    }


def append_json(path: Path | None, row: dict) -> None:
    """Append ``row`` as one JSON line to ``path`` (nothing when ``path`` is None)."""
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    """Run each configuration in a subprocess, one at a time; print the table, optionally append JSON lines."""
    parser = argparse.ArgumentParser(
        description=(
            "Peak memory of one 1024 px generation with the real-size PixArt-alpha models, default bf16 vs the "
            "low-memory options."
        )
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=2, help="Denoising steps (CFG on: batch 2 per forward).")
    parser.add_argument("--size", type=int, default=1024, help="Image side in pixels (no resolution binning).")
    parser.add_argument(
        "--int8-error",
        action="store_true",
        help="Only compare the int8 encoder's embeddings and image with bf16's (one encoder resident at a time).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--json", type=Path, default=None, help="Append the rows to this JSON-lines file.")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="Keep each configuration's results here (default: a temporary folder); those there are reused.",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device.")
    if args.worker:
        with torch.no_grad():
            run_worker(args.worker, device, args.steps, args.size, args.out)
        return
    if args.int8_error:
        with torch.no_grad():
            row = int8_error(device, args.steps, args.size)
        row.update(config="int8-error", steps=args.steps, size=args.size, machine=machine(device), load=load_average())
        print(json.dumps(row))
        append_json(args.json, row)
        return
    configs = ["default"] + [name for name in args.configs if name != "default"]
    unit = "peak allocated" if device.type == "cuda" else "peak RSS"
    print(f"{machine(device)}; {args.size} px, {args.steps} steps, CFG, bf16; {load_average()}")
    print(
        f"config  base  loaded  build-{unit}  {unit} (GB)  build(s) generate(s)  embeds max|d| cos  image max|d| mean"
    )
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        work_dir = args.work_dir or Path(folder)
        work_dir.mkdir(parents=True, exist_ok=True)
        for name in configs:
            out = work_dir / f"{name}.pt"
            command = [sys.executable, __file__, "--worker", name, "--device", args.device, "--steps", str(args.steps)]
            command += ["--size", str(args.size), "--out", str(out)]
            command += ["--threads", str(args.threads)] if args.threads else []
            if not out.exists():
                subprocess.run(command, check=True)
            results[name] = torch.load(out)
            row = {key: value for key, value in results[name].items() if not isinstance(value, torch.Tensor)}
            row.update(compare(results[name], results["default"]), machine=machine(device))
            row.update(load=load_average())
            print(
                f"{name:7} {row['baseline_bytes'] / 1e9:5.2f} {row['loaded_bytes'] / 1e9:7.2f}  "
                f"{row['build_peak_bytes'] / 1e9:8.2f}  {row['peak_bytes'] / 1e9:8.2f}  "
                f"{row['build_seconds']:8.1f} {row['generate_seconds']:11.1f}  {row['embeds_max_abs']:10.2e} "
                f"{row['embeds_cosine']:.6f}  {row['image_max_abs']:.3f} {row['image_mean_abs']:.2e}  ({row['load']})",
                flush=True,
            )
            append_json(args.json, row)


if __name__ == "__main__":
    main()

"""``pixart generate "PROMPT"``: text to PNG with any PixArt pipeline folder or Hub id, or the default model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic import write_png_atomic
from ..schedulers import SCHEDULERS, scheduler_name

if TYPE_CHECKING:
    from ..pipelines.pixart_alpha import PixArtAlphaPipeline

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` sub-command."""
    parser = subparsers.add_parser("generate", help="Generate images from a prompt.")
    parser.add_argument("prompt", help="The text prompt.")
    parser.add_argument("--model", default=None, help="Pipeline folder or Hub id (default: the embedded model).")
    parser.add_argument("--out", default="image.png", help="Output PNG; with several images, -1, -2, ... are added.")
    parser.add_argument("--steps", type=int, default=None, help="Denoising steps (default: the sampler's own).")
    parser.add_argument("--guidance", type=float, default=None, help="Guidance scale (default: the sampler's own).")
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")
    parser.add_argument("--height", type=int, default=None, help="Height in pixels (default: the model's size).")
    parser.add_argument("--width", type=int, default=None, help="Width in pixels (default: the model's size).")
    parser.add_argument("--scheduler", default="dpm", help=f"Sampler: one of {', '.join(SCHEDULERS)}.")
    parser.add_argument("--negative", default="", help="Negative prompt.")
    add_lora_arguments(parser)
    parser.add_argument("--num-images", type=int, default=1, help="Images to generate.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="Device.")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="Weights dtype.")
    parser.add_argument(
        "--low-memory",
        action="store_true",
        help="int8 T5 (torchao), dropped before denoising; VAE decode in 512 px tiles (see enable_low_memory).",
    )
    parser.set_defaults(func=run)


def add_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--lora``, ``--lora-scale`` and ``--fuse-lora`` / ``--no-fuse-lora`` (shared by ``generate`` and ``eval``;
    read by :func:`load_args_pipeline`)."""
    parser.add_argument(
        "--lora", default=None, help="LoRA folder, file or Hub id (default with --scheduler lcm: the model's LCM-LoRA)."
    )
    parser.add_argument("--lora-scale", type=float, default=1.0, help="The LoRA's weight (default 1).")
    parser.add_argument(
        "--fuse-lora",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Merge the LoRA into the weights (faster; it can no longer be switched off). Default: the model's own "
        "LCM-LoRA (--scheduler lcm without --lora) is fused, a LoRA named with --lora is not.",
    )


def load_args_pipeline(args: argparse.Namespace, sampler: str) -> tuple[PixArtAlphaPipeline, str]:
    """The pipeline of the parsed arguments (model, LoRA options, device, dtype, ``--low-memory`` where the command has
    it) with ``sampler`` set: :func:`..default_model.load_sampling_pipeline`; returns it and its description."""
    from ..default_model import load_sampling_pipeline

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device.")
    return load_sampling_pipeline(
        args.model,
        sampler,
        args.lora,
        lora_scale=args.lora_scale,
        fuse_lora=args.fuse_lora,
        device=args.device,
        dtype=DTYPES[args.dtype],
        low_memory=getattr(args, "low_memory", False),
    )


def output_paths(out: str, count: int) -> list[Path]:
    """``out`` itself for one image; ``stem-1.png``, ``stem-2.png``, ... for several."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {out!r}.")
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, count + 1)]


def toy_prompt_warning(tokenizer, prompt: str) -> str | None:
    """Why a model whose tokenizer reads only the toy world's words (the embedded model, a toy recipe's) may not draw
    ``prompt`` as written: the words its tokenizer does not know (:func:`.toy.language.vocabulary_warning`), or else
    why the toy language cannot read it. ``None`` for other models and for prompts the toy language reads."""
    from ..toy.language import reads_toy_language, tokenizer_words, vocabulary_warning
    from ..toy.world import parse_prompt

    if not reads_toy_language(tokenizer):
        return None
    warning = vocabulary_warning(prompt, tokenizer_words(tokenizer))
    if warning is None:
        try:
            parse_prompt(prompt)
        except ValueError as error:
            warning = f"the toy model may not draw this as written: {error}"
    return warning


def run(args: argparse.Namespace) -> int:
    """Generate and save the images; prints which model made them, and a warning (stderr) when the model is a toy
    model that cannot read the prompt (:func:`toy_prompt_warning`)."""
    sampler = scheduler_name(args.scheduler)
    if args.num_images < 1:
        raise ValueError(f"--num-images must be at least 1, got {args.num_images}.")
    paths = output_paths(args.out, args.num_images)
    pipe, description = load_args_pipeline(args, sampler)
    print(f"model: {description}")
    warning = toy_prompt_warning(pipe.tokenizer, args.prompt)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)
    _, _, steps, guidance = SCHEDULERS[sampler]
    images = pipe(
        args.prompt,
        negative_prompt=args.negative,
        num_inference_steps=args.steps if args.steps is not None else steps,
        guidance_scale=args.guidance if args.guidance is not None else guidance,
        height=args.height,
        width=args.width,
        num_images_per_prompt=args.num_images,
        generator=torch.Generator(device=args.device).manual_seed(args.seed),
    ).images
    for image, path in zip(images, paths):
        write_png_atomic(path, image)
        print(f"saved {path} ({image.width}x{image.height})")
    return 0

"""Precompute PixArt-alpha training features: T5 caption embeddings (120 tokens, masks) and VAE latent moments.

Every process encodes its own part of the data and writes parquet shards; rerunning the same command resumes.

    accelerate launch examples/extract_features.py --data path/or/hub-id --model PixArt-alpha/PixArt-XL-2-512x512 \\
        --resolution 512 --multi_scale --output_dir features-512

The training scripts stream the folder with ``diffusers_pixart.data.features.FeatureLoader``; the code is
``diffusers_pixart.data.features.extract_dataset_features``.
"""

from __future__ import annotations

import argparse

import torch
from accelerate import Accelerator

from diffusers_pixart.data.features import extract_dataset_features
from diffusers_pixart.data.streaming import DEFAULT_MIN_IMAGE_SIDE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Precompute PixArt-alpha training features: T5 caption embeddings (120 tokens, masks) and VAE latent "
            "moments."
        )
    )
    parser.add_argument("--data", required=True, help="Hub dataset id, or a local imagefolder/webdataset/parquet path.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--caption_column", default="text", help="Caption column; 'none' for label-only features.")
    parser.add_argument("--label_column", default=None)
    parser.add_argument(
        "--model", required=True, help="Pipeline folder or Hub id with vae/, text_encoder/, tokenizer/."
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--multi_scale", action="store_true", help="Aspect-ratio buckets instead of square crops.")
    parser.add_argument(
        "--min_size",
        type=int,
        default=DEFAULT_MIN_IMAGE_SIDE,
        help=f"Skip images whose shorter side is smaller (default {DEFAULT_MIN_IMAGE_SIDE}; 0 keeps every image).",
    )
    parser.add_argument(
        "--num_workers", type=int, default=0, help="Processes decoding and resizing the images (0: this one)."
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--max_length",
        type=int,
        default=120,
        help="T5 tokens per caption: PixArt-alpha 120; PixArt-Sigma 300 (the trainers' default for a Sigma base: they "
        "refuse a features folder of another length than their --max_sequence_length).",
    )
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="Storage dtype.")
    parser.add_argument(
        "--encoder_dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="T5 compute dtype (T5 breaks in float16).",
    )
    parser.add_argument("--rows_per_shard", type=int, default=1000)
    parser.add_argument("--max_samples", type=int, default=None, help="Rows per process, for smoke runs.")
    args = parser.parse_args(argv)
    if args.caption_column == "none":
        args.caption_column = None
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator()
    rows, skipped = extract_dataset_features(
        args.data,
        args.model,
        args.output_dir,
        split=args.split,
        image_column=args.image_column,
        caption_column=args.caption_column,
        label_column=args.label_column,
        resolution=args.resolution,
        multi_scale=args.multi_scale,
        min_size=args.min_size,
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dtype=args.dtype,
        encoder_dtype=getattr(torch, args.encoder_dtype),
        rows_per_shard=args.rows_per_shard,
        max_samples=args.max_samples,
        device=accelerator.device,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    print(f"rank {accelerator.process_index}: {rows} rows in {args.output_dir}; skipped {skipped}")
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()

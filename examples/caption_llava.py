"""Dense captions with LLaVA (paper section 2.4): caption an image dataset, batched and resumable.

    accelerate launch examples/caption_llava.py --data path/or/hub-id --model llava-hf/llava-1.5-7b-hf \\
        --output_dir captioned --batch_size 8

Each process captions its own part; rerun the same command to resume. ``--with_original_caption CAPTION_COLUMN`` uses
the prompt variant that shows the model each image's original caption.
"""

from __future__ import annotations

import argparse

import torch
from accelerate import Accelerator
from transformers import AutoModelForImageTextToText, AutoProcessor

from diffusers_pixart.data.captioning import (
    DEFAULT_PROMPT,
    DEFAULT_PROMPT_WITH_CAPTION,
    CaptionSourceLoader,
    caption_dataset,
)
from diffusers_pixart.data.streaming import load_streaming_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Dense captions with LLaVA (paper section 2.4): caption an image dataset, batched and resumable."
    )
    parser.add_argument("--data", required=True, help="Hub dataset id, or a local imagefolder/webdataset/parquet path.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--model", required=True, help="LLaVA model folder or Hub id (with its processor).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--output_column", default="llava_caption")
    parser.add_argument("--prompt", default=None, help=f"Default: {DEFAULT_PROMPT!r}.")
    parser.add_argument(
        "--with_original_caption",
        metavar="CAPTION_COLUMN",
        default=None,
        help="Show the model this column's caption (prompt with a {caption} placeholder).",
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--rows_per_shard", type=int, default=1000)
    parser.add_argument("--max_samples", type=int, default=None, help="Rows per process, for smoke runs.")
    args = parser.parse_args(argv)
    prompt = args.prompt or (DEFAULT_PROMPT_WITH_CAPTION if args.with_original_caption else DEFAULT_PROMPT)

    accelerator = Accelerator()
    processor = AutoProcessor.from_pretrained(args.model)
    processor.tokenizer.padding_side = "left"  # generation continues every row from its last token
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    model = model.to(accelerator.device).eval()
    loader = CaptionSourceLoader(
        load_streaming_dataset(args.data, split=args.split),
        image_column=args.image_column,
        caption_column=args.with_original_caption,
        batch_size=args.batch_size,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        drop_last=False,
        max_epochs=1,
    )
    rows = caption_dataset(
        loader,
        args.output_dir,
        model=model,
        processor=processor,
        prompt=prompt,
        output_column=args.output_column,
        max_new_tokens=args.max_new_tokens,
        rows_per_shard=args.rows_per_shard,
        max_samples=args.max_samples,
    )
    print(f"rank {accelerator.process_index}: {rows} rows in {args.output_dir}; skipped {dict(loader.skipped)}")
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()

"""A user's LoRA on the toy model (issue #21): a word the model never saw drawn, learned with LoRA and with DoRA.

    OMP_NUM_THREADS=1 python examples/toy/run_lora.py --out runs/toy-lora

200 images of objects in a colour outside the toy palette (lime) called "retro", with varied captions; the embedded
model fine-tuned with ``examples/train_lora.py``'s code (``--adapter lora`` and ``dora``), each result loaded with
``pipe.load_lora_weights``. Reports how often "retro" shows in held-out prompts that pair it with shapes and places
it never had in training, and the toy CompBench of prompts without it before and after (forgetting). Writes
``<out>/scores.json`` and ``<out>/contact_sheet.png`` (the code: ``lora.py`` here); ``--docs`` also
copies them to ``docs/toy_lora.{json,png}``.
"""

import argparse
import shutil
import sys
from pathlib import Path

from lora import LoraExampleSettings, run_lora_example

from diffusers_pixart import TOY_MODEL_PATH

DOCS = Path(__file__).resolve().parents[2] / "docs"


def main() -> int:
    parser = argparse.ArgumentParser(
        description="A user's LoRA on the toy model: a new word (a colour) learned with LoRA and DoRA, and measured."
    )
    parser.add_argument("--out", default="runs/toy-lora", help="Output folder.")
    parser.add_argument("--model", default=str(TOY_MODEL_PATH), help="Toy pipeline folder (default: the embedded one).")
    parser.add_argument("--adapters", nargs="+", default=["lora", "dora"], help="Adapters to train, one run each.")
    parser.add_argument("--steps", type=int, default=LoraExampleSettings.steps, help="Optimizer steps per run.")
    parser.add_argument("--rank", type=int, default=LoraExampleSettings.rank)
    parser.add_argument("--learning_rate", type=float, default=LoraExampleSettings.learning_rate)
    parser.add_argument("--docs", action="store_true", help="Copy scores.json and the contact sheet into docs/.")
    args = parser.parse_args()
    settings = LoraExampleSettings(
        adapters=tuple(args.adapters), steps=args.steps, rank=args.rank, learning_rate=args.learning_rate
    )
    run_lora_example(args.out, args.model, settings)
    if args.docs:
        shutil.copyfile(Path(args.out) / "scores.json", DOCS / "toy_lora.json")
        shutil.copyfile(Path(args.out) / "contact_sheet.png", DOCS / "toy_lora.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

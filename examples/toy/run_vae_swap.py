"""PixArt-Σ's weak-to-strong VAE swap on the toy world (issue 19): the embedded model continued on a new toy VAE.

    OMP_NUM_THREADS=1 nice -n 10 python examples/toy/run_vae_swap.py --out runs/vae_swap --docs

trains a second toy VAE (another seed and channel widths: another latent space), encodes the recipe's stage-2 images
with it, continues the embedded model on them with its VAE replaced (stage 2's trainer with ``--vae``, resuming
segment after segment) and scores toy CompBench at step 0 and after each evaluated step, against the embedded model
with its own VAE. Writes ``<out>/results.json``, ``results.md``, ``score_vs_steps.png`` and ``contact_sheet.png``;
``--docs`` copies them to ``docs/vae_swap/``. A rerun continues where the last one stopped (the code: ``vae_swap.py``).
"""

import argparse
import shutil
import sys
from pathlib import Path

from vae_swap import VaeSwapSettings, run_vae_swap

from diffusers_pixart import TOY_MODEL_PATH
from diffusers_pixart.training.config import show_messages

DOCS = Path(__file__).resolve().parents[2] / "docs" / "vae_swap"
OUTPUTS = ("results.json", "results.md", "score_vs_steps.png", "contact_sheet.png")


def main() -> int:
    parser = argparse.ArgumentParser(description="PixArt-Sigma's VAE swap on the toy world: steps until recovery.")
    parser.add_argument("--out", default="runs/vae_swap", help="Run folder (a rerun continues).")
    parser.add_argument("--model", default=str(TOY_MODEL_PATH), help="Toy pipeline (default: the embedded one).")
    parser.add_argument("--vae_steps", type=int, default=VaeSwapSettings.vae_steps, help="Steps of the new VAE.")
    parser.add_argument("--train_images", type=int, default=VaeSwapSettings.train_images, help="Training images.")
    parser.add_argument(
        "--evaluated_steps", type=int, nargs="+", default=list(VaeSwapSettings.evaluated_steps),
        help="Training steps after which toy CompBench is measured (the last one is the run's length).",
    )  # fmt: skip
    parser.add_argument("--num_prompts", type=int, default=VaeSwapSettings.num_prompts, help="Held-out prompts.")
    parser.add_argument("--docs", action="store_true", help="Copy the results into docs/vae_swap/.")
    args = parser.parse_args()
    settings = VaeSwapSettings(
        vae_steps=args.vae_steps,
        train_images=args.train_images,
        evaluated_steps=tuple(args.evaluated_steps),
        num_prompts=args.num_prompts,
        sheet_prompts=min(VaeSwapSettings.sheet_prompts, args.num_prompts),
    )
    show_messages()
    run_vae_swap(args.out, args.model, settings, log=lambda line: print(line, flush=True))
    if args.docs:
        DOCS.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            if (Path(args.out) / name).is_file():
                shutil.copyfile(Path(args.out) / name, DOCS / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

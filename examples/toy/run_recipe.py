"""The toy recipe: PixArt-alpha's three training stages on the toy world, end to end, on a 2-core CPU.

    python examples/toy/run_recipe.py --out runs/toy

makes the toy data sets, trains a small VAE, builds the toy T5, runs stage 1 (class-conditional DiT) ->
re-parameterization -> stage 2 (dense captions) -> stage 3 (aesthetic style, aspect-ratio buckets, micro-conditions)
with the repository's stage scripts, and writes ``runs/toy/pipeline`` with ``loss_curves.json`` and
``timings.json``. A rerun continues from the last finished step. ``--install`` then copies the pipeline into the
package as the embedded default model (``diffusers_pixart.TOY_MODEL_PATH``). The budgets are options (``--help``).
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from diffusers_pixart.toy.recipe import ToyRecipe, install_toy_model, run_recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/toy", help="Run folder.")
    parser.add_argument("--install", action="store_true", help="Copy the final pipeline into the package.")
    scalars = {"int": int, "float": float, "str": str}  # the budget options; the tuples keep their defaults
    fields = [field for field in dataclasses.fields(ToyRecipe) if field.type in scalars]
    for field in fields:
        parser.add_argument(f"--{field.name}", type=scalars[field.type], default=field.default, help="(ToyRecipe)")
    args = parser.parse_args()
    recipe = ToyRecipe(**{field.name: getattr(args, field.name) for field in fields})
    final = run_recipe(args.out, Path(__file__).resolve().parents[1], recipe)
    print(f"pipeline: {final}")
    if args.install:
        print(f"installed: {install_toy_model(final)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

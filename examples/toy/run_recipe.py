"""The toy recipe: PixArt-alpha's three training stages on the toy world, end to end, on a 2-core CPU.

    python examples/toy/run_recipe.py --out runs/toy

makes the toy data sets, trains a small VAE, builds the toy T5, runs stage 1 (class-conditional DiT) ->
re-parameterization -> stage 2 (dense captions) -> stage 3 (aesthetic style, aspect-ratio buckets, micro-conditions)
in this process, with the stage scripts' library entry points, and writes ``runs/toy/pipeline`` with
``loss_curves.json`` and ``timings.json``. A rerun continues from the last finished step. ``--install`` then copies the
pipeline into the package as the embedded default model (``diffusers_pixart.TOY_MODEL_PATH``). The budgets are options
(``--help``).

    python examples/toy/run_recipe.py --out runs/toy --continue_from src/diffusers_pixart/toy_model --align_steps 1200

teaches a trained toy pipeline the current toy language instead (``continue_recipe``; the code: ``recipe.py`` here).
"""

import argparse
import dataclasses
import sys

from recipe import ToyRecipe, continue_recipe, install_toy_model, run_recipe

from diffusers_pixart.training.config import show_messages


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(
            "The toy recipe: PixArt-alpha's three training stages on the toy world, end to end, on a 2-core CPU."
        )
    )
    parser.add_argument("--out", default="runs/toy", help="Run folder.")
    parser.add_argument("--install", action="store_true", help="Copy the final pipeline into the package.")
    parser.add_argument("--continue_from", default=None, help="A trained toy pipeline to teach the current language.")
    parser.add_argument("--align_steps", type=int, default=1200, help="Steps on the stage-2 images (--continue_from).")
    parser.add_argument("--aesthetic_steps", type=int, default=0, help="Then on the stage-3 images (--continue_from).")
    scalars = {"int": int, "float": float, "str": str}  # the budget options; the tuples keep their defaults
    fields = [field for field in dataclasses.fields(ToyRecipe) if field.type in scalars]
    for field in fields:
        parser.add_argument(f"--{field.name}", type=scalars[field.type], default=field.default, help="(ToyRecipe)")
    args = parser.parse_args()
    recipe = ToyRecipe(**{field.name: getattr(args, field.name) for field in fields})
    show_messages()  # the stages' data summaries and resume positions, as the stage scripts show them
    if args.continue_from is not None:
        final = continue_recipe(args.continue_from, args.out, args.align_steps, args.aesthetic_steps, recipe)
    else:
        final = run_recipe(args.out, recipe)
    print(f"pipeline: {final}")
    if args.install:
        print(f"installed: {install_toy_model(final)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

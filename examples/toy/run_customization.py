"""Customization on the toy model (issue #7): DreamBooth of a new colour token, and a ControlNet on edge maps.

    python examples/toy/run_customization.py --out runs/customization

DreamBooth: five renders of a magenta circle (a colour the toy world never shows) captioned "one object. a large sks
circle in the center.", with ``sks`` added to the tokenizer; the fraction of images of the new colour before and
after, and what the model still does with palette colours and held-out prompts. ControlNet: half of the toy model's
blocks trained on Canny edges of toy data; the toy CompBench scores of held-out prompts with and without the edge
maps of their ground-truth renders. Writes ``<out>/scores.json`` and ``<out>/{dreambooth,controlnet}/contact_sheet.png``
(the code: ``customization.py`` here). The budgets are options (``--help``).
"""

import argparse
import dataclasses
import sys

from customization import EXAMPLES, CustomizationSettings, run_customization

from diffusers_pixart import TOY_MODEL_PATH


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Customization on the toy model (issue #7): DreamBooth of a new colour token, and a ControlNet on "
            "edge maps."
        )
    )
    parser.add_argument("--out", default="runs/customization", help="Output folder.")
    parser.add_argument("--model", default=str(TOY_MODEL_PATH), help="Toy pipeline folder (default: the embedded one).")
    parser.add_argument("--only", choices=list(EXAMPLES), default=None, help="Run one example only.")
    kinds = {"int": int, "float": float, "str": str}
    for field in dataclasses.fields(CustomizationSettings):
        nargs = 3 if field.type == "RGB" else None
        kind = int if nargs else kinds[field.type]
        parser.add_argument(f"--{field.name}", type=kind, nargs=nargs, default=field.default, help="%(default)s")
    args = parser.parse_args()
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(CustomizationSettings)}
    settings = CustomizationSettings(**{**values, "color": tuple(values["color"])})
    run_customization(args.out, args.model, settings, [args.only] if args.only else list(EXAMPLES))
    return 0


if __name__ == "__main__":
    sys.exit(main())

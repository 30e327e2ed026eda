"""A user's LoRA on the toy model (issue #21): a word the model never saw drawn, learned with LoRA and with DoRA.

    OMP_NUM_THREADS=1 python examples/toy/run_lora.py --out runs/toy-lora

200 images of objects in a colour outside the toy palette (indigo; one the model's VAE decodes, checked before
training) called "retro", with varied captions; the embedded model fine-tuned with ``examples/train_lora.py``'s code
(``--adapter lora`` and ``dora``), each result loaded with
``pipe.load_lora_weights``. Reports how often "retro" shows in held-out prompts that pair it with shapes and places
it never had in training, and the toy CompBench of prompts without it before and after (forgetting). Writes
``<out>/scores.json`` and ``<out>/contact_sheet.png`` (the code: ``lora.py`` here); ``--docs`` also
copies them to ``docs/toy_lora.{json,png}``.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from lora import LoraExampleSettings, run_lora_example

from diffusers_pixart import TOY_MODEL_PATH
from diffusers_pixart.atomic import write_json_atomic

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: The runs of ``docs/toy_lora.json``: LoRA and DoRA, LoRA with the word's embedding row (pivotal tuning), and a
#: LoRA with a larger budget, alone and with the embedding row.
MEASURED_RUNS = ("lora", "dora", "lora+emb", "lora@800", "lora+emb@800")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="A user's LoRA on the toy model: a new word (a colour) learned with LoRA and DoRA, and measured."
    )
    parser.add_argument("--out", default="runs/toy-lora", help="Output folder.")
    parser.add_argument("--model", default=str(TOY_MODEL_PATH), help="Toy pipeline folder (default: the embedded one).")
    parser.add_argument(
        "--adapters",
        nargs="+",
        default=list(MEASURED_RUNS),
        help="Runs, one each: adapter[+emb][@steps], e.g. lora, dora+emb (pivotal tuning: the word's T5 embedding "
        "row trains too), lora@500 (another budget than --steps).",
    )
    parser.add_argument("--steps", type=int, default=LoraExampleSettings.steps, help="Optimizer steps per run.")
    parser.add_argument("--rank", type=int, default=LoraExampleSettings.rank)
    parser.add_argument("--learning_rate", type=float, default=LoraExampleSettings.learning_rate)
    parser.add_argument(
        "--embedding_learning_rate",
        type=float,
        default=LoraExampleSettings.embedding_learning_rate,
        help="Learning rate of the word's T5 embedding row in +emb runs.",
    )
    parser.add_argument("--docs", action="store_true", help="Copy scores.json and the contact sheet into docs/.")
    args = parser.parse_args()
    settings = LoraExampleSettings(
        adapters=tuple(args.adapters),
        steps=args.steps,
        rank=args.rank,
        learning_rate=args.learning_rate,
        embedding_learning_rate=args.embedding_learning_rate,
    )
    results = run_lora_example(args.out, args.model, settings)
    if args.docs:
        copy_to_docs(Path(args.out), results)
    return 0


def copy_to_docs(out: Path, results: dict[str, Any]) -> None:
    """Write ``results`` (the run's ``scores.json``) to ``docs/toy_lora.json`` and its contact sheet to
    ``docs/toy_lora.png``. The runs of the earlier ``docs/toy_lora.json`` stay, with their settings (and VAE check,
    where measured), under ``earlier_runs``, unless this run repeats them (same name and settings); a name already
    kept gets a number (``base (2)``). Their base model or colour may differ from this one's: compare with their own
    base."""
    docs_json = DOCS / "toy_lora.json"
    if docs_json.is_file():
        earlier = json.loads(docs_json.read_text(encoding="utf-8"))
        kept = {**earlier.get("earlier_runs", {})}
        same_settings = _without_runs(earlier["settings"]) == _without_runs(results["settings"])
        for name, measures in earlier["models"].items():
            if same_settings and name in results["models"]:
                continue  # rerun
            key, number = name, 1
            while key in kept:
                number += 1
                key = f"{name} ({number})"
            check = {"vae_check": earlier["vae_check"]} if "vae_check" in earlier else {}
            kept[key] = {**measures, "settings": earlier["settings"], **check}
        results = {**results, "earlier_runs": kept}
    write_json_atomic(docs_json, results)
    shutil.copyfile(out / "contact_sheet.png", DOCS / "toy_lora.png")


def _without_runs(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the list of runs (``adapters``)."""
    return {key: value for key, value in settings.items() if key != "adapters"}


if __name__ == "__main__":
    sys.exit(main())

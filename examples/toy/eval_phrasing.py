"""Toy CompBench per phrasing family: does a toy model read prompts written the ways it never saw in training?

    python examples/toy/eval_phrasing.py --model runs/toy/pipeline --num-prompts 100 --out docs/toy_phrasing_scores.json

Prompt ``i`` of every family describes the same scene (:func:`diffusers_pixart.toy.sample_prompts` with ``family``;
15% of the scenes hold two copies of one shape), and image ``i`` of every family uses the same seed, so the families
differ only in their wording. Prints and saves the mean scores per family, and over the families seen in training
(:data:`~diffusers_pixart.toy.world.TRAINING_FAMILIES`) and those held out
(:data:`~diffusers_pixart.toy.world.HELD_OUT_FAMILIES`). ``--prompt`` scores one prompt over ``--num-prompts`` seeds
instead.
"""

import argparse
import json
import sys

import numpy as np

from diffusers_pixart.default_model import load_pipeline
from diffusers_pixart.evaluation import sample_images
from diffusers_pixart.schedulers import SCHEDULERS
from diffusers_pixart.toy import CATEGORIES, mean_scores, sample_prompts, score_image
from diffusers_pixart.toy.world import FAMILIES, HELD_OUT_FAMILIES, TRAINING_FAMILIES, parse_prompt


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Toy CompBench per phrasing family: does a toy model read prompts written the ways it never saw in "
            "training?"
        )
    )
    parser.add_argument("--model", default=None, help="Pipeline folder (default: the embedded model).")
    parser.add_argument("--num-prompts", type=int, default=100, help="Prompts per family (seeds with --prompt).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the prompts and of image 0.")
    parser.add_argument("--prompt", default=None, help="Score this one prompt over --num-prompts seeds.")
    parser.add_argument("--group-probability", type=float, default=0.15, help="Scenes with two copies of a shape.")
    parser.add_argument("--out", default=None, help="JSON file for the scores.")
    args = parser.parse_args()
    pipe, description = load_pipeline(args.model)
    pipe.set_scheduler("dpm")
    _, _, steps, guidance = SCHEDULERS["dpm"]
    settings = {"model": description, "scheduler": "dpm", "steps": steps, "guidance": guidance, "seed": args.seed}
    if args.prompt is not None:
        meaning = parse_prompt(args.prompt)
        images = sample_images(pipe, [args.prompt] * args.num_prompts, seed=args.seed, steps=steps, guidance=guidance)
        results = {**settings, "prompt": args.prompt, "scores": mean_scores([score_image(i, meaning) for i in images])}
        print(json.dumps(results["scores"]))
    else:
        families = {}
        for family in FAMILIES:
            prompts = sample_prompts(
                args.num_prompts, args.seed, family=family, group_probability=args.group_probability
            )
            images = sample_images(pipe, [p.text for p in prompts], seed=args.seed, steps=steps, guidance=guidance)
            families[family] = mean_scores([score_image(i, p.meaning) for i, p in zip(images, prompts)])
            print(family, {k: round(v, 3) for k, v in families[family].items() if v is not None}, flush=True)
        groups = {"seen": list(TRAINING_FAMILIES), "held_out": list(HELD_OUT_FAMILIES)}
        summary = {
            name: {
                k: float(np.mean([families[f][k] for f in members if families[f][k] is not None]))
                for k in (*CATEGORIES, "overall")
            }
            for name, members in groups.items()
        }
        summary["held_out_over_seen"] = summary["held_out"]["overall"] / summary["seen"]["overall"]
        results = {**settings, "num_prompts": args.num_prompts, "families": families, **summary}
        print(json.dumps(summary))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

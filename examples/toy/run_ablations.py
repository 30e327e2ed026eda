"""The paper's design claims at toy scale (issue 24): every ablation arm, three seeds, one command.

    OMP_NUM_THREADS=1 python examples/toy/run_ablations.py --out runs/ablations --docs docs/ablations

trains the arms of ``ablations.py`` here (re-parameterization, adaLN-single, dense captions, the three stages) and
writes ``docs/ablations/results.json``, ``results.md`` (a table per claim), ``curves.png`` and a contact sheet per arm.
A rerun continues where one stopped (every scored point is kept in ``runs/ablations/results``); the report is
rewritten after each seed, so a partial run is committable. The sizes and budgets are options (``--help``); a copy of
a finished run's folder continued with a longer ``--stage2_steps`` (the same scored steps first) and some ``--arms``
trains on from the checkpoints, as the longer-budget run of the docs was made.
"""

import argparse
import dataclasses
import sys

from ablations import ARMS, AblationSettings, run_ablations

from diffusers_pixart.training.config import show_messages


def main() -> int:
    parser = argparse.ArgumentParser(description="The paper's design claims at toy scale: every ablation arm.")
    parser.add_argument("--out", default="runs/ablations", help="Run folder (resumable).")
    parser.add_argument("--docs", default="docs/ablations", help="Report folder.")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(AblationSettings.seeds), help="Seeds.")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="Arms to run (default: all).")
    scalars = {"int": int, "float": float, "str": str}
    fields = [field for field in dataclasses.fields(AblationSettings) if field.type in scalars]
    for field in fields:
        parser.add_argument(f"--{field.name}", type=scalars[field.type], default=field.default, help="(settings)")
    args = parser.parse_args()
    budget = {field.name: getattr(args, field.name) for field in fields}
    settings = AblationSettings(seeds=tuple(args.seeds), arms=tuple(args.arms), **budget)
    show_messages()
    results = run_ablations(args.out, args.docs, settings)
    print(open(f"{args.docs}/results.md", encoding="utf-8").read())
    return 0 if results["arms"] else 1


if __name__ == "__main__":
    sys.exit(main())

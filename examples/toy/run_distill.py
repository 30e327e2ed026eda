"""Few-step sampling on the toy world (issue 20): distil the embedded model into an LCM-LoRA and measure it.

    python examples/toy/run_distill.py --features runs/toy/work/features/stage2 --out runs/distill

1. **Distil** (``diffusers_pixart.training.distillation``): an LCM-LoRA on the toy model, trained on its stage-2
   features (VAE latents and T5 embeddings of the toy images, made by the toy recipe with the same VAE and T5), the
   teacher's guided step at guidance 4.5 as the recipe's sampler uses.
2. **Measure**: toy CompBench (colour, shape, spatial, count, overall) of ``--num-prompts`` held-out prompts for the
   teacher at 20 DPM-Solver steps with guidance 4.5 (the default sampler), the teacher at 4 DPM-Solver steps (the
   baseline distillation must beat), and the student (LCM, guidance 0; its LoRA fused into the weights, as ``pixart
   generate --scheduler lcm`` serves it) at 1, 2, 4 and 8 steps, and unfused at 4 steps; the prompt-to-PNG time of one
   image at batch 1 for each (median of ``--timing-repeats``, in this process, after one warm-up).
3. Writes ``<out>/results.json``, ``<out>/results.md`` (the table) and ``<out>/contact_sheet.png`` (rows: teacher 20
   steps, teacher 4 steps, student 1/2/4 steps; columns: the first prompts); with ``--install`` the adapter is copied
   into the embedded model folder as ``lcm_lora/`` (what the Space's "fast" sampler and ``--lora`` load).

``--measure-only`` skips step 1 and measures the model's own ``lcm_lora/`` (the embedded model's shipped adapter):
``python examples/toy/run_distill.py --measure-only --out runs/distill_measure``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from diffusers_pixart import TOY_MODEL_PATH
from diffusers_pixart.atomic import atomic_dir, write_json_atomic, write_text_atomic
from diffusers_pixart.default_model import shipped_lcm_lora
from diffusers_pixart.evaluation import contact_sheet, sample_images
from diffusers_pixart.toy import mean_scores, sample_prompts, score_image
from diffusers_pixart.toy.few_step import FEW_STEP_SETTINGS, TEACHER_SETTING, few_step_pipeline
from diffusers_pixart.training.distillation import DistillConfig, train_lcm_distill

SHEET_ROWS = list(FEW_STEP_SETTINGS)[:5]


def distil(args: argparse.Namespace) -> Path:
    """Train the LCM-LoRA (kept in ``<out>/train``; a rerun continues from its last checkpoint)."""
    config = DistillConfig(
        pretrained_model_name_or_path=args.model,
        features=args.features,
        output_dir=str(Path(args.out) / "train"),
        resolution=64,
        max_sequence_length=64,
        train_batch_size=args.batch_size,
        max_train_steps=args.steps,
        learning_rate=args.learning_rate,
        lr_scheduler="constant",
        checkpointing_steps=max(1, args.steps // 4),
        checkpoints_total_limit=1,
        resume_from_checkpoint="latest",
        validation_steps=0,
        report_to="none",
        lora_rank=args.rank,
        mixed_precision="bf16" if args.bf16 else "no",
        seed=args.seed,
    )
    return train_lcm_distill(config)


def measure(args: argparse.Namespace, lora: Path) -> tuple[dict, list]:
    """Scores and times of every setting; the contact-sheet rows."""
    prompts = [prompt.text for prompt in sample_prompts(args.num_prompts, seed=args.seed)]
    results, rows = {}, []
    for name, setting in FEW_STEP_SETTINGS.items():
        pipe = few_step_pipeline(args.model, setting, lora)
        steps, guidance = setting.steps, setting.guidance
        images = sample_images(pipe, prompts, seed=args.seed, steps=steps, guidance=guidance, batch_size=16)
        scores = mean_scores([score_image(image, prompt) for image, prompt in zip(images, prompts)])
        times = []
        for repeat in range(args.timing_repeats + 1):
            start = time.perf_counter()
            image = pipe(prompts[0], num_inference_steps=steps, guidance_scale=guidance).images[0]
            image.save(Path(args.out) / ".timing.png")
            if repeat:  # the first call warms up
                times.append(time.perf_counter() - start)
        results[name] = {**scores, "seconds_per_image": statistics.median(times), "steps": steps}
        print(name, json.dumps(results[name]), flush=True)
        if name in SHEET_ROWS:
            rows.append(images[: args.sheet_columns])
    (Path(args.out) / ".timing.png").unlink(missing_ok=True)
    return results, rows


def table(results: dict) -> str:
    """The results as a markdown table, with each setting's overall score and time relative to the teacher's."""
    teacher = results[TEACHER_SETTING]
    lines = [
        "| sampler | colour | shape | spatial | count | overall | vs teacher | s / image | vs teacher |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        cells = [f"{row[key]:.3f}" if row[key] is not None else "-" for key in ("color", "shape", "spatial", "count")]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {row['overall']:.3f} | {row['overall'] / teacher['overall']:.0%} | "
            f"{row['seconds_per_image']:.3f} | {row['seconds_per_image'] / teacher['seconds_per_image']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Distil the toy model into an LCM-LoRA and measure few-step sampling.")
    parser.add_argument("--model", default=str(TOY_MODEL_PATH), help="Toy pipeline folder (default: the embedded one).")
    parser.add_argument("--features", default=None, help="Stage-2 features of the model's VAE and T5 (to distil).")
    parser.add_argument(
        "--measure-only", action="store_true", help="No distillation: measure the model's own lcm_lora/ (as shipped)."
    )
    parser.add_argument("--out", default="runs/distill", help="Output folder.")
    parser.add_argument("--steps", type=int, default=200, help="Distillation steps.")
    parser.add_argument("--batch-size", type=int, default=32, help="Distillation batch size.")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="LoRA learning rate (5e-4 diverged).")
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank.")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (CPUs with AVX512-BF16).")
    parser.add_argument("--num-prompts", type=int, default=200, help="Held-out prompts per setting.")
    parser.add_argument("--timing-repeats", type=int, default=5, help="Timed prompt-to-PNG runs per setting.")
    parser.add_argument("--sheet-columns", type=int, default=8, help="Prompts on the contact sheet.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the run, the prompts and the images.")
    parser.add_argument("--install", action="store_true", help="Copy the adapter into the model folder (lcm_lora/).")
    args = parser.parse_args()
    if args.measure_only and args.install:
        parser.error("--install copies a distilled adapter: it does not go with --measure-only.")
    if not args.measure_only and args.features is None:
        parser.error("--features is required to distil (or pass --measure-only to measure the model's lcm_lora/).")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.measure_only:
        lora, minutes = shipped_lcm_lora(args.model), None
        if lora is None:
            parser.error(f"--measure-only: {args.model} has no lcm_lora/ adapter to measure.")
    else:
        start = time.perf_counter()
        lora = distil(args)
        minutes = (time.perf_counter() - start) / 60
    results, rows = measure(args, lora)
    settings = {key: value for key, value in vars(args).items() if key != "install"}
    write_json_atomic(Path(args.out) / "results.json", {"settings": settings, "distil_minutes": minutes, **results})
    write_text_atomic(Path(args.out) / "results.md", table(results))
    sheet = contact_sheet([image for row in rows for image in row], columns=args.sheet_columns)
    sheet.save(Path(args.out) / "contact_sheet.png")
    print(table(results))
    if args.install:
        with atomic_dir(Path(args.model) / "lcm_lora") as tmp:
            for path in lora.iterdir():
                shutil.copy2(path, tmp / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

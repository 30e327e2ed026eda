"""PixArt-Σ's weak-to-strong VAE swap on the toy world (issue 19, item 5 (a)): how fast a trained model adapts to a
new latent space.

PixArt-Σ starts from PixArt-α and replaces its VAE (SD's) by SDXL's, whose latent space is another one; the paper
reports that the model adapts within a few thousand steps. The toy analogue, :func:`run_vae_swap`:

1. a second toy VAE with another latent space: another seed and other channel widths than the embedded model's
   (same 4 latent channels and 16 x 16 latents at 64 px), trained as the recipe trains its VAE
   (:func:`recipe.train_vae` on the recipe's stage-2 and aesthetic images);
2. the recipe's stage-2 images (captions in the training phrasing families) encoded again with the new VAE
   (:func:`~diffusers_pixart.data.features.extract_dataset_features`);
3. the embedded model continued on them with its VAE replaced: stage 2's trainer with ``vae=<new VAE>`` (the stage
   scripts' ``--vae``) and the recipe's settings (:func:`recipe.train_toy_stage`), in segments that resume from the
   last checkpoint;
4. toy CompBench of held-out prompts for the embedded model with its own VAE (the reference), the swapped model
   before any step (step 0) and after each segment.

``run_vae_swap.py`` is the command line; every result is kept under its ``--out`` and a rerun continues.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from eval_editing import vae_round_trip
from PIL import Image
from recipe import (
    RESOLUTION,
    ToyRecipe,
    extract_toy_features,
    load_images,
    make_toy_datasets,
    make_toy_vae,
    reconstruction_error,
    save_base_pipeline,
    train_toy_stage,
    train_vae,
)

from diffusers_pixart.atomic import atomic_dir, write_json_atomic, write_png_atomic, write_text_atomic
from diffusers_pixart.evaluation import contact_sheet, sample_images
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.toy.compbench import CATEGORIES, mean_scores, score_image
from diffusers_pixart.toy.world import render, sample_prompts
from diffusers_pixart.training.logs import read_loss_curve

#: The name of the reference row: the embedded model with its own VAE.
ORIGINAL = "original"
#: The table's rows of the ceilings: the prompts' renders as they are and after each VAE's round trip.
ROUND_TRIP_LABELS = {"render": "the prompts' renders", ORIGINAL: "renders, original VAE round trip",
                     "new": "renders, new VAE round trip"}  # fmt: skip


@dataclass
class VaeSwapSettings:
    """Sizes and budgets of :func:`run_vae_swap`; the defaults are the measured run. Training follows
    :class:`recipe.ToyRecipe` (batch 32, bf16, AdamW 1e-3 constant after 100 warm-up steps, EMA 0.998, velocity
    prediction, min-SNR 5, 64 caption tokens)."""

    seed: int = 0
    vae_seed: int = 1
    vae_channels: tuple[int, ...] = (16, 16, 32)
    vae_images: int = 600
    vae_steps: int = 2500
    train_images: int = 3000
    evaluated_steps: tuple[int, ...] = (100, 250, 500, 1000, 1500)
    num_prompts: int = 64
    sampler_steps: int = 20
    guidance: float = 4.5
    sheet_prompts: int = 8
    recipe: ToyRecipe = field(default_factory=ToyRecipe)

    def __post_init__(self):
        steps = list(self.evaluated_steps)
        if not steps or steps != sorted(set(steps)) or steps[0] < 1:
            raise ValueError(f"`evaluated_steps` must be increasing positive steps, got {self.evaluated_steps}.")
        for name in ("vae_images", "vae_steps", "train_images", "num_prompts", "sampler_steps", "sheet_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")


def new_vae(data: dict[str, Path], out: Path, settings: VaeSwapSettings, log: Callable[[str], None]) -> Path:
    """Train the second toy VAE (once) as the recipe trains its own, on the same images; its folder."""
    folder = out / "vae"
    if (folder / "config.json").is_file():
        return folder
    recipe = settings.recipe
    images = torch.cat([load_images(data["stage2"], limit=settings.vae_images), load_images(data["vae_aesthetic"])])
    vae = make_toy_vae(settings.vae_channels, seed=settings.vae_seed)

    def progress(step: int, record: dict[str, float]) -> None:
        if step % 250 == 0 or step == settings.vae_steps:
            log(f"vae step {step}: loss {record['loss']:.4f}")

    history = train_vae(
        vae, images, settings.vae_steps, learning_rate=recipe.vae_learning_rate, seed=settings.vae_seed, log=progress
    )
    error = reconstruction_error(vae, images[:: max(1, len(images) // 256)])
    log(f"new vae: reconstruction error {error:.2f} / 255, scaling factor {vae.config.scaling_factor:.4f}")
    write_json_atomic(out / "vae_history.json", {"history": history, "reconstruction_error": error})
    with atomic_dir(folder) as tmp:
        vae.save_pretrained(tmp)
    return folder


@torch.no_grad()
def latent_similarity(old: AutoencoderKL, new: AutoencoderKL, images: torch.Tensor) -> dict[str, float]:
    """How alike two VAEs' latent spaces are on ``images``: for each new latent channel the largest absolute
    correlation with any old channel (1: the same up to sign and scale), and their mean; both latents scaled."""
    latents = []
    for vae in (old, new):
        means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(64)])
        latents.append((means * vae.config.scaling_factor).transpose(0, 1).flatten(1))  # (C, N * h * w)
    stacked = torch.corrcoef(torch.cat(latents))
    channels = latents[0].shape[0]
    best = stacked[channels:, :channels].abs().amax(dim=1)
    return {"best_abs_correlation_per_channel": best.tolist(), "mean_best_abs_correlation": float(best.mean())}


def swapped_pipeline(out: Path, model: Path, vae: Path) -> Path:
    """The embedded model with the new VAE (once): the step-0 model, and the source of the new features."""
    folder = out / "swapped"
    if not (folder / "model_index.json").is_file():
        pipe = PixArtAlphaPipeline.from_pretrained(model)
        save_base_pipeline(
            folder, AutoencoderKL.from_pretrained(vae), pipe.tokenizer, pipe.text_encoder, pipe.transformer
        )
    return folder


def new_features(data: Path, pipeline: Path, out: Path, settings: VaeSwapSettings, log: Callable[[str], None]) -> Path:
    """The stage-2 images' latents (new VAE) and caption embeddings, extracted once; their folder."""
    return extract_toy_features(data, pipeline, out / "features", log, settings.recipe.max_sequence_length)


def evaluate(
    pipeline_dir: Path, prompts: Sequence[Any], settings: VaeSwapSettings
) -> tuple[dict[str, float | None], list[Image.Image]]:
    """Toy CompBench of ``prompts`` (held-out, with their meanings) for a pipeline folder; its images."""
    pipe = PixArtAlphaPipeline.from_pretrained(pipeline_dir)
    images = sample_images(
        pipe,
        [prompt.text for prompt in prompts],
        seed=settings.seed,
        steps=settings.sampler_steps,
        guidance=settings.guidance,
        resolution=RESOLUTION,
    )
    return mean_scores([score_image(image, prompt.meaning) for image, prompt in zip(images, prompts)]), images


def round_trip_scores(pipelines: dict[str, Path], prompts: Sequence[Any]) -> dict[str, dict[str, float | None]]:
    """Toy CompBench of the prompts' renders (``render``) as they are and after each pipeline's VAE round trip: the
    most a model drawing through that VAE can score."""
    renders = [render(prompt.meaning, RESOLUTION) for prompt in prompts]
    sets = {"render": renders}
    for name, folder in pipelines.items():
        sets[name] = vae_round_trip(PixArtAlphaPipeline.from_pretrained(folder), renders)
    return {
        name: mean_scores([score_image(image, prompt.meaning) for image, prompt in zip(images, prompts)])
        for name, images in sets.items()
    }


def by_steps(results: dict[str, Any]) -> list[tuple[str, dict[str, float | None]]]:
    """The swapped model's ``(steps, scores)`` in the order of the steps (``results.json`` sorts keys as strings)."""
    return sorted(((k, v) for k, v in results["scores"].items() if k != ORIGINAL), key=lambda item: int(item[0]))


def _cells(scores: dict[str, float | None]) -> str:
    return " | ".join("-" if scores[key] is None else f"{scores[key]:.3f}" for key in (*CATEGORIES, "overall"))


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table of the scores: the reference, then the swapped model by training steps."""
    header = "| model | steps | " + " | ".join(CATEGORIES) + " | overall | overall / original |"
    rows = [header, "|" + " --- |" * (len(CATEGORIES) + 4)]
    reference = results["scores"][ORIGINAL]["overall"]
    for name, scores in [(ORIGINAL, results["scores"][ORIGINAL]), *by_steps(results)]:
        label, steps = ("original VAE", "-") if name == ORIGINAL else ("new VAE", name)
        rows.append(f"| {label} | {steps} | {_cells(scores)} | {scores['overall'] / reference:.0%} |")
    ceilings = results.get("round_trip", {})
    for name, label in ROUND_TRIP_LABELS.items():
        if name in ceilings:
            rows.append(f"| {label} | - | {_cells(ceilings[name])} | {ceilings[name]['overall'] / reference:.0%} |")
    return "\n".join(rows)


def plot(results: dict[str, Any], path: Path) -> None:
    """Overall score against training steps (with the reference as a line) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(int(name), scores) for name, scores in by_steps(results)]
    figure, axes = plt.subplots(figsize=(6, 3.6))
    for key in ("overall", *CATEGORIES):
        axes.plot([s for s, _ in points], [scores[key] for _, scores in points], marker="o", label=key,
                  linewidth=2.5 if key == "overall" else 1)  # fmt: skip
    axes.axhline(results["scores"][ORIGINAL]["overall"], color="black", linestyle="--", label="original (overall)")
    axes.set(xlabel="training steps on the new VAE", ylabel="toy CompBench", ylim=(0, 1.02))
    ceiling = results.get("round_trip", {}).get("new")
    if ceiling is not None:
        axes.axhline(ceiling["overall"], color="grey", linestyle=":", label="new VAE round trip (overall)")
    axes.set_title("Toy VAE swap: the embedded model on a new VAE", fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_vae_swap(
    out_dir: str | os.PathLike,
    model: str | os.PathLike,
    settings: VaeSwapSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the experiment of the module docstring; every step is kept under ``out_dir`` and a rerun continues.

    Writes ``out_dir/results.json`` (settings, VAE measures, scores by step, losses, times), ``results.md`` (the
    table), ``score_vs_steps.png`` and ``contact_sheet.png`` (rows: the reference, then
    step 0 and each evaluated step; columns: the first ``sheet_prompts`` prompts).

    Returns:
        The results (as in ``results.json``).
    """
    settings = settings or VaeSwapSettings()
    out, model = Path(out_dir), Path(model)
    results_path = out / "results.json"
    results: dict[str, Any] = {"settings": asdict(settings), "scores": {}, "times": {}}
    if results_path.is_file():
        results = json.loads(results_path.read_text(encoding="utf-8"))
    times = results["times"]

    def timed(what: str, function: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = function()
        times[what] = round(times.get(what, 0.0) + time.perf_counter() - start, 1)
        return value

    recipe = settings.recipe
    sizes = ToyRecipe(**{**asdict(recipe), "stage1_images": 1, "stage2_images": settings.train_images,
                         "stage3_images": 1, "vae_images": settings.vae_images})  # fmt: skip
    data = timed("data", lambda: make_toy_datasets(out / "data", sizes))
    vae_dir = timed("vae", lambda: new_vae(data, out, settings, log))
    if "vae" not in results:
        images = load_images(data["stage2"], limit=256)
        old, new = AutoencoderKL.from_pretrained(model, subfolder="vae"), AutoencoderKL.from_pretrained(vae_dir)
        results["vae"] = {
            "channels": {"original": list(old.config.block_out_channels), "new": list(new.config.block_out_channels)},
            "scaling_factor": {"original": old.config.scaling_factor, "new": new.config.scaling_factor},
            "reconstruction_error_255": {
                "original": reconstruction_error(old, images),
                "new": reconstruction_error(new, images),
            },
            "latent_similarity": latent_similarity(old, new, images),
        }
        log(f"vae: {results['vae']}")
    swapped = swapped_pipeline(out, model, vae_dir)
    features = timed("features", lambda: new_features(data["stage2"], swapped, out, settings, log))

    prompts = sample_prompts(settings.num_prompts, settings.seed)
    sheets = out / "sheet_rows"

    def measure(name: str, pipeline_dir: Path) -> None:
        if name in results["scores"]:
            return
        scores, images = timed(f"evaluate {name}", lambda: evaluate(pipeline_dir, prompts, settings))
        results["scores"][name] = scores
        for index, image in enumerate(images[: settings.sheet_prompts]):
            write_png_atomic(sheets / name / f"{index:02d}.png", image)
        write_json_atomic(results_path, results)
        log(f"{name}: {', '.join(f'{k} {v:.3f}' for k, v in scores.items() if v is not None)}")

    if "round_trip" not in results:
        results["round_trip"] = timed(
            "round trips", lambda: round_trip_scores({ORIGINAL: model, "new": swapped}, prompts)
        )
        write_json_atomic(results_path, results)
        log(f"round trips: {results['round_trip']}")
    measure(ORIGINAL, model)
    measure("0", swapped)
    run = out / "train"
    for steps in settings.evaluated_steps:
        if str(steps) in results["scores"]:
            continue
        timed(
            "train",
            lambda steps=steps: train_toy_stage(
                f"vae swap to step {steps}",
                2,
                run,
                recipe,
                steps,
                log,
                pretrained_model_name_or_path=str(model),
                vae=str(vae_dir),
                features=str(features),
                resume_from_checkpoint="latest",
            ),
        )
        measure(str(steps), run / "pipeline")
    results["loss"] = read_loss_curve(run)
    write_json_atomic(results_path, results)
    write_text_atomic(out / "results.md", results_table(results) + "\n")
    rows = [
        Image.open(sheets / name / f"{index:02d}.png").convert("RGB")
        for name in [ORIGINAL, *(steps for steps, _ in by_steps(results))]
        for index in range(settings.sheet_prompts)
    ]
    write_png_atomic(out / "contact_sheet.png", contact_sheet(rows, columns=settings.sheet_prompts))
    plot(results, out / "score_vs_steps.png")
    return results

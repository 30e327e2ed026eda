"""``pixart eval toy|fid|clip``: generate images for prompts, score them, save a contact sheet and the scores as JSON.

- ``toy``: held-out prompts of the toy world (:func:`diffusers_pixart.toy.sample_prompts`) scored by the toy CompBench;
- ``fid``: the user's prompts against a folder of reference images, with a local Inception TorchScript file;
- ``clip``: the user's prompts, CLIP score with a local or Hub CLIP model.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..atomic import write_png_atomic, write_text_atomic
from ..schedulers import SCHEDULERS, scheduler_name
from .generate import DTYPES, add_lora_arguments, load_args_pipeline

#: Suffixes of the files read as reference images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command and its ``toy``, ``fid`` and ``clip`` benchmarks."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=None, help="Pipeline folder or Hub id (default: the embedded model).")
    common.add_argument("--seed", type=int, default=0, help="Random seed (image i uses seed + i).")
    common.add_argument("--steps", type=int, default=None, help="Denoising steps (default: the sampler's own).")
    common.add_argument("--guidance", type=float, default=None, help="Guidance scale (default: the sampler's own).")
    common.add_argument("--scheduler", default="dpm", help=f"Sampler: one of {', '.join(SCHEDULERS)}.")
    add_lora_arguments(common)
    common.add_argument("--resolution", type=int, default=None, help="Square image side (default: the model's).")
    common.add_argument("--batch-size", type=int, default=8, help="Prompts per generation batch.")
    common.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="Device.")
    common.add_argument("--dtype", default="float32", choices=list(DTYPES), help="Weights dtype.")

    parser = subparsers.add_parser("eval", help="Generate images for prompts and score them.")
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)
    toy = benchmarks.add_parser("toy", parents=[common], help="Toy CompBench on held-out toy-world prompts.")
    toy.add_argument("--num-prompts", type=int, default=16, help="Held-out prompts to generate.")
    toy.add_argument("--out", default="eval-toy", help="Folder for contact_sheet.png and scores.json.")
    toy.set_defaults(func=run_toy)
    fid = benchmarks.add_parser("fid", parents=[common], help="FID of the model's images against reference images.")
    fid.add_argument("--prompts", required=True, help="Text file, one prompt per line.")
    fid.add_argument("--reference", required=True, help="Folder of reference images.")
    fid.add_argument("--inception", required=True, help="TF-FID Inception TorchScript file (inception-2015-12-05.pt).")
    fid.add_argument("--fid-size", type=int, default=299, help="Side every image is resized to for the features.")
    fid.add_argument("--out", default="eval-fid", help="Folder for contact_sheet.png and scores.json.")
    fid.set_defaults(func=run_fid)
    clip = benchmarks.add_parser("clip", parents=[common], help="CLIP score of the model's images for the prompts.")
    clip.add_argument("--prompts", required=True, help="Text file, one prompt per line.")
    clip.add_argument("--clip-model", required=True, help="CLIP model folder or Hub id.")
    clip.add_argument("--out", default="eval-clip", help="Folder for contact_sheet.png and scores.json.")
    clip.set_defaults(func=run_clip)


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The non-blank lines of a text file, stripped; ValueError when there are none."""
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts.")
    return prompts


def read_images(folder: str | os.PathLike) -> list[Image.Image]:
    """Every image file of ``folder`` (sorted by name), as RGB; ValueError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder.")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return [Image.open(p).convert("RGB") for p in paths]


def generate_images(args: argparse.Namespace, prompts: Sequence[str]) -> tuple[list[Image.Image], dict]:
    """Images of ``prompts`` from the model of ``args``, one seed per image; also the settings used."""
    from ..evaluation import sample_images

    sampler = scheduler_name(args.scheduler)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    pipe, description = load_args_pipeline(args, sampler)
    print(f"model: {description}")
    _, _, steps, guidance = SCHEDULERS[sampler]
    settings = {
        "model": description,
        "scheduler": sampler,
        "steps": args.steps if args.steps is not None else steps,
        "guidance": args.guidance if args.guidance is not None else guidance,
        "resolution": args.resolution or pipe.transformer.config.sample_size * pipe.vae_scale_factor,
        "seed": args.seed,
    }
    images = sample_images(
        pipe,
        prompts,
        seed=args.seed,
        steps=settings["steps"],
        guidance=settings["guidance"],
        resolution=settings["resolution"],
        batch_size=args.batch_size,
        device=args.device,
    )
    return images, settings


def save_results(out: str | os.PathLike, images: Sequence[Image.Image], results: dict) -> None:
    """Write ``contact_sheet.png`` and ``scores.json`` into ``out``, each atomically."""
    from ..evaluation import contact_sheet

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_png_atomic(out / "contact_sheet.png", contact_sheet(images))
    write_text_atomic(out / "scores.json", json.dumps(results, indent=2))
    print(f"saved {out / 'contact_sheet.png'} and {out / 'scores.json'}")


def _print_scores(scores: dict) -> None:
    for name, value in scores.items():
        print(f"{name}: {'n/a' if value is None else f'{value:.4f}'}")


def run_toy(args: argparse.Namespace) -> int:
    """Generate images for held-out toy prompts, score them with the toy CompBench, save and print the scores."""
    from ..toy import mean_scores, sample_prompts, score_image

    prompts = sample_prompts(args.num_prompts, seed=args.seed)
    images, settings = generate_images(args, [p.text for p in prompts])
    per_image = [score_image(image, prompt.meaning) for image, prompt in zip(images, prompts)]
    scores = mean_scores(per_image)
    results = {
        **settings,
        "benchmark": "toy_compbench",
        "scores": scores,
        "per_image": [{"prompt": p.text, "scores": s} for p, s in zip(prompts, per_image)],
    }
    save_results(args.out, images, results)
    _print_scores(scores)
    return 0


def run_fid(args: argparse.Namespace) -> int:
    """Generate images for the prompts and compute their FID against the reference images."""
    from ..evaluation import fid, load_inception

    prompts = read_prompts(args.prompts)
    reference = read_images(args.reference)
    extractor = load_inception(args.inception)
    if len(prompts) < 2 or len(reference) < 2:
        raise ValueError(
            f"FID needs at least 2 prompts and 2 reference images, got {len(prompts)} and {len(reference)}."
        )
    images, settings = generate_images(args, prompts)
    size = (args.fid_size, args.fid_size)
    scores = {"fid": fid(images, reference, extractor, args.batch_size, size)}
    results = {**settings, "benchmark": "fid", "num_reference": len(reference), "prompts": prompts, "scores": scores}
    save_results(args.out, images, results)
    _print_scores(scores)
    return 0


def run_clip(args: argparse.Namespace) -> int:
    """Generate images for the prompts and compute their CLIP score."""
    from ..evaluation import clip_scores, load_clip

    prompts = read_prompts(args.prompts)
    model, processor = load_clip(args.clip_model)
    images, settings = generate_images(args, prompts)
    per_image = clip_scores(images, prompts, model.to(args.device), processor, args.batch_size)
    scores = {"clip_score": float(per_image.mean())}
    results = {
        **settings,
        "benchmark": "clip_score",
        "clip_model": args.clip_model,
        "scores": scores,
        "per_image": [{"prompt": p, "clip_score": float(s)} for p, s in zip(prompts, per_image)],
    }
    save_results(args.out, images, results)
    _print_scores(scores)
    return 0

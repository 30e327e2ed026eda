"""Inpainting and img2img measured on the toy world, where the right answer of every edit is known (issue 22).

    OMP_NUM_THREADS=1 python examples/toy/eval_editing.py                 # the embedded model, 100 scenes a part
    python examples/toy/eval_editing.py --model runs/toy/pipeline --num-scenes 20 --out-dir /tmp/editing

(a) **Inpainting: "replace the object at <region> with a <colour> <shape>".** Scene ``i`` (two or three objects,
:func:`diffusers_pixart.toy.sample_scene`) is rendered; one of its objects' grid cell is the mask, and the prompt is
the dense caption of the scene with that object replaced by a colour no object has and another shape
(:mod:`diffusers_pixart.toy.editing`). Toy CompBench reads the result: the new object (colour, shape, place), the old
one gone, the other objects kept in their cells, and how much the pixels outside the mask moved. For scale, the same
scores of the new caption drawn from scratch (text-to-image), of the edited scene's own render (the detector's
ceiling) and of the unedited image.

(b) **img2img recolouring: "the same scene, all objects red".** Scene ``i`` (one to three objects) is rendered and
edited with the caption of the scene with every colour replaced by red, at strengths 0.3, 0.5, 0.7, 0.9 and 1.0:
the share of objects whose cell now holds a red object, the share whose cell still holds an object of its shape (the
layout kept), both, the count, and the intersection over union of the objects' silhouettes with the input's.

Image ``i`` uses the seed ``--seed + i`` in every part and at every strength. Writes ``results.json``, ``results.md``
(the tables) and a contact sheet per part (``inpainting.png``, ``recolouring.png``) to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffusers_pixart import PixArtAlphaImg2ImgPipeline, PixArtAlphaInpaintPipeline
from diffusers_pixart.atomic import atomic_file, write_text_atomic
from diffusers_pixart.default_model import load_pipeline
from diffusers_pixart.evaluation import contact_sheet, sample_images
from diffusers_pixart.schedulers import SCHEDULERS
from diffusers_pixart.toy import STYLES, Scene, dense_caption, render, sample_scene
from diffusers_pixart.toy.editing import (
    Replacement,
    cell_mask,
    mean_of,
    recolour,
    sample_replacement,
    score_recolouring,
    score_replacement,
)

STRENGTHS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
RECOLOUR = "red"
#: Random streams of the two parts' scenes (no data set or prompt set of the toy world uses them).
INPAINTING_STREAM, RECOLOURING_STREAM = 22_001, 22_002
#: Scenes shown in the contact sheets.
SHEET_COLUMNS = 8


def inpainting_cases(num_scenes: int, seed: int = 0) -> list[Replacement]:
    """Scene ``i``: two or three objects, one of them replaced
    (:func:`~diffusers_pixart.toy.editing.sample_replacement`)."""
    cases = []
    for index in range(num_scenes):
        rng = np.random.default_rng([seed, index, INPAINTING_STREAM])
        cases.append(sample_replacement(rng, sample_scene(rng, min_objects=2)))
    return cases


def recolouring_scenes(num_scenes: int, seed: int = 0) -> list[Scene]:
    """Scene ``i``: one to three objects."""
    return [sample_scene(np.random.default_rng([seed, index, RECOLOURING_STREAM])) for index in range(num_scenes)]


def native_size(pipe: Any) -> int:
    """The side in pixels the pipeline's model draws at."""
    return pipe.transformer.config.sample_size * pipe.vae_scale_factor


def _edit_batch(
    pipeline: Any,
    prompts: Sequence[str],
    images: Sequence[Image.Image],
    indices: Sequence[int],
    *,
    seed: int,
    steps: int,
    guidance: float,
    **kwargs: Any,
) -> list[Image.Image]:
    """The edits of images ``indices`` in one call; image ``i`` with the seed ``seed + i``."""
    return pipeline(
        [prompts[i] for i in indices],
        image=[images[i] for i in indices],
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=[torch.Generator().manual_seed(seed + i) for i in indices],
        use_resolution_binning=False,
        **kwargs,
    ).images


def _from_pipe(cls: type, pipe: Any) -> Any:
    """``cls`` on the weights of ``pipe``, in their dtype (``from_pipe`` alone casts them to float32)."""
    pipeline = cls.from_pipe(pipe, dtype=pipe.transformer.dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run_inpainting(
    pipe: Any,
    cases: Sequence[Replacement],
    *,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 4.5,
    strength: float = 1.0,
    style: str = "plain",
    batch_size: int = 16,
) -> tuple[list[Image.Image], list[Image.Image], list[Image.Image]]:
    """Inpaint each case: its scene's render, its object's cell as the mask, the caption after the edit.

    Cases with the same cell share a mask and run as one batch. Returns the originals, the masks and the results.
    """
    size = native_size(pipe)
    inpaint = _from_pipe(PixArtAlphaInpaintPipeline, pipe)
    originals = [render(case.before, size, style=style) for case in cases]
    masks = [cell_mask(case.old.region, size, size) for case in cases]
    results: list[Image.Image | None] = [None] * len(cases)
    by_region = defaultdict(list)
    for index, case in enumerate(cases):
        by_region[case.old.region].append(index)
    captions = [case.caption for case in cases]
    for indices in by_region.values():
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            images = _edit_batch(
                inpaint,
                captions,
                originals,
                batch,
                seed=seed,
                steps=steps,
                guidance=guidance,
                mask_image=masks[batch[0]],
                strength=strength,
            )
            for i, image in zip(batch, images):
                results[i] = image
    return originals, masks, results


def run_recolouring(
    pipe: Any,
    scenes: Sequence[Scene],
    strengths: Sequence[float] = STRENGTHS,
    *,
    color: str = RECOLOUR,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 4.5,
    style: str = "plain",
    batch_size: int = 16,
) -> tuple[list[Image.Image], dict[float, list[Image.Image]]]:
    """img2img of each scene's render with the caption of the scene all ``color``, at each strength.

    Returns the originals and, per strength, the results.
    """
    size = native_size(pipe)
    img2img = _from_pipe(PixArtAlphaImg2ImgPipeline, pipe)
    originals = [render(scene, size, style=style) for scene in scenes]
    prompts = [dense_caption(recolour(scene.meaning, color)) for scene in scenes]
    results = {}
    for strength in strengths:
        results[strength] = []
        for start in range(0, len(scenes), batch_size):
            batch = range(start, min(start + batch_size, len(scenes)))
            results[strength] += _edit_batch(
                img2img, prompts, originals, batch, seed=seed, steps=steps, guidance=guidance, strength=strength
            )
    return originals, results


def score_inpainting(
    cases: Sequence[Replacement],
    originals: Sequence[Image.Image],
    masks: Sequence[Image.Image],
    edited: Sequence[Image.Image],
    text_to_image: Sequence[Image.Image] | None = None,
    round_trips: Sequence[Image.Image] | None = None,
    style: str = "plain",
) -> dict[str, dict[str, float | None]]:
    """Mean :func:`~diffusers_pixart.toy.editing.score_replacement` scores of the inpainted images, of the text-to-image
    ones and the originals' VAE round trips (when given), of the edited scenes' renders and of the unedited originals.
    """
    size = originals[0].height
    rows = {
        "inpainted": edited,
        "text_to_image": text_to_image,
        "target_render": [render(case.after, size, style=style) for case in cases],
        "original": originals,
        "round_trip": round_trips,
    }
    return {
        name: mean_of(
            [
                score_replacement(image, case, mask, original)
                for image, case, mask, original in zip(images, cases, masks, originals)
            ]
        )
        for name, images in rows.items()
        if images is not None
    }


def score_recolourings(
    scenes: Sequence[Scene],
    originals: Sequence[Image.Image],
    results: dict[float, Sequence[Image.Image]],
    color: str = RECOLOUR,
    round_trips: Sequence[Image.Image] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Mean :func:`~diffusers_pixart.toy.editing.score_recolouring` scores of the input (``"input"``), of its VAE
    round trip (``"round trip"``, when given: where small strengths tend to) and per strength."""
    rows = {"input": originals, "round trip": round_trips}
    rows.update({f"{strength:g}": images for strength, images in results.items()})
    return {
        name: mean_of(
            [
                score_recolouring(image, scene, original, color)
                for image, scene, original in zip(images, scenes, originals)
            ]
        )
        for name, images in rows.items()
        if images is not None
    }


@torch.no_grad()
def vae_round_trip(pipe: Any, images: Sequence[Image.Image]) -> list[Image.Image]:
    """``vae.decode(vae.encode(image))`` of each image (the latent mean): what img2img gives as its strength goes to 0
    and what inpainting keeps outside the mask."""
    processor, vae = pipe.image_processor, pipe.vae
    pixels = processor.preprocess(list(images)).to(vae.device, vae.dtype)
    decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
    return processor.postprocess(decoded, output_type="pil")


def _shown_mask(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with the mask lightened, as a sheet shows it."""
    white = Image.new("RGB", image.size, (255, 255, 255))
    return Image.composite(Image.blend(image, white, 0.6), image, mask)


def inpainting_sheet(originals, masks, edited, targets) -> Image.Image:
    """Columns: scenes; rows: the original, the mask, the inpainted image, the edited scene's render."""
    n = min(SHEET_COLUMNS, len(originals))
    rows = [originals[:n], [_shown_mask(o, m) for o, m in zip(originals[:n], masks[:n])], edited[:n], targets[:n]]
    return contact_sheet([image for row in rows for image in row], columns=n)


def recolouring_sheet(originals, results: dict[float, Sequence[Image.Image]]) -> Image.Image:
    """Columns: scenes; rows: the input, then the result at each strength (increasing)."""
    n = min(SHEET_COLUMNS, len(originals))
    rows = [originals[:n], *[images[:n] for _, images in sorted(results.items())]]
    return contact_sheet([image for row in rows for image in row], columns=n)


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    """The two tables of ``results`` (as :func:`evaluate` returns them), in Markdown."""
    inpainting, recolouring = results["inpainting"], results["recolouring"]
    names = {
        "inpainted": f"inpainted (strength {inpainting['strength']:g})",
        "text_to_image": "text-to-image of the new caption",
        "target_render": "render of the edited scene",
        "original": "unedited image",
        "round_trip": "its VAE round trip",
    }
    lines = [
        f"Inpainting, {inpainting['num_scenes']} scenes (2-3 objects; the replaced object's grid cell masked):",
        "",
        "| image | new: colour | shape | place | all | old gone | rest: colour | shape | spatial | kept | overall "
        "| outside-mask MAE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ("new_color", "new_shape", "new_place", "new_object", "old_gone", "rest_color", "rest_shape")
    keys += ("rest_spatial", "rest_kept", "overall", "outside_mae")
    for name, scores in inpainting["scores"].items():
        cells = [_cell(scores[key]) if key != "outside_mae" else _mae(scores[key]) for key in keys]
        lines.append(f"| {names.get(name, name)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"img2img recolouring to {recolouring['color']}, {recolouring['num_scenes']} scenes (1-3 objects):",
        "",
        f"| strength | {recolouring['color']} | layout kept | both | count | mask IoU |",
        "|---|---|---|---|---|---|",
    ]
    for name, scores in recolouring["scores"].items():
        label = {"input": "the input", "round trip": "its VAE round trip"}.get(name, name)
        cells = [_cell(scores[key]) for key in ("colored", "layout", "both", "count", "mask_iou")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mae(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def evaluate(
    pipe: Any,
    num_scenes: int = 100,
    *,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    strengths: Sequence[float] = STRENGTHS,
    inpaint_strength: float = 1.0,
    style: str = "plain",
    log=print,
) -> tuple[dict[str, Any], Image.Image, Image.Image]:
    """Both parts on ``num_scenes`` scenes each with the pipeline's DPM-Solver defaults (or ``steps``/``guidance``),
    the scenes rendered in ``style``.

    Returns the results (settings and mean scores; see :func:`markdown`) and the two contact sheets.
    """
    pipe.set_scheduler("dpm")
    pipe.set_progress_bar_config(disable=True)
    _, _, default_steps, default_guidance = SCHEDULERS["dpm"]
    steps, guidance = steps or default_steps, default_guidance if guidance is None else guidance
    settings = dict(seed=seed, steps=steps, guidance=guidance)

    start = time.perf_counter()
    cases = inpainting_cases(num_scenes, seed)
    originals, masks, edited = run_inpainting(pipe, cases, strength=inpaint_strength, style=style, **settings)
    drawn = sample_images(pipe, [case.caption for case in cases], **settings)
    round_trips = vae_round_trip(pipe, originals)
    inpainting_scores = score_inpainting(cases, originals, masks, edited, drawn, round_trips, style)
    size = native_size(pipe)
    targets = [render(case.after, size, style=style) for case in cases]
    inpaint_sheet = inpainting_sheet(originals, masks, edited, targets)
    inpainting = {
        "num_scenes": num_scenes,
        "strength": inpaint_strength,
        "mask": "the replaced object's grid cell",
        "scores": inpainting_scores,
        "seconds": round(time.perf_counter() - start, 1),
    }
    log(f"inpainting: {json.dumps(inpainting_scores['inpainted'])}")

    start = time.perf_counter()
    scenes = recolouring_scenes(num_scenes, seed)
    inputs, recoloured = run_recolouring(pipe, scenes, strengths, style=style, **settings)
    recolouring = {
        "num_scenes": num_scenes,
        "color": RECOLOUR,
        "strengths": list(strengths),
        "scores": score_recolourings(scenes, inputs, recoloured, round_trips=vae_round_trip(pipe, inputs)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    for name, scores in recolouring["scores"].items():
        log(f"recolouring at strength {name}: {json.dumps(scores)}")
    recolour_sheet = recolouring_sheet(inputs, recoloured)
    results = {
        "resolution": size,
        "scheduler": "dpm",
        **settings,
        "style": style,
        "inpainting": inpainting,
        "recolouring": recolouring,
    }
    return results, inpaint_sheet, recolour_sheet


def write(out_dir: Path, results: dict[str, Any], inpaint_sheet: Image.Image, recolour_sheet: Image.Image) -> None:
    """``results.json``, ``results.md``, ``inpainting.png`` and ``recolouring.png`` in ``out_dir``, each written
    whole."""
    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(out_dir / "results.md", markdown(results))
    for name, sheet in (("inpainting.png", inpaint_sheet), ("recolouring.png", recolour_sheet)):
        with atomic_file(out_dir / name) as tmp:
            sheet.save(tmp, format="PNG")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Inpainting (replace one object) and img2img (recolour every object red) on the toy world, "
        "scored with toy CompBench; writes results.json, results.md and two contact sheets."
    )
    parser.add_argument("--model", default=None, help="Pipeline folder (default: the embedded model).")
    parser.add_argument("--num-scenes", type=int, default=100, help="Scenes per part.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the scenes and of image 0.")
    parser.add_argument("--style", choices=STYLES, default="plain", help="How the scenes are rendered.")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/editing"), help="Where the results go.")
    args = parser.parse_args(argv)
    if args.num_scenes < 1:
        parser.error(f"--num-scenes must be at least 1, got {args.num_scenes}.")
    pipe, description = load_pipeline(args.model)
    start = time.perf_counter()
    results, inpaint_sheet, recolour_sheet = evaluate(pipe, args.num_scenes, seed=args.seed, style=args.style)
    results = {"model": description, **results, "seconds": round(time.perf_counter() - start, 1)}
    write(args.out_dir, results, inpaint_sheet, recolour_sheet)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Customization on the toy world (issue #7): DreamBooth of a colour the model never saw, and a ControlNet on edges.

**DreamBooth.** :func:`run_dreambooth` renders a handful of instance images of one object in a colour outside the
toy palette (magenta by default: its hue lies between purple's and pink's, more than 20 degrees from each, so the
toy CompBench tells it apart), captions them all with one dense caption whose colour word is a new token
(``"one object. a large sks circle in the center."``), and fine-tunes the toy model with the real DreamBooth code
(:func:`diffusers_pixart.training.dreambooth.train_dreambooth` with ``add_tokens``: ``sks`` becomes a token of the
word-level tokenizer with its own row in the frozen T5). :func:`concept_fraction` measures, before and after, how many
images of a prompt show the new colour: the colour of each image's largest object, read by the toy CompBench's
detector over the palette plus the new colour (:func:`object_colors`). The same prompt with a palette colour checks
that the model did not forget its colours, and held-out prompts check the rest of what it knew.

**ControlNet.** :func:`run_controlnet` trains a ControlNet-Half (half of the toy model's blocks) on Canny edge maps of
stage-2-like toy data with the real ControlNet code (:func:`diffusers_pixart.training.controlnet.train_controlnet`),
then :func:`compare_control` scores held-out prompts with and without it: each prompt's control image is the edge map
of its ground-truth render (:func:`ground_truth_controls`, with the low toy Canny thresholds
:data:`~diffusers_pixart.toy.world.TOY_CANNY_THRESHOLDS`), and base and controlled images share prompts and seeds.
Classifier-free guidance amplifies what the caption adds over the control, so the comparison is repeated at a low
guidance scale.

Both run in this process (``run_customization.py`` beside this file runs them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffusers_pixart.atomic import write_json_atomic, write_png_atomic
from diffusers_pixart.data.edges import canny_edges, check_canny_thresholds
from diffusers_pixart.evaluation import contact_sheet, sample_images
from diffusers_pixart.models.controlnet import PixArtControlNetModel
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline
from diffusers_pixart.text import add_tokens
from diffusers_pixart.toy.compbench import RGB, concept_palette, mean_scores, object_colors, score_image
from diffusers_pixart.toy.world import (
    POSITION_PHRASES,
    SHAPES,
    SIZES,
    TOY_CANNY_THRESHOLDS,
    Meaning,
    Scene,
    ToyObject,
    ToyPrompt,
    make_dataset,
    render,
    sample_prompts,
)
from diffusers_pixart.training.controlnet import ControlNetConfig, train_controlnet
from diffusers_pixart.training.dreambooth import DreamBoothConfig, load_dreambooth_lora, train_dreambooth
from diffusers_pixart.training.logs import read_loss_curve

#: The DreamBooth concept's default colour: magenta, 25 degrees of hue from purple and 23 from pink.
CONCEPT_COLOR: RGB = (215, 45, 215)


def concept_fraction(images: Sequence[Image.Image], name: str, palette: Mapping[str, RGB]) -> float:
    """The fraction of ``images`` whose largest object has the colour ``name`` of ``palette`` (:func:`object_colors`).

    Raises:
        ValueError: no images, or ``name`` not in ``palette``.
    """
    if len(images) == 0:
        raise ValueError("No images to measure.")
    if name not in palette:
        raise ValueError(f"{name!r} is not a colour of the palette {list(palette)}.")
    return _share(object_colors(images, palette), name)


def _share(colors: Sequence[str | None], name: str) -> float:
    """The fraction of ``colors`` equal to ``name``."""
    return float(np.mean([color == name for color in colors]))


def make_instance_images(
    out_dir: str | os.PathLike,
    n: int,
    obj: ToyObject,
    palette: Mapping[str, RGB],
    resolution: int = 64,
    seed: int = 0,
) -> list[Image.Image]:
    """Render ``n`` instance images of ``obj`` (a fully specified object in a colour of ``palette``), each moved by a
    random offset in its cell, and save them as PNG files into ``out_dir`` (a folder ``train_dreambooth`` reads).

    Raises:
        ValueError: ``n`` below 1, or ``obj`` without a size or region or with a colour outside ``palette``.
    """
    if n < 1:
        raise ValueError(f"`n` must be at least 1, got {n}.")
    if obj.size is None or obj.region is None or obj.color not in palette:
        raise ValueError(f"{obj} needs a size, a region and a colour of the palette {list(palette)}.")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for index in range(n):
        offset = tuple(float(v) for v in rng.uniform(-1.0, 1.0, size=2))
        image = render(Scene(Meaning((obj,)), (offset,)), resolution, palette=palette)
        image.save(out_dir / f"{index:03d}.png")
        images.append(image)
    return images


def object_prompt(obj: ToyObject) -> str:
    """The toy world's dense caption of a single object (``obj.color`` may be any word, e.g. a new token)."""
    return Meaning((obj,)).text


# ----------------------------------------------------------------------------------------------------------------------
# Settings


@dataclass
class CustomizationSettings:
    """Budgets and settings of :func:`run_dreambooth` and :func:`run_controlnet`; the defaults are the measured run."""

    seed: int = 0
    # generation (both examples)
    inference_steps: int = 20
    guidance_scale: float = 4.5
    batch_size: int = 16
    # DreamBooth
    token: str = "sks"
    color_name: str = "magenta"
    color: RGB = CONCEPT_COLOR
    shape: str = "circle"
    size: str = "large"
    region: str = "center"
    other_shape: str = "square"
    other_size: str = "small"
    other_region: str = "top left"
    instance_images: int = 5
    dreambooth_steps: int = 300
    # The paper fine-tunes at 1/4 of its pre-training rate (5e-6 vs 2e-5); the toy model pre-trained at 1e-3.
    dreambooth_learning_rate: float = 2.5e-4
    dreambooth_batch_size: int = 1
    lora_rank: int = 0
    eval_images: int = 32
    held_out_prompts: int = 32
    # ControlNet
    controlnet_images: int = 4000
    controlnet_layers: int = 3
    controlnet_steps: int = 2400
    controlnet_learning_rate: float = 1e-3
    controlnet_batch_size: int = 8
    controlnet_warmup_steps: int = 50
    canny_low_threshold: int = TOY_CANNY_THRESHOLDS[0]
    canny_high_threshold: int = TOY_CANNY_THRESHOLDS[1]
    control_prompts: int = 100
    control_scale: float = 1.0
    # A second comparison at this guidance scale (0: none): guidance amplifies the text, against the control.
    control_low_guidance: float = 1.0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, int) and not isinstance(value, bool) and name not in ("seed", "lora_rank"):
                if value < 1:
                    raise ValueError(f"`{name}` must be at least 1, got {value}.")
        if self.lora_rank < 0:
            raise ValueError(f"`lora_rank` must be 0 (full fine-tune) or more, got {self.lora_rank}.")
        for name in ("shape", "other_shape"):
            if getattr(self, name) not in SHAPES:
                raise ValueError(f"`{name}` {getattr(self, name)!r} is not a shape of {list(SHAPES)}.")
        for name in ("size", "other_size"):
            if getattr(self, name) not in SIZES["plain"]:
                raise ValueError(f"`{name}` {getattr(self, name)!r} is not a size of {list(SIZES['plain'])}.")
        for name in ("region", "other_region"):
            if getattr(self, name) not in POSITION_PHRASES:
                raise ValueError(f"`{name}` {getattr(self, name)!r} is not a region of {list(POSITION_PHRASES)}.")
        check_canny_thresholds(self.canny_low_threshold, self.canny_high_threshold)
        if self.control_low_guidance < 0:
            raise ValueError(f"`control_low_guidance` must be 0 (none) or more, got {self.control_low_guidance}.")

    def sample(self, pipe: Any, prompts: Sequence[str], **kwargs: Any) -> list[Image.Image]:
        """Images of ``prompts`` with these generation settings (image ``i``: seed ``seed + i``)."""
        pipe.set_progress_bar_config(disable=True)
        return sample_images(
            pipe,
            prompts,
            seed=self.seed,
            steps=self.inference_steps,
            guidance=self.guidance_scale,
            batch_size=self.batch_size,
            **kwargs,
        )


def timed(log: Callable[[str], None], what: str, times: dict[str, float], function: Callable[[], Any]) -> Any:
    """Call ``function``; record its wall time in seconds as ``times[what]`` and log it; return its result."""
    start = time.perf_counter()
    result = function()
    times[what] = round(time.perf_counter() - start, 1)
    log(f"{what}: {times[what]:.1f} s")
    return result


# ----------------------------------------------------------------------------------------------------------------------
# DreamBooth


def evaluate_dreambooth(
    pipe: PixArtAlphaPipeline,
    settings: CustomizationSettings,
    palette: Mapping[str, RGB],
    held_out: Sequence[ToyPrompt] = (),
) -> tuple[dict[str, Any], dict[str, list[Image.Image]]]:
    """The DreamBooth measures of one pipeline, ``settings.eval_images`` images (seeds ``seed + i``) per probe.

    Probes: ``concept`` (the instance prompt), ``concept_elsewhere`` (the token with another shape, size and region),
    ``palette`` (the instance prompt with a palette colour, red, in the token's place). Each reports the fraction of
    images whose object has the new colour; ``palette`` also its toy CompBench scores. ``held_out`` prompts give the
    mean CompBench scores of the model's other knowledge.

    Returns:
        (measures, images per probe).
    """
    token, name = settings.token, settings.color_name
    probes = {
        "concept": ToyObject(settings.shape, token, settings.size, settings.region),
        "concept_elsewhere": ToyObject(settings.other_shape, token, settings.other_size, settings.other_region),
        "palette": ToyObject(settings.shape, "red", settings.size, settings.region),
    }
    measures: dict[str, Any] = {}
    images: dict[str, list[Image.Image]] = {}
    for probe, obj in probes.items():
        prompt = object_prompt(obj)
        images[probe] = settings.sample(pipe, [prompt] * settings.eval_images)
        colors = object_colors(images[probe], palette)
        measures[probe] = {
            "prompt": prompt,
            "images": len(colors),
            "concept_fraction": _share(colors, name),
            "colors": {c or "none": colors.count(c) for c in dict.fromkeys(colors)},
        }
        if probe == "palette":
            measures[probe]["compbench"] = mean_scores([score_image(image, prompt) for image in images[probe]])
    if held_out:
        images["held_out"] = settings.sample(pipe, [p.text for p in held_out])
        measures["held_out"] = {
            "prompts": len(held_out),
            "compbench": mean_scores([score_image(im, p.meaning) for im, p in zip(images["held_out"], held_out)]),
        }
    return measures, images


def run_dreambooth(
    out_dir: str | os.PathLike,
    model: str | os.PathLike,
    settings: CustomizationSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Teach the toy model a new colour token with DreamBooth and measure it before and after.

    Writes ``out_dir/instance`` (the instance images), ``out_dir/run`` (the training run: ``pipeline`` or ``lora``),
    ``out_dir/scores.json`` and ``out_dir/contact_sheet.png`` (rows: the instance images; the instance prompt before
    training; after; the token with another shape and place after; the red prompt after).

    Args:
        out_dir: the example's folder (``instance`` and ``run`` are made anew).
        model: the toy pipeline folder to start from (e.g. :data:`diffusers_pixart.TOY_MODEL_PATH`).
        settings: budgets (default :class:`CustomizationSettings`).
        log: where progress lines go.

    Returns:
        The measures (also in ``scores.json``): settings, wall times, and ``before``/``after`` per probe.
    """
    settings = settings or CustomizationSettings()
    palette = concept_palette(settings.color_name, settings.color)
    out_dir = Path(out_dir)
    times: dict[str, float] = {}
    for folder in ("instance", "run"):  # a rerun starts over
        shutil.rmtree(out_dir / folder, ignore_errors=True)
    concept = ToyObject(settings.shape, settings.color_name, settings.size, settings.region)
    instance = make_instance_images(
        out_dir / "instance", settings.instance_images, concept, palette, seed=settings.seed
    )
    instance_prompt = object_prompt(ToyObject(settings.shape, settings.token, settings.size, settings.region))
    held_out = sample_prompts(settings.held_out_prompts, seed=settings.seed + 1)

    before_pipe = PixArtAlphaPipeline.from_pretrained(model)
    add_tokens(before_pipe.tokenizer, before_pipe.text_encoder, [settings.token], seed=settings.seed)
    before, before_images = timed(
        log, "evaluate before", times, lambda: evaluate_dreambooth(before_pipe, settings, palette, held_out)
    )
    config = DreamBoothConfig(
        output_dir=str(out_dir / "run"),
        pretrained_model_name_or_path=str(model),
        instance_data=str(out_dir / "instance"),
        instance_prompt=instance_prompt,
        add_tokens=[settings.token],
        resolution=instance[0].height,
        learning_rate=settings.dreambooth_learning_rate,
        max_train_steps=settings.dreambooth_steps,
        train_batch_size=settings.dreambooth_batch_size,
        lora_rank=settings.lora_rank,
        seed=settings.seed,
        validation_steps=0,
        checkpointing_steps=settings.dreambooth_steps,
        checkpoints_total_limit=1,
        report_to="none",
    )
    log(f"dreambooth: {settings.instance_images} images of {instance_prompt!r}, {settings.dreambooth_steps} steps")
    result = timed(log, "train dreambooth", times, lambda: train_dreambooth(config))
    if settings.lora_rank:
        after_pipe = load_dreambooth_lora(model, result)
    else:
        after_pipe = PixArtAlphaPipeline.from_pretrained(result)
    after, after_images = timed(
        log, "evaluate after", times, lambda: evaluate_dreambooth(after_pipe, settings, palette, held_out)
    )
    results = {
        "settings": {**asdict(settings), "instance_prompt": instance_prompt, "model": str(model)},
        "ground_truth": {"concept_fraction": concept_fraction(instance, settings.color_name, palette)},
        "before": before,
        "after": after,
        "wall_time_s": times,
    }
    columns = min(8, settings.eval_images)
    rows = [
        instance[:columns],
        before_images["concept"][:columns],
        after_images["concept"][:columns],
        after_images["concept_elsewhere"][:columns],
        after_images["palette"][:columns],
    ]
    sheet = contact_sheet([image for row in rows for image in _pad(row, columns)], columns=columns)
    _save(out_dir, sheet, results)
    return results


def _pad(images: Sequence[Image.Image], columns: int) -> list[Image.Image]:
    """``images`` padded with blank white images to ``columns`` (so that contact sheet rows stay aligned)."""
    blank = Image.new("RGB", images[0].size, (255, 255, 255))
    return list(images) + [blank] * (columns - len(images))


def _save(out_dir: Path, sheet: Image.Image, results: Mapping[str, Any]) -> None:
    """Write the example's contact sheet and its measures into ``out_dir``."""
    write_png_atomic(out_dir / "contact_sheet.png", sheet)
    write_json_atomic(out_dir / "scores.json", results)


# ----------------------------------------------------------------------------------------------------------------------
# ControlNet


def loss_summary(values: Sequence[float]) -> dict[str, float] | None:
    """Mean logged loss over the first and the last tenth of a run (single logged values are noisy)."""
    if not values:
        return None
    tenth = max(1, len(values) // 10)
    return {"first_tenth": float(np.mean(values[:tenth])), "last_tenth": float(np.mean(values[-tenth:]))}


def ground_truth_controls(
    prompts: Sequence[ToyPrompt],
    resolution: int = 64,
    low_threshold: int = TOY_CANNY_THRESHOLDS[0],
    high_threshold: int = TOY_CANNY_THRESHOLDS[1],
) -> tuple[list[Image.Image], list[Image.Image]]:
    """The ground-truth render of each prompt (its objects centred in their cells) and its Canny edge map (mode L).

    Raises:
        ValueError: a prompt whose objects lack a size or a region (only fully specified prompts can be drawn).
    """
    renders = [render(prompt.meaning, resolution) for prompt in prompts]
    return renders, [canny_edges(image, low_threshold, high_threshold) for image in renders]


def compare_control(
    pipe: PixArtAlphaControlNetPipeline,
    prompts: Sequence[ToyPrompt],
    controls: Sequence[Image.Image],
    settings: CustomizationSettings,
    scales: Sequence[float] = (1.0, 0.0),
) -> tuple[dict[str, Any], dict[str, list[Image.Image]]]:
    """Toy CompBench scores of ``prompts`` from the base pipeline and with the ControlNet at each of ``scales``.

    The base is ``pipe``'s components without the ControlNet; every run uses the same seeds (prompt ``i``: seed
    ``settings.seed + i``) and batches, so scale 0 reproduces the base's images exactly.

    Returns:
        (``{"base": scores, "control_<scale>": scores, ...}``, where each control entry also holds
        ``max_abs_difference_from_base`` in pixel values; images per run).
    """
    if len(prompts) != len(controls):
        raise ValueError(f"{len(prompts)} prompts but {len(controls)} control images.")
    sizes = {control.size for control in controls}
    if len(sizes) != 1 or len(set(next(iter(sizes)))) != 1:
        raise ValueError(f"The control images must be square and of one size, got sizes {sorted(sizes)}.")
    resolution = controls[0].height
    base = PixArtAlphaPipeline(**{name: c for name, c in pipe.components.items() if name != "controlnet"})
    texts = [prompt.text for prompt in prompts]
    images = {"base": settings.sample(base, texts, resolution=resolution)}
    for scale in scales:
        images[f"control_{scale:g}"] = settings.sample(
            pipe,
            texts,
            resolution=resolution,
            per_prompt={"image": list(controls)},
            controlnet_conditioning_scale=scale,
        )
    results: dict[str, Any] = {}
    for run, run_images in images.items():
        results[run] = mean_scores([score_image(im, p.meaning) for im, p in zip(run_images, prompts)])
        if run != "base":
            difference = max(
                int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())
                for a, b in zip(run_images, images["base"])
            )
            results[run]["max_abs_difference_from_base"] = difference
    return results, images


def run_controlnet(
    out_dir: str | os.PathLike,
    model: str | os.PathLike,
    settings: CustomizationSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a ControlNet on Canny edges of toy data and score held-out prompts with and without it.

    Writes ``out_dir/data-<n>-seed<s>`` (the training images, made once), ``out_dir/run`` (the training run; its
    ``controlnet`` folder), ``out_dir/scores.json`` and ``out_dir/contact_sheet.png`` (rows: ground-truth renders,
    their edge maps, base images, controlled images).

    Returns:
        The measures (also in ``scores.json``): settings, wall times, the scores of the ground-truth renders, of the
        base and of the controlled pipeline (scale ``settings.control_scale`` and 0).
    """
    settings = settings or CustomizationSettings()
    out_dir = Path(out_dir)
    times: dict[str, float] = {}
    shutil.rmtree(out_dir / "run", ignore_errors=True)  # a rerun starts over (the data is kept)
    data = out_dir / f"data-{settings.controlnet_images}-seed{settings.seed + 2}"
    if not (data / "metadata.jsonl").is_file():
        timed(log, "make data", times, lambda: make_dataset(data, settings.controlnet_images, seed=settings.seed + 2))
    config = ControlNetConfig(
        output_dir=str(out_dir / "run"),
        pretrained_model_name_or_path=str(model),
        train_data=str(data),
        resolution=64,
        controlnet_layers=settings.controlnet_layers,
        learning_rate=settings.controlnet_learning_rate,
        lr_warmup_steps=settings.controlnet_warmup_steps,
        max_train_steps=settings.controlnet_steps,
        train_batch_size=settings.controlnet_batch_size,
        canny_low_threshold=settings.canny_low_threshold,
        canny_high_threshold=settings.canny_high_threshold,
        max_grad_norm=1.0,
        use_ema=False,
        seed=settings.seed,
        validation_steps=0,
        checkpointing_steps=settings.controlnet_steps,
        checkpoints_total_limit=1,
        report_to="tensorboard",
        logging_steps=min(10, settings.controlnet_steps),
    )
    log(f"controlnet: {settings.controlnet_steps} steps, batch {settings.controlnet_batch_size}")
    folder = timed(log, "train controlnet", times, lambda: train_controlnet(config))
    base = PixArtAlphaPipeline.from_pretrained(model)
    pipe = PixArtAlphaControlNetPipeline(**base.components, controlnet=PixArtControlNetModel.from_pretrained(folder))
    prompts = sample_prompts(settings.control_prompts, seed=settings.seed + 1)
    resolution = base.transformer.config.sample_size * base.vae_scale_factor
    renders, edges = ground_truth_controls(
        prompts, resolution, settings.canny_low_threshold, settings.canny_high_threshold
    )
    scales = (settings.control_scale, 0.0)
    scores, images = timed(
        log, "evaluate", times, lambda: compare_control(pipe, prompts, edges, settings, scales=scales)
    )
    if settings.control_low_guidance:
        low = replace(settings, guidance_scale=settings.control_low_guidance)
        scores[f"guidance_{low.guidance_scale:g}"], _ = timed(
            log,
            "evaluate at low guidance",
            times,
            lambda: compare_control(pipe, prompts, edges, low, scales=scales[:1]),
        )
    curve = read_loss_curve(out_dir / "run")
    results = {
        "settings": {**asdict(settings), "model": str(model)},
        "ground_truth": mean_scores([score_image(im, p.meaning) for im, p in zip(renders, prompts)]),
        **scores,
        "loss": loss_summary([value for _, value in curve]),
        "wall_time_s": times,
    }
    columns = min(8, len(prompts))
    controlled = images[f"control_{settings.control_scale:g}"]
    rows = [renders, [edge.convert("RGB") for edge in edges], images["base"], controlled]
    sheet = contact_sheet([image for row in rows for image in row[:columns]], columns=columns)
    _save(out_dir, sheet, results)
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Both

#: The examples :func:`run_customization` knows, by name.
EXAMPLES = {"dreambooth": run_dreambooth, "controlnet": run_controlnet}


def run_customization(
    out_dir: str | os.PathLike,
    model: str | os.PathLike,
    settings: CustomizationSettings | None = None,
    examples: Sequence[str] = tuple(EXAMPLES),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the ``examples`` (``"dreambooth"``, ``"controlnet"``) into ``out_dir/<name>`` and write all their measures
    to ``out_dir/scores.json`` (each example's contact sheet is ``out_dir/<name>/contact_sheet.png``).

    Raises:
        ValueError: an unknown example name.
    """
    unknown = sorted(set(examples) - set(EXAMPLES))
    if unknown or not examples:
        raise ValueError(f"Unknown examples {unknown or list(examples)}: choose from {list(EXAMPLES)}.")
    out_dir = Path(out_dir)
    results = {}
    for name in examples:
        start = time.perf_counter()
        results[name] = EXAMPLES[name](out_dir / name, model, settings, log)
        results[name]["wall_time_s"]["total"] = round(time.perf_counter() - start, 1)
    write_json_atomic(out_dir / "scores.json", results)
    return results

"""A user's LoRA on the toy world (issue #21): teach the embedded model a word it never saw drawn, then test transfer.

The data set is what a user of ``examples/train_lora.py`` brings: 200 captioned images of something the model has
never been shown. Here it is a colour outside the toy palette (indigo (72, 48, 191), hue 250 degrees: 22 from blue
and 25 from purple, so the toy CompBench tells it apart) named by a word the model's tokenizer has but no training
caption ever used as a colour: ``retro`` (one of the filler words of the toy world's sparse web captions, which the
embedded model was not trained on). Each image holds one to three objects; one of them is ``retro``, the others keep
palette colours, and the captions vary (the toy language's training phrasing families, in a ``text`` column, plus a
``short`` column; the run draws between them with ``--caption_column text=0.8,short=0.2``).

Transfer, not memorisation: in the training images the ``retro`` object is only ever a circle, square or triangle,
and never in the right column of the grid. The held-out prompts put it on a star or a ring, or in the right column,
next to objects of other colours: :func:`word_measures` reports how often the word shows (an object of the new colour
is detected), how often it shows with the prompted shape, and the toy CompBench scores of those prompts over the
palette plus the new colour. Forgetting: toy CompBench on held-out prompts without the word, before and after, and how
often the new colour leaks into them. Learned versus transferred: the same measures on prompts like the training
scenes (``train_style``).

The colour must be one the model's frozen VAE decodes, or no adapter of the transformer can draw it: the earlier runs
taught lime (150, 215, 40), which the toy VAE gives back as yellow (the toy CompBench finds lime in 10 of 200
training images after ``vae.decode(vae.encode(image))``); every adapter then drew "retro" yellow, for training-style
prompts too. :func:`check_vae_renders` measures this before any training and stops a run below
``settings.min_vae_renders`` (0.8). Indigo keeps 189 of 200: the best of the colours tried in the band of hues the
toy CompBench accepts between blue and purple (248-255 degrees; (84, 61, 153) keeps 187, the other five 79-159).

:func:`run_lora_example` fine-tunes the embedded model with each run of ``settings.adapters`` (the real trainer,
:func:`diffusers_pixart.training.lora.train_lora`): a LoRA or DoRA, optionally with pivotal tuning (``+emb``: the
word's T5 input-embedding row trains too, ``--train_text_encoder_embeddings``) and its own budget (``@steps``),
loads each result with ``pipe.load_lora_weights`` and measures the base model and every run on the same prompts and
seeds (``examples/toy/run_lora.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from customization import loss_summary, timed
from eval_editing import vae_round_trip
from PIL import Image

from diffusers_pixart.atomic import atomic_dir, write_json_atomic, write_png_atomic
from diffusers_pixart.evaluation import contact_sheet, sample_images
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.toy.compbench import RGB, concept_palette, detect_objects, mean_scores, object_colors, score_image
from diffusers_pixart.toy.world import (
    TRAINING_FAMILIES,
    Meaning,
    Scene,
    ToyObject,
    ToyPrompt,
    dense_caption,
    describe,
    render,
    sample_prompts,
    sample_scene,
)
from diffusers_pixart.training.logs import read_loss_curve
from diffusers_pixart.training.lora import LoraTrainingConfig, train_lora

#: The new word and its colour: indigo, hue 250 degrees (blue 228, purple 275), which the toy VAE reconstructs.
NEW_WORD = "retro"
NEW_COLOR: RGB = (72, 48, 191)
#: The colour of the earlier runs, lime (hue 92 degrees: yellow 57, green 128), which the toy VAE decodes as yellow.
LIME: RGB = (150, 215, 40)
#: What the training images never pair with the new word: these shapes, and the grid's right column.
HELD_OUT_SHAPES = ("star", "ring")
HELD_OUT_REGIONS = ("top right", "right", "bottom right")


@dataclass
class LoraExampleSettings:
    """Budgets and settings of :func:`run_lora_example`; the defaults are the measured run."""

    seed: int = 0
    word: str = NEW_WORD
    color: RGB = NEW_COLOR
    train_images: int = 200
    #: The runs, one per entry ``adapter[+emb][@steps]`` (:func:`parse_run`): ``dora``, ``lora+emb`` (pivotal tuning:
    #: the word's T5 embedding row trains too), ``lora@800`` (another budget than ``steps``).
    adapters: tuple[str, ...] = ("lora", "dora")
    rank: int = 8
    target_modules: tuple[str, ...] = ("attention+ffn",)
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 5e-4
    #: The learning rate of the word's embedding row in ``+emb`` runs (``--embedding_learning_rate``).
    embedding_learning_rate: float = 1e-2
    caption_column: str = "text=0.8,short=0.2"
    #: The training images the VAE check (:func:`vae_renders`) encodes and decodes, and the fraction of those that
    #: show the new colour which must still show it after the round trip; below it the run stops before training.
    vae_check_images: int = 64
    min_vae_renders: float = 0.8
    # generation and measurement
    word_prompts: int = 48
    #: Prompts like the training captions' scenes (the word on a circle, square or triangle, left or middle column):
    #: does the adapter draw the colour where it was taught (learned) as well as on the held-out prompts (transferred)?
    train_style_prompts: int = 16
    forgetting_prompts: int = 100
    inference_steps: int = 20
    guidance_scale: float = 4.5
    sample_batch_size: int = 16

    def __post_init__(self):
        for name in (
            "train_images",
            "rank",
            "steps",
            "batch_size",
            "vae_check_images",
            "word_prompts",
            "train_style_prompts",
            "forgetting_prompts",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")
        if not 0.0 <= self.min_vae_renders <= 1.0:
            raise ValueError(f"`min_vae_renders` must be in [0, 1], got {self.min_vae_renders}.")
        for run in self.adapters:
            parse_run(run, self.steps)

    def sample(self, pipe: Any, prompts: Sequence[str]) -> list[Image.Image]:
        """Images of ``prompts`` (image ``i``: seed ``seed + i``) with these generation settings."""
        pipe.set_progress_bar_config(disable=True)
        return sample_images(
            pipe,
            prompts,
            seed=self.seed,
            steps=self.inference_steps,
            guidance=self.guidance_scale,
            batch_size=self.sample_batch_size,
        )


def parse_run(run: str, steps: int) -> tuple[str, bool, int]:
    """``(adapter, embeddings, steps)`` of a run name ``adapter[+emb][@steps]`` (``steps``: the default budget).

    Raises:
        ValueError: a name of another form, or a budget below 1.
    """
    name, _, budget = run.partition("@")
    adapter, plus, extra = name.partition("+")
    if not adapter or (plus and extra != "emb") or (budget and not budget.isdigit()):
        raise ValueError(f"Run {run!r}: expected adapter[+emb][@steps], e.g. lora, dora+emb, lora@800.")
    total = int(budget) if budget else steps
    if total < 1:
        raise ValueError(f"Run {run!r}: the budget must be at least 1 step.")
    return adapter, bool(plus), total


# ----------------------------------------------------------------------------------------------------------------------
# Data


def _readable(text: str, tokenizer: Any) -> bool:
    """Whether ``tokenizer`` knows every word of ``text`` (no ``<unk>``)."""
    unk = tokenizer.unk_token_id
    return unk is None or unk not in tokenizer(text, add_special_tokens=False).input_ids


def _word_scene(rng: np.random.Generator, word: str, train: bool) -> Scene:
    """A toy scene whose first object is in the new colour ``word``: in training, a circle, square or triangle out of
    the right column; held out, a star or ring, or in the right column (the other objects keep their colours)."""
    while True:
        scene = sample_scene(rng)
        first = scene.meaning.objects[0]
        held_out = first.shape in HELD_OUT_SHAPES or first.region in HELD_OUT_REGIONS
        if held_out != train:
            break
    objects = (ToyObject(first.shape, word, first.size, first.region), *scene.meaning.objects[1:])
    return Scene(Meaning(objects, scene.meaning.relations), scene.offsets)


def caption(meaning: Meaning, family: str, rng: np.random.Generator, tokenizer: Any) -> str:
    """A caption of ``meaning`` in ``family``, or the canonical dense caption where ``tokenizer`` lacks a word of it
    (an older toy tokenizer knows only the canonical family's words)."""
    text = describe(meaning, family, rng).text
    return text if _readable(text, tokenizer) else dense_caption(meaning)


def make_word_dataset(
    out_dir: str | os.PathLike, settings: LoraExampleSettings, tokenizer: Any, palette: Mapping[str, RGB]
) -> Path:
    """Write the training images: an imagefolder of ``settings.train_images`` 64 px PNGs with ``text`` (a caption in
    a family drawn from the toy world's training families) and ``short`` (the short family) columns."""
    families = list(TRAINING_FAMILIES)
    weights = np.array([TRAINING_FAMILIES[f] for f in families])
    with atomic_dir(Path(out_dir)) as tmp, open(tmp / "metadata.jsonl", "w", encoding="utf-8") as metadata:
        for index in range(settings.train_images):
            rng = np.random.default_rng([settings.seed, index, 21])
            scene = _word_scene(rng, settings.word, train=True)
            family = families[int(rng.choice(len(families), p=weights / weights.sum()))]
            record = {
                "file_name": f"{index:05d}.png",
                "text": caption(scene.meaning, family, rng, tokenizer),
                "short": caption(scene.meaning, "short", rng, tokenizer),
            }
            render(scene, 64, palette=palette).save(tmp / record["file_name"])
            metadata.write(json.dumps(record) + "\n")
    return Path(out_dir)


def word_prompts(settings: LoraExampleSettings, train: bool = False) -> list[ToyPrompt]:
    """Prompts with the new word (dense captions): held out (``settings.word_prompts``: on a star or ring, or in the
    right column), or with ``train`` like the training scenes (``settings.train_style_prompts``, other scenes than
    the training images')."""
    prompts = []
    for index in range(settings.train_style_prompts if train else settings.word_prompts):
        rng = np.random.default_rng([settings.seed, index, 2121, *([1] if train else [])])  # held out: as before
        meaning = _word_scene(rng, settings.word, train=train).meaning
        prompts.append(ToyPrompt(dense_caption(meaning), meaning))
    return prompts


# ----------------------------------------------------------------------------------------------------------------------
# Measures


def _shows(image: Image.Image, word: str, palette: Mapping[str, RGB]) -> bool:
    """Whether the toy detector finds an object of the colour ``word`` (a name of ``palette``) in ``image``."""
    return any(d.color == word for d in detect_objects(image, palette=palette))


def vae_renders(pipe: Any, images: Sequence[Image.Image], word: str, palette: Mapping[str, RGB]) -> dict[str, Any]:
    """Whether ``pipe``'s (frozen) VAE can draw the colour ``word`` at all: of the ``images`` in which the toy
    detector (over ``palette``) finds an object of that colour (``shown``), the number (``kept``) and fraction
    (``fraction``; 0 when none shows it) in which it still finds one after ``vae.decode(vae.encode(image))`` (the
    latent mean). An adapter of the transformer can only draw what the VAE decodes: the toy VAE gives lime back as
    yellow."""
    shown = [image for image in images if _shows(image, word, palette)]
    with torch.no_grad():
        decoded = vae_round_trip(pipe, shown) if shown else []
    kept = sum(_shows(image, word, palette) for image in decoded)
    return {"images": len(images), "shown": len(shown), "kept": kept, "fraction": kept / len(shown) if shown else 0.0}


def check_vae_renders(
    pipe: Any, data: Path, settings: LoraExampleSettings, palette: Mapping[str, RGB]
) -> dict[str, Any]:
    """:func:`vae_renders` of the first ``settings.vae_check_images`` training images in ``data`` (all, if fewer).

    Raises:
        ValueError: the fraction is below ``settings.min_vae_renders``: no adapter could draw the colour, choose
            another (a run would measure nothing).
    """
    images = [
        Image.open(data / f"{i:05d}.png").convert("RGB")
        for i in range(min(settings.vae_check_images, settings.train_images))
    ]
    check = vae_renders(pipe, images, settings.word, palette)
    if check["fraction"] < settings.min_vae_renders:
        raise ValueError(
            f"The model's VAE keeps the new colour {tuple(settings.color)} of {settings.word!r} in {check['kept']} of "
            f"{check['shown']} training images that show it (encode, decode; {check['fraction']:.2f} < "
            f"{settings.min_vae_renders}): no adapter of the transformer can draw it. Choose another colour, e.g. "
            f"{NEW_COLOR}."
        )
    return {**check, "min": settings.min_vae_renders}


def word_measures(
    images: Sequence[Image.Image], prompts: Sequence[ToyPrompt], word: str, palette: Mapping[str, RGB]
) -> dict[str, Any]:
    """How the new ``word`` shows in images of ``prompts`` that use it: the fraction of images with an object of its
    colour (``shown``), with one of its colour and the prompted shape (``with_shape``), and the toy CompBench scores
    over the palette plus the new colour."""
    shown, with_shape = [], []
    for image, prompt in zip(images, prompts):
        detections = [d for d in detect_objects(image, palette=palette) if d.color == word]
        wanted = next(obj.shape for obj in prompt.meaning.objects if obj.color == word)
        shown.append(bool(detections))
        with_shape.append(any(d.shape == wanted for d in detections))
    scores = mean_scores([score_image(im, p.meaning, palette=palette) for im, p in zip(images, prompts)])
    return {"prompts": len(prompts), "shown": float(np.mean(shown)), "with_shape": float(np.mean(with_shape)), **scores}


def forgetting_measures(
    images: Sequence[Image.Image], prompts: Sequence[ToyPrompt], word: str, palette: Mapping[str, RGB]
) -> dict[str, Any]:
    """Toy CompBench of held-out prompts without the word, and the fraction of their images whose largest object
    has the new colour (``leak``)."""
    scores = mean_scores([score_image(im, p.meaning) for im, p in zip(images, prompts)])
    leak = float(np.mean([color == word for color in object_colors(images, palette)]))
    return {"prompts": len(prompts), **scores, "leak": leak}


# ----------------------------------------------------------------------------------------------------------------------
# The example


def run_lora_example(
    out_dir: str | os.PathLike,
    model: str | os.PathLike,
    settings: LoraExampleSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make the data, fine-tune ``model`` with each of ``settings.adapters``, and measure base and adapters.

    Writes ``out_dir/data`` (made once per settings), ``out_dir/<adapter>`` (each training run; its ``lora`` folder),
    ``out_dir/scores.json`` and ``out_dir/contact_sheet.png`` (rows: training images; a held-out prompt with the word
    from the base model and from each adapter; a prompt without it from the base and from each adapter).

    Returns:
        The measures (also in ``scores.json``): settings, wall times, and per model (``base`` and each adapter) the
        ``word`` and ``forgetting`` measures.
    """
    settings = settings or LoraExampleSettings()
    out_dir = Path(out_dir)
    times: dict[str, float] = {}
    palette = concept_palette(settings.word, settings.color)
    base = PixArtAlphaPipeline.from_pretrained(model)
    if not _readable(settings.word, base.tokenizer):
        raise ValueError(f"The model's tokenizer does not know {settings.word!r}: choose a word of its vocabulary.")
    data = out_dir / f"data-{settings.train_images}-seed{settings.seed}"
    if not (data / "metadata.jsonl").is_file():
        timed(log, "make data", times, lambda: make_word_dataset(data, settings, base.tokenizer, palette))
    vae_check = check_vae_renders(base, data, settings, palette)
    log(f"VAE check: {json.dumps(vae_check)}")
    held_out = word_prompts(settings)
    train_style = word_prompts(settings, train=True)
    plain = sample_prompts(settings.forgetting_prompts, seed=settings.seed + 1)

    def measure(pipe: Any, name: str) -> tuple[dict[str, Any], dict[str, list[Image.Image]]]:
        images = {
            "word": settings.sample(pipe, [p.text for p in held_out]),
            "train_style": settings.sample(pipe, [p.text for p in train_style]),
            "plain": settings.sample(pipe, [p.text for p in plain]),
        }
        measures = {
            "word": word_measures(images["word"], held_out, settings.word, palette),
            "train_style": word_measures(images["train_style"], train_style, settings.word, palette),
            "forgetting": forgetting_measures(images["plain"], plain, settings.word, palette),
        }
        log(f"{name}: {json.dumps(measures)}")
        return measures, images

    results: dict[str, Any] = {"vae_check": vae_check, "models": {}}
    all_images: dict[str, dict[str, list[Image.Image]]] = {}
    results["models"]["base"], all_images["base"] = timed(log, "evaluate base", times, lambda: measure(base, "base"))
    losses = {}
    for name in settings.adapters:
        adapter, embeddings, steps = parse_run(name, settings.steps)
        run = out_dir / name
        shutil.rmtree(run, ignore_errors=True)  # a rerun trains anew
        config = LoraTrainingConfig(
            output_dir=str(run),
            pretrained_model_name_or_path=str(model),
            train_data=str(data),
            caption_column=settings.caption_column,
            resolution=64,
            adapter=adapter,
            rank=settings.rank,
            target_modules=list(settings.target_modules),
            trigger_words=[settings.word],
            train_text_encoder_embeddings=embeddings,
            embedding_learning_rate=settings.embedding_learning_rate if embeddings else None,
            learning_rate=settings.learning_rate,
            lr_warmup_steps=20,
            max_train_steps=steps,
            train_batch_size=settings.batch_size,
            snr_gamma=5.0,
            max_sequence_length=64,
            mixed_precision="bf16",
            seed=settings.seed,
            validation_steps=0,
            checkpointing_steps=steps,
            checkpoints_total_limit=1,
            report_to="tensorboard",
            logging_steps=10,
        )
        log(f"{name}: {steps} steps of {settings.batch_size} on {data}")
        folder = timed(log, f"train {name}", times, lambda config=config: train_lora(config))
        pipe = PixArtAlphaPipeline.from_pretrained(model)
        pipe.load_lora_weights(folder)
        results["models"][name], all_images[name] = timed(log, f"evaluate {name}", times, partial(measure, pipe, name))
        losses[name] = _loss_ends(run)
        write_json_atomic(out_dir / "scores.json", {**results, "loss": losses, "wall_time_s": times})  # so far
    results.update(
        settings={
            **asdict(settings),
            "model": str(model),
            "held_out_shapes": HELD_OUT_SHAPES,
            "held_out_regions": HELD_OUT_REGIONS,
        },  # fmt: skip
        loss=losses,
        wall_time_s=times,
        example_prompts={"word": held_out[0].text, "train_style": train_style[0].text, "plain": plain[0].text},
    )
    columns = 8
    training = [Image.open(data / f"{i:05d}.png").convert("RGB") for i in range(columns)]
    rows = [training] + [all_images[name]["word"][:columns] for name in all_images]
    rows += [all_images[name]["plain"][:columns] for name in all_images]
    sheet = contact_sheet([image for row in rows for image in row], columns=columns)
    write_png_atomic(out_dir / "contact_sheet.png", sheet)
    write_json_atomic(out_dir / "scores.json", results)
    return results


def _loss_ends(run: Path) -> dict[str, float] | None:
    """Mean logged loss over the first and last tenth of a run (tensorboard scalars), or None without logs."""
    return loss_summary([value for _, value in read_loss_curve(run)])


__all__ = [
    "HELD_OUT_REGIONS",
    "HELD_OUT_SHAPES",
    "LIME",
    "NEW_COLOR",
    "NEW_WORD",
    "LoraExampleSettings",
    "check_vae_renders",
    "forgetting_measures",
    "make_word_dataset",
    "parse_run",
    "run_lora_example",
    "vae_renders",
    "word_measures",
    "word_prompts",
]

"""The toy recipe: PixArt-alpha's three training stages on the toy world, on a 2-core CPU (``run_recipe.py``).

:func:`run_recipe` makes the toy data sets, trains a small VAE (:func:`train_vae`), builds the toy T5
(:func:`diffusers_pixart.toy.language.make_toy_text_encoder`) and pretrains it on the stage-2 captions
(:func:`~diffusers_pixart.toy.language.pretrain_text_encoder`; frozen from then on), saves them with a fresh
transformer as a base pipeline folder, precomputes each stage's latents and caption embeddings
(:func:`diffusers_pixart.data.features.extract_dataset_features`, what ``examples/extract_features.py`` runs), trains
the three stages on them with the library entry points of the stage scripts (:data:`STAGES`: stage 1 ->
re-parameterization -> stage 2 -> stage 3), in this process, and records the loss curves; :func:`install_toy_model`
saves the result as the package's embedded default model.

accelerate keeps one mixed-precision setting per process: run the recipe in a process that has not set up accelerate
with another ``mixed_precision`` than :attr:`ToyRecipe.mixed_precision` (``run_recipe.py`` is a process of its own).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler
from PIL import Image

from diffusers_pixart import TOY_MODEL_PATH
from diffusers_pixart.atomic import atomic_dir, write_json_atomic, write_text_atomic
from diffusers_pixart.data.features import extract_dataset_features
from diffusers_pixart.data.streaming import image_to_tensor
from diffusers_pixart.models.pixart_transformer import PixArtTransformer2DModel
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.toy.language import make_toy_text_encoder, pretrain_text_encoder
from diffusers_pixart.toy.world import (
    FAMILIES,
    TRAINING_FAMILIES,
    class_names,
    describe,
    make_dataset,
    record_meaning,
    sample_prompts,
)
from diffusers_pixart.training.config import LR_SCHEDULERS, MIXED_PRECISIONS
from diffusers_pixart.training.diffusion import PREDICTION_TYPES
from diffusers_pixart.training.logs import read_loss_curve
from diffusers_pixart.training.stages import (
    PIXART_TRANSFORMER_DIR,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    train_stage1,
    train_stage2,
    train_stage3,
)

#: Initial log-variance of the toy VAE's posterior (std ~0.02).
INITIAL_LOGVAR = -8.0


def make_toy_vae(channels: tuple[int, ...] = (16, 32, 32), latent_channels: int = 4, seed: int = 0) -> AutoencoderKL:
    """A fresh ``AutoencoderKL`` with ``len(channels)`` levels: it down-samples by ``2 ** (len(channels) - 1)``.

    The default three levels turn a 64px toy image into a 16x16x4 latent.
    """
    if len(channels) < 2:
        raise ValueError(f"`channels` needs at least two levels, got {channels}.")
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=min(8, min(channels)),
        sample_size=64,
    )
    # A fresh posterior has log-variance ~0: noise of std 1 would drown the latent means, and a tiny KL weight takes
    # thousands of steps to shrink it. Start at std ~0.02 instead, so reconstruction learns from the first step.
    with torch.no_grad():
        vae.quant_conv.weight[latent_channels:] *= 0.1
        vae.quant_conv.bias[latent_channels:] = INITIAL_LOGVAR
    return vae


def load_images(folder: str | os.PathLike, limit: int | None = None) -> torch.Tensor:
    """The PNG images of an image folder (all of one size), as a tensor (N, 3, H, W) in [-1, 1]."""
    files = sorted(Path(folder).glob("*.png"))[:limit]
    if not files:
        raise ValueError(f"{folder} holds no PNG images.")
    images = [image_to_tensor(Image.open(path).convert("RGB")) for path in files]
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) != 1:
        raise ValueError(f"The images of {folder} have several sizes {sorted(sizes)}; train the VAE on one size.")
    return torch.stack(images)


def train_vae(
    vae: AutoencoderKL,
    images: torch.Tensor,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    kl_weight: float = 1e-6,
    crop: int | None = 32,
    foreground_weight: float = 10.0,
    seed: int = 0,
    log: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``vae`` as an autoencoder (L1 + MSE reconstruction + ``kl_weight`` x KL), then set its scaling factor.

    The reconstruction error of each pixel is weighted by ``1 + foreground_weight x chroma`` of the target pixel
    (max - min of its RGB in [-1, 1]): the toy world's objects are saturated, its backgrounds grey.

    Args:
        vae: the ``AutoencoderKL`` to train (in place; it ends in eval mode).
        images: (N, 3, H, W) in [-1, 1], e.g. from :func:`load_images`.
        steps: optimizer steps (AdamW with a cosine decay of ``learning_rate``).
        crop: train on random ``crop`` x ``crop`` crops (the VAE is convolutional; 4x cheaper than 64px images);
            ``None`` trains on whole images.
        log: called every 25 steps and at the end with the step and the mean losses since the last call.

    Returns:
        The logged records ``{"step", "loss", "recon", "kl"}``. The config's ``scaling_factor`` becomes ``1 / std``
        of the latent means of (up to 512 of) ``images``, so that diffusion latents have unit variance, as
        sd-vae-ft-ema's 0.18215 does for natural images.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must have shape (N, 3, H, W), got {tuple(images.shape)}.")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"`steps` and `batch_size` must be at least 1, got {steps} and {batch_size}.")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    vae.train()
    history, running, count = [], {"loss": 0.0, "recon": 0.0, "kl": 0.0}, 0
    for step in range(1, steps + 1):
        batch = images[torch.randint(len(images), (batch_size,), generator=generator)]
        if crop is not None and crop < min(images.shape[-2:]):
            top, left = (int(torch.randint(size - crop + 1, (1,), generator=generator)) for size in images.shape[-2:])
            batch = batch[..., top : top + crop, left : left + crop]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        # Objects are saturated and backgrounds grey: weighting pixels by their chroma keeps a small autoencoder from
        # settling on the grey background (the plain L1 + MSE plateaus there for hundreds of steps).
        chroma = batch.amax(dim=1, keepdim=True) - batch.amin(dim=1, keepdim=True)
        weight = 1.0 + foreground_weight * chroma
        error = reconstruction - batch
        recon = ((error.abs() + error.pow(2)) * weight).mean() / weight.mean()
        kl = posterior.kl().mean() / batch[0].numel()
        loss = recon + kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        for name, value in (("loss", loss), ("recon", recon), ("kl", kl)):
            running[name] += value.item()
        count += 1
        if step % 25 == 0 or step == steps:
            record = {"step": step, **{name: value / count for name, value in running.items()}}
            history.append(record)
            if log is not None:
                log(step, record)
            running, count = dict.fromkeys(running, 0.0), 0
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images[:512].split(64)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    return history


def make_toy_transformer(
    latent_size: int = 16,
    num_layers: int = 6,
    hidden_size: int = 128,
    num_heads: int = 4,
    caption_channels: int = 64,
    use_additional_conditions: bool = False,
    seed: int = 0,
) -> PixArtTransformer2DModel:
    """A fresh PixArt transformer for the toy world (patch 2, learned variance), ``latent_size`` latent pixels wide."""
    if hidden_size % num_heads:
        raise ValueError(f"`hidden_size` {hidden_size} must be a multiple of `num_heads` {num_heads}.")
    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=num_heads,
        attention_head_dim=hidden_size // num_heads,
        in_channels=4,
        out_channels=8,
        num_layers=num_layers,
        cross_attention_dim=hidden_size,
        sample_size=latent_size,
        patch_size=2,
        caption_channels=caption_channels,
        use_additional_conditions=use_additional_conditions,
    )


def save_base_pipeline(
    path: str | os.PathLike, vae: AutoencoderKL, tokenizer, text_encoder, transformer: PixArtTransformer2DModel
) -> Path:
    """Save the recipe's starting pipeline (the stages' ``pretrained_model_name_or_path``), atomically.

    The scheduler is DPM-Solver on PixArt's 1000-step linear schedule (the training noise schedule).
    """
    pipeline = PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )
    path = Path(path)
    with atomic_dir(path) as tmp:
        pipeline.save_pretrained(tmp)
    return path


def reconstruction_error(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """Mean absolute error (in [0, 255] pixel units) of reconstructing ``images`` (N, 3, H, W) from latent means."""
    with torch.no_grad():
        out = torch.cat([vae.decode(vae.encode(c).latent_dist.mean).sample for c in images.split(64)])
    return float((out.clamp(-1, 1) - images).abs().mean() * 127.5)


# ----------------------------------------------------------------------------------------------------------------------
# The recipe


@dataclass
class ToyRecipe:
    """Sizes and budgets of the toy recipe; the defaults are the run that made the embedded model.

    Where the toy recipe leaves the paper's (epsilon prediction, uniform weights, 120 caption tokens), it is for the
    budget: with the noise as the target, the high-noise steps that decide an image's layout, colours and shapes
    weigh almost nothing in the loss (their noise is nearly the input itself), and a tiny model trained for minutes
    never learns them; the velocity target (``prediction_type``) gives them weight, and min-SNR (``snr_gamma``)
    takes some from the low-noise steps. Toy captions are at most 60 tokens (``max_sequence_length``). The learning
    rate stays constant after the warm-up, as in the paper (``lr_scheduler``: a cosine decay scored lower here).
    The stages train in bf16 mixed precision (``mixed_precision``), as the paper trains on GPUs: CPUs with
    AVX512-BF16 run the matmuls about 2.5x faster than in float32, and the step is about 1.2x faster.
    The toy T5 is pretrained to read the toy language for ``text_pretrain_steps`` (0: left random), as the
    paper's T5-XXL comes pretrained on text (:mod:`~diffusers_pixart.toy.language`). The captions of stages 2 and 3
    are written in the :data:`TRAINING_FAMILIES`, and a ``group_probability`` of their scenes hold two copies of one
    shape.
    """

    seed: int = 0
    stage1_images: int = 4000
    stage2_images: int = 12000
    stage3_images: int = 3000
    vae_images: int = 600
    vae_steps: int = 4000
    vae_channels: tuple[int, ...] = (16, 32, 32)
    vae_learning_rate: float = 1e-3
    text_dim: int = 64
    text_pretrain_steps: int = 2000
    group_probability: float = 0.15
    num_layers: int = 6
    hidden_size: int = 144
    num_heads: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 100
    ema_decay: float = 0.998
    prediction_type: str = "v_prediction"
    snr_gamma: float = 5.0
    max_sequence_length: int = 64
    mixed_precision: str = "bf16"
    stage1_steps: int = 1000
    stage2_steps: int = 9000
    stage3_steps: int = 700
    stage3_aspect_ratios: tuple[float, ...] = (0.5, 0.75, 1.0, 1.33, 2.0)

    def __post_init__(self):
        for name, value in vars(self).items():
            minimum = 0 if name in ("seed", "text_pretrain_steps") else 1
            if isinstance(value, int) and value < minimum:
                raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"`lr_scheduler` must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}.")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}.")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}.")
        if self.snr_gamma < 0:
            raise ValueError(f"`snr_gamma` must be 0 (off) or positive, got {self.snr_gamma}.")
        if not 0.0 <= self.group_probability <= 1.0:
            raise ValueError(f"`group_probability` must be in [0, 1], got {self.group_probability}.")


#: The options and the library entry point of each stage (what ``examples/train_stage*.py`` run), run by
#: :func:`run_recipe` in this process.
STAGES = {1: (Stage1Config, train_stage1), 2: (Stage2Config, train_stage2), 3: (Stage3Config, train_stage3)}
#: Resolution of the toy recipe's images (64px: a 16x16x4 latent with the 3-level VAE, 64 tokens with patch 2).
RESOLUTION = 64


def make_toy_datasets(data_dir: str | os.PathLike, recipe: ToyRecipe) -> dict[str, Path]:
    """The recipe's image folders (each made once; an existing one is kept).

    ``stage1``: one plain object per image (its class label is stage 1's condition); ``stage2``: one to three plain
    objects with captions in the :data:`TRAINING_FAMILIES`; ``stage3``: the same in the aesthetic style in
    aspect-ratio buckets; ``vae_aesthetic``: square aesthetic images, which the VAE trains on with the first stage-2
    images.
    """
    data_dir = Path(data_dir)
    captions = dict(phrasing=TRAINING_FAMILIES, group_probability=recipe.group_probability)
    plans = {
        "stage1": dict(n=recipe.stage1_images, seed=recipe.seed + 1, min_objects=1, max_objects=1),
        "stage2": dict(n=recipe.stage2_images, seed=recipe.seed + 2, **captions),
        "stage3": dict(
            n=recipe.stage3_images,
            seed=recipe.seed + 3,
            style="aesthetic",
            aspect_ratios=list(recipe.stage3_aspect_ratios),
            **captions,
        ),
        "vae_aesthetic": dict(n=recipe.vae_images, seed=recipe.seed + 4, style="aesthetic"),
    }
    folders = {}
    for name, plan in plans.items():
        folder = data_dir / name
        if not (folder / "metadata.jsonl").is_file():
            make_dataset(folder, resolution=RESOLUTION, **plan)
        folders[name] = folder
    return folders


def language_corpus(folder: str | os.PathLike, seed: int = 0) -> list[str]:
    """The toy T5's pretraining text: the captions of an image folder, and each of its scenes once more in a phrasing
    family drawn from all :data:`FAMILIES`, the held-out ones included (a T5 reads language no image caption
    uses; the images never see those families)."""
    records = [json.loads(line) for line in Path(folder, "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    rng = np.random.default_rng([seed, 6007])
    rewritten = [describe(record_meaning(r), str(rng.choice(FAMILIES)), rng).text for r in records]
    return [record["text"] for record in records] + rewritten


def train_toy_stage(
    name: str,
    stage: int,
    run: Path,
    recipe: ToyRecipe,
    steps: int,
    log: Callable[[str], None],
    train: Callable[[Any], Path] | None = None,
    **options,
) -> None:
    """Train ``stage`` (:data:`STAGES`) into ``run`` for ``steps`` with the options every stage of the recipe shares
    (the engine's) and ``options`` (its model and data); ``train`` replaces the stage's entry point (it gets the
    stage's config), e.g. for a variant model of an experiment."""
    shared = {
        "resolution": RESOLUTION,
        "train_batch_size": recipe.batch_size,
        "max_train_steps": steps,
        "learning_rate": float(recipe.learning_rate),
        "lr_scheduler": recipe.lr_scheduler,
        "lr_warmup_steps": recipe.warmup_steps,
        "max_grad_norm": 1.0,
        "ema_decay": float(recipe.ema_decay),
        "seed": recipe.seed,
        "validation_steps": 0,
        "checkpointing_steps": steps,
        "checkpoints_total_limit": 1,
        "report_to": "tensorboard",
        "logging_steps": min(10, steps),
        "shuffle_buffer_size": 1000,
        "max_sequence_length": recipe.max_sequence_length,
        "prediction_type": recipe.prediction_type,
        "mixed_precision": recipe.mixed_precision,
    }
    if recipe.snr_gamma > 0:
        shared["snr_gamma"] = float(recipe.snr_gamma)
    config_class, stage_train = STAGES[stage]
    train = train or stage_train
    config = config_class(output_dir=str(run), **options, **shared)
    log(f"{name}: {train.__name__} into {run}, {steps} steps from {config.pretrained_model_name_or_path}")
    train(config)


def run_recipe(
    out_dir: str | os.PathLike,
    recipe: ToyRecipe | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Make the toy data, train the VAE, build T5, run stage 1 -> re-parameterization -> stage 2 -> stage 3.

    Every step's result is kept under ``out_dir/work`` and reused by a rerun (a finished stage is not run again).

    Args:
        out_dir: the run folder; the final pipeline goes to ``out_dir/pipeline`` and the per-stage losses to
            ``out_dir/loss_curves.json`` and, as a table, ``loss_curves.md`` (the stage times in ``timings.json``).
        recipe: sizes and budgets (default: :class:`ToyRecipe`).
        log: where progress lines go.

    Returns:
        The final pipeline folder, loadable with ``PixArtAlphaPipeline.from_pretrained``.
    """
    recipe = recipe or ToyRecipe()
    out_dir = Path(out_dir)
    work = out_dir / "work"
    timings: dict[str, float] = {}

    start = time.perf_counter()
    data = make_toy_datasets(work / "data", recipe)
    timings["data"] = time.perf_counter() - start
    log(f"data: {', '.join(f'{name} {folder}' for name, folder in data.items())} ({timings['data']:.0f} s)")

    start = time.perf_counter()
    vae_dir = work / "vae"
    if not (vae_dir / "config.json").is_file():
        images = torch.cat([load_images(data["stage2"], limit=recipe.vae_images), load_images(data["vae_aesthetic"])])
        vae = make_toy_vae(recipe.vae_channels, seed=recipe.seed)
        history = train_vae(
            vae,
            images,
            recipe.vae_steps,
            learning_rate=recipe.vae_learning_rate,
            seed=recipe.seed,
            log=lambda step, record: log(f"vae step {step}: loss {record['loss']:.4f}"),
        )
        error = reconstruction_error(vae, images[:: max(1, len(images) // 256)])
        log(f"vae: reconstruction error {error:.2f} / 255, scaling factor {vae.config.scaling_factor:.4f}")
        write_json_atomic(work / "vae_history.json", {"history": history, "reconstruction_error": error})
        vae.save_pretrained(vae_dir)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    timings["vae"] = time.perf_counter() - start

    start = time.perf_counter()
    base = work / "base"
    if not (base / "model_index.json").is_file():
        tokenizer, text_encoder = make_toy_text_encoder(d_model=recipe.text_dim, seed=recipe.seed)
        if recipe.text_pretrain_steps:
            accuracy = _pretrain_language(tokenizer, text_encoder, data["stage2"], recipe)
            write_json_atomic(work / "text_encoder_accuracy.json", accuracy)
            log(f"text encoder: held-out accuracy {', '.join(f'{k} {v:.3f}' for k, v in accuracy.items())}")
        transformer = make_toy_transformer(
            RESOLUTION // 2 ** (len(recipe.vae_channels) - 1),
            recipe.num_layers,
            recipe.hidden_size,
            recipe.num_heads,
            recipe.text_dim,
            seed=recipe.seed,
        )
        save_base_pipeline(base, vae, tokenizer, text_encoder, transformer)
    timings["text_encoder"] = time.perf_counter() - start

    # Each stage trains on precomputed features: its images go through the frozen VAE and T5 once, not every epoch.
    start = time.perf_counter()
    features = {stage: _features(stage, data, base, work, recipe, log) for stage in STAGES}
    timings["features"] = time.perf_counter() - start

    runs = {stage: work / f"stage{stage}" for stage in STAGES}
    stage_options = {
        1: dict(
            pretrained_model_name_or_path=str(base),
            features=str(features[1]),
            num_classes=len(class_names()),
            label_column="label",
            dit_layers=recipe.num_layers,
            dit_hidden=recipe.hidden_size,
            dit_heads=recipe.num_heads,
            patch_size=2,
        ),
        2: dict(
            pretrained_model_name_or_path=str(base),
            features=str(features[2]),
            transformer=str(runs[1] / PIXART_TRANSFORMER_DIR),
        ),
        3: dict(pretrained_model_name_or_path=str(runs[2] / "pipeline"), features=str(features[3])),
    }
    steps = {1: recipe.stage1_steps, 2: recipe.stage2_steps, 3: recipe.stage3_steps}
    for stage, run in runs.items():
        start = time.perf_counter()
        if not (run / "pipeline" / "model_index.json").is_file():
            train_toy_stage(f"stage {stage}", stage, run, recipe, steps[stage], log, **stage_options[stage])
        timings[f"stage{stage}"] = time.perf_counter() - start
        log(f"stage {stage}: done ({timings[f'stage{stage}']:.0f} s)")
    return _finish(out_dir, {f"stage{stage}": run for stage, run in runs.items()}, timings)


def _pretrain_language(tokenizer, text_encoder, stage2: Path, recipe: ToyRecipe) -> dict[str, float]:
    """Pretrain the toy T5 on :func:`language_corpus` of the stage-2 images; its accuracy on prompts of every
    phrasing family (:func:`~diffusers_pixart.toy.language.pretrain_text_encoder`)."""
    held_out = [
        prompt.text
        for family in FAMILIES
        for prompt in sample_prompts(
            500 // len(FAMILIES), recipe.seed + 5, family=family, group_probability=recipe.group_probability
        )
    ]
    captions = language_corpus(stage2, seed=recipe.seed)
    return pretrain_text_encoder(
        tokenizer, text_encoder, captions, recipe.text_pretrain_steps, held_out=held_out, seed=recipe.seed
    )


def extract_toy_features(
    data: str | os.PathLike,
    pipeline: str | os.PathLike,
    folder: str | os.PathLike,
    log: Callable[[str], None],
    max_length: int = ToyRecipe.max_sequence_length,
    **options: Any,
) -> Path:
    """Precompute an image folder's latents and caption embeddings with ``pipeline``'s VAE and T5 into ``folder``,
    once: a ``.done`` file beside the folder (the loader reads every file in it) marks it finished, and a rerun
    returns it as it is. ``options`` go to :func:`extract_dataset_features` (caption and label columns, buckets)."""
    folder = Path(folder)
    done = folder.with_name(f"{folder.name}.done")
    if not done.is_file():
        rows, _ = extract_dataset_features(
            str(data), str(pipeline), folder, resolution=RESOLUTION, max_length=max_length, batch_size=64, **options
        )
        log(f"features {folder.name}: {rows} rows in {folder}")
        done.touch()
    return folder


def _features(stage: int, data: dict[str, Path], base: Path, work: Path, recipe: ToyRecipe, log) -> Path:
    """One stage's features (:func:`extract_toy_features`) with the base pipeline's VAE and T5; their folder.

    Stage 1's features hold labels (no captions), the others' captions; stage 3's are in aspect-ratio buckets.
    """
    columns = dict(caption_column=None, label_column="label") if stage == 1 else {}
    folder = work / "features" / f"stage{stage}"
    return extract_toy_features(
        data[f"stage{stage}"], base, folder, log, recipe.max_sequence_length, multi_scale=stage == 3, **columns
    )


def _finish(out_dir: Path, runs: dict[str, Path], timings: dict[str, float]) -> Path:
    """Write the runs' loss curves (JSON and a table) and the timings; copy the last run's pipeline to
    ``out_dir/pipeline``."""
    curves = {name: read_loss_curve(run) for name, run in runs.items()}
    write_json_atomic(out_dir / "loss_curves.json", curves)
    write_text_atomic(out_dir / "loss_curves.md", loss_table(curves) + "\n")
    write_json_atomic(out_dir / "timings.json", timings)
    final = out_dir / "pipeline"
    with atomic_dir(final) as tmp:
        shutil.copytree(list(runs.values())[-1] / "pipeline", tmp, dirs_exist_ok=True)
    return final


def extend_text_encoder(old_tokenizer, old_encoder, seed: int = 0):
    """A toy T5 for the current toy vocabulary (:func:`~diffusers_pixart.toy.world.vocabulary`) that starts from a
    trained one of an older, smaller vocabulary: every layer is copied, and each word keeps its trained embedding (new
    words start random).

    Returns:
        ``(tokenizer, text_encoder)``.
    """
    config = old_encoder.config
    tokenizer, encoder = make_toy_text_encoder(config.d_model, config.num_layers, config.num_heads, seed)
    old_vocab, new_vocab = old_tokenizer.get_vocab(), tokenizer.get_vocab()
    missing = sorted(set(old_vocab) - set(new_vocab))
    if missing:
        raise ValueError(f"The old tokenizer has words the toy vocabulary lost: {missing[:10]}.")
    state = {
        k: v for k, v in old_encoder.state_dict().items() if k not in ("shared.weight", "encoder.embed_tokens.weight")
    }
    encoder.load_state_dict(state, strict=False)
    with torch.no_grad():
        old = old_encoder.get_input_embeddings().weight
        new = encoder.get_input_embeddings().weight
        for piece, index in old_vocab.items():
            new[new_vocab[piece]] = old[index]
    return tokenizer, encoder


def continue_recipe(
    start_from: str | os.PathLike,
    out_dir: str | os.PathLike,
    align_steps: int,
    aesthetic_steps: int = 0,
    recipe: ToyRecipe | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Teach a trained toy pipeline the current toy language, without training it again from nothing.

    The toy T5 grows to the current vocabulary (:func:`extend_text_encoder`) and is pretrained on the language
    (:func:`language_corpus`, ``recipe.text_pretrain_steps``); the transformer (with its VAE) is then fine-tuned
    as stage 3 (it keeps the micro-conditions) for ``align_steps`` on the stage-2 images (plain, square, captions of
    the :data:`TRAINING_FAMILIES`), then, if ``aesthetic_steps``, on the stage-3 images.
    Results are kept under ``out_dir/work`` and reused by a rerun, as in :func:`run_recipe`.

    Returns:
        The final pipeline folder ``out_dir/pipeline``.
    """
    recipe = recipe or ToyRecipe()
    out_dir = Path(out_dir)
    work = out_dir / "work"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    data = make_toy_datasets(work / "data", recipe)
    timings["data"] = time.perf_counter() - start
    start = time.perf_counter()
    base = work / "base"
    if not (base / "model_index.json").is_file():
        trained = PixArtAlphaPipeline.from_pretrained(start_from)
        tokenizer, text_encoder = extend_text_encoder(trained.tokenizer, trained.text_encoder, recipe.seed)
        accuracy = _pretrain_language(tokenizer, text_encoder, data["stage2"], recipe)
        write_json_atomic(work / "text_encoder_accuracy.json", accuracy)
        log(f"text encoder: held-out accuracy {', '.join(f'{k} {v:.3f}' for k, v in accuracy.items())}")
        save_base_pipeline(base, trained.vae, tokenizer, text_encoder, trained.transformer)
    timings["text_encoder"] = time.perf_counter() - start
    start = time.perf_counter()
    phases = {"align": (2, base, align_steps)}
    if aesthetic_steps:
        phases["stage3"] = (3, work / "align" / "pipeline", aesthetic_steps)
    features = {stage: _features(stage, data, base, work, recipe, log) for stage, _, _ in phases.values()}
    timings["features"] = time.perf_counter() - start
    runs = {name: work / name for name in phases}
    for name, run in runs.items():
        start = time.perf_counter()
        stage, source, steps = phases[name]
        if not (run / "pipeline" / "model_index.json").is_file():
            options = dict(pretrained_model_name_or_path=str(source), features=str(features[stage]))
            train_toy_stage(name, 3, run, recipe, steps, log, **options)
        timings[name] = time.perf_counter() - start
        log(f"{name}: done ({timings[name]:.0f} s)")
    return _finish(out_dir, runs, timings)


#: The most the embedded model may weigh, in bytes (it ships inside the package).
MAX_EMBEDDED_BYTES = 15 * 1024 * 1024


def install_toy_model(pipeline_dir: str | os.PathLike, target: str | os.PathLike | None = None) -> Path:
    """Save a trained toy pipeline as the package's embedded default model (safetensors), atomically.

    The pipeline's components replace the old ones; other entries of ``target`` (a training record, a model card)
    are kept.

    Args:
        pipeline_dir: the recipe's final pipeline folder.
        target: where to write it (default: :data:`diffusers_pixart.default_model.TOY_MODEL_PATH`).

    Raises:
        ValueError: the saved folder would exceed :data:`MAX_EMBEDDED_BYTES` (nothing is replaced then).
    """
    target = Path(target) if target is not None else TOY_MODEL_PATH
    pipeline = PixArtAlphaPipeline.from_pretrained(pipeline_dir)
    with atomic_dir(target) as tmp:
        pipeline.save_pretrained(tmp, safe_serialization=True)
        if target.is_dir():  # keep what others put beside the pipeline's components (e.g. a training record)
            for path in target.iterdir():
                if not (tmp / path.name).exists():
                    (shutil.copytree if path.is_dir() else shutil.copy2)(path, tmp / path.name)
        size = sum(path.stat().st_size for path in tmp.rglob("*") if path.is_file())
        if size > MAX_EMBEDDED_BYTES:
            raise ValueError(f"The pipeline takes {size / 2**20:.1f} MiB; the embedded model may take at most 15 MiB.")
    return target


def loss_table(curves: dict[str, list[tuple[int, float]]], points: int = 5) -> str:
    """A Markdown table of per-stage loss curves: the mean logged loss in ``points`` equal windows of each stage.

    Args:
        curves: ``{stage: [(step, loss), ...]}`` as :func:`run_recipe` writes to ``loss_curves.json``.
        points: windows per stage (columns).
    """
    if points < 1:
        raise ValueError(f"`points` must be at least 1, got {points}.")
    header = "| stage | steps | " + " | ".join(f"window {i + 1}" for i in range(points)) + " |"
    rows = [header, "|" + " --- |" * (points + 2)]
    for stage, curve in curves.items():
        if not curve:
            continue
        values = [value for _, value in curve]
        windows = [values[len(values) * i // points : max(len(values) * (i + 1) // points, 1)] for i in range(points)]
        cells = " | ".join(f"{sum(w) / len(w):.4f}" if w else "" for w in windows)
        rows.append(f"| {stage} | {curve[-1][0]} | {cells} |")
    return "\n".join(rows)

"""The paper's design claims checked at toy scale (issue 24): seeded arms trained with the toy recipe's stages.

Claims (PixArt-alpha section 2.2, 2.3, 3.3 and figure 6) and the arms that test them, every arm on the same images
with the same training options (:class:`AblationSettings`), ``seeds`` times:

- **re-parameterization**: ``three_stages`` (stage 1 -> re-parameterization -> stage 2 -> stage 3) against
  ``scratch`` (a fresh transformer on the stage-2 data, given stage 1's steps on top: at equal total steps);
- **adaLN-single**: ``three_stages`` against ``per_block_adaln`` (the DiT-style variant of :func:`with_per_block_adaln`,
  re-parameterized from the same stage-1 DiT by copying its block MLPs, as the paper's "adaLN" arm), with their
  parameters, training memory and step time (:func:`adaln_costs`);
- **dense captions**: ``three_stages`` against ``sparse_captions`` (stage 2 on the same images captioned LAION-style,
  :func:`diffusers_pixart.toy.world.sparse_caption`: the first object only, often without its colour);
- **training decomposition**: ``three_stages`` against ``scratch`` run on to the same total steps (stage 2 only) and
  ``final_only`` (a fresh transformer trained on stage 3's data and objective for all the steps).

Each arm is scored with the toy CompBench on held-out canonical prompts at fixed total step counts (stage 1's steps
count: every arm is compared at equal compute). The work is resumable point by point: every evaluated point is written
to ``<out>/results/seed<k>_<arm>.json`` at once, and a rerun trains on from the last checkpoint.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiTTransformer2DModel
from PIL import Image
from recipe import (
    RESOLUTION,
    ToyRecipe,
    extract_toy_features,
    make_toy_transformer,
    save_base_pipeline,
    train_toy_stage,
)
from safetensors.torch import load_file
from torch import nn
from transformers import AutoTokenizer, T5EncoderModel

from diffusers_pixart import TOY_MODEL_PATH
from diffusers_pixart.atomic import write_json_atomic, write_png_atomic, write_text_atomic
from diffusers_pixart.evaluation import contact_sheet, sample_images
from diffusers_pixart.models.pixart_transformer import PixArtTransformer2DModel
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.toy import class_names, make_dataset, mean_scores, sample_prompts, score_image
from diffusers_pixart.training.checkpoints import list_checkpoints
from diffusers_pixart.training.conditioning import CaptionConditioning
from diffusers_pixart.training.engine import make_accelerator
from diffusers_pixart.training.parameters import AllParameters
from diffusers_pixart.training.stages import PIXART_TRANSFORMER_DIR, load_pipeline, make_loader, train_with_iddpm

#: The arms, in the order they run for each seed.
ARMS = ("three_stages", "scratch", "final_only", "per_block_adaln", "sparse_captions")
#: Each claim: its title, the arms it compares (the paper's design first) and the paper's figure.
CLAIMS = {
    "reparameterization": (
        "Re-parameterized init vs scratch (equal total steps)",
        ("three_stages", "scratch"),
        "Fig. 6: 'w/o re-param' (scratch + 200K extra iterations) gives distorted images; FID worse",
    ),
    "adaln_single": (
        "adaLN-single vs per-block adaLN",
        ("three_stages", "per_block_adaln"),
        "Fig. 6: on par visually (adaLN's FID slightly lower) with 26% fewer parameters (611M vs 833M) and 21% "
        "less memory (23 vs 29 GB)",
    ),
    "dense_captions": (
        "Dense vs sparse captions in stage 2",
        ("three_stages", "sparse_captions"),
        "Sec. 2.4, Fig. 3: LLaVA's dense captions (20.9 nouns/image vs 6.4) make alignment learn faster",
    ),
    "decomposition": (
        "Three stages vs stage 2 only vs the final objective only",
        ("three_stages", "scratch", "final_only"),
        "Sec. 2.2: the decomposition reaches a given quality with less compute than training directly",
    ),
}


@dataclass
class AblationSettings:
    """Sizes and budgets of the ablations (the defaults: the committed run, about 80 minutes on one CPU core).

    The arms share the embedded toy model's frozen VAE and T5 (``model``) and train a smaller transformer than the
    embedded one (``num_layers`` x ``hidden_size``), with the toy recipe's options (:class:`~recipe.ToyRecipe`).
    Stage 2 is scored ``eval_points`` times, at ``stage1_steps + k * stage2_steps / eval_points`` total steps, and
    every arm that runs to the end once more at ``stage1_steps + stage2_steps + stage3_steps``.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ARMS
    model: str = str(TOY_MODEL_PATH)
    stage1_images: int = 2000
    stage2_images: int = 6000
    stage3_images: int = 1500
    stage1_steps: int = 300
    stage2_steps: int = 900
    stage3_steps: int = 150
    eval_points: int = 3
    num_layers: int = 4
    hidden_size: int = 96
    num_heads: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    num_prompts: int = 96
    sample_steps: int = 20
    guidance_scale: float = 4.5
    eval_batch_size: int = 32
    sheet_images: int = 16
    mixed_precision: str = "bf16"

    def __post_init__(self):
        self.seeds, self.arms = tuple(self.seeds), tuple(self.arms)
        if not self.seeds:
            raise ValueError("`seeds` must name at least one seed.")
        if not self.arms or set(self.arms) - set(ARMS):
            raise ValueError(f"`arms` must name some of {list(ARMS)}, got {list(self.arms)}.")
        for name, value in asdict(self).items():
            if isinstance(value, int) and value < 1:
                raise ValueError(f"`{name}` must be at least 1, got {value}.")
        if self.stage2_steps % self.eval_points:
            raise ValueError(f"`stage2_steps` {self.stage2_steps} must split into {self.eval_points} equal parts.")

    def recipe(self, seed: int) -> ToyRecipe:
        """The toy recipe's training options for ``seed`` (its data sizes are unused here)."""
        return ToyRecipe(
            seed=seed,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            warmup_steps=self.warmup_steps,
            mixed_precision=self.mixed_precision,
        )

    @property
    def total_steps(self) -> int:
        """Steps of the arms that run all three stages' budget."""
        return self.stage1_steps + self.stage2_steps + self.stage3_steps

    def stage2_targets(self) -> list[int]:
        """The stage-local steps at which stage 2 is scored."""
        return [self.stage2_steps * k // self.eval_points for k in range(1, self.eval_points + 1)]

    def claims(self) -> dict[str, tuple]:
        """The :data:`CLAIMS` whose arms all run in these settings."""
        return {claim: spec for claim, spec in CLAIMS.items() if set(spec[1]) <= set(self.arms)}

    def scored_steps(self) -> list[int]:
        """The total step counts this budget scores (a report leaves out the points of another budget)."""
        return [self.stage1_steps + target for target in self.stage2_targets()] + [self.total_steps]


# ----------------------------------------------------------------------------------------------------------------------
# The per-block adaLN variant (DiT's design), built for the experiment by composition


class PerBlockAdaLN(nn.Module):
    """DiT's adaLN for a text-to-image transformer: block ``i`` computes its own modulation
    ``S(i) = Linear_i(SiLU(t_emb + pooled caption))`` (B, 6D), where adaLN-single computes one ``S = f(t)`` for all
    blocks and adds a per-block table (paper section 2.3). The pooled caption is the mean of the projected caption
    tokens (B, L, D) over those the attention bias keeps, as the paper's "adaLN" arm sums time and text features.
    """

    def __init__(self, dim: int, num_blocks: int):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(dim, 6 * dim) for _ in range(num_blocks))

    def forward(
        self, index: int, t_emb: torch.Tensor, caption: torch.Tensor, caption_bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Block ``index``'s modulation (B, 6D) from ``t_emb`` (B, D), ``caption`` (B, L, D), bias (B, 1, L)."""
        if caption_bias is None:
            pooled = caption.mean(dim=1)
        else:
            keep = (caption_bias[:, 0] > -1).to(caption.dtype).unsqueeze(-1)  # (B, L, 1): 0 bias = kept token
            pooled = (caption * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
        return self.linears[index](F.silu(t_emb + pooled))


def with_per_block_adaln(transformer: PixArtTransformer2DModel) -> PixArtTransformer2DModel:
    """Turn ``transformer`` into the per-block adaLN variant, in place; returns it.

    adaLN-single's shared SiLU + Linear are removed (``adaln_single`` then hands the blocks ``t_emb`` (B, D)); a
    :class:`PerBlockAdaLN` (``transformer.per_block_adaln``) makes each block's modulation from ``t_emb`` and the
    pooled caption, in a forward pre-hook of the block. The blocks still add their ``scale_shift_table``.
    """
    blocks = transformer.transformer_blocks
    adaln = PerBlockAdaLN(transformer.inner_dim, len(blocks)).to(transformer.device, transformer.dtype)
    transformer.adaln_single.silu = nn.Identity()
    transformer.adaln_single.linear = nn.Identity()
    transformer.per_block_adaln = adaln
    for index, block in enumerate(blocks):
        block.register_forward_pre_hook(_block_modulation(adaln, index))
    return transformer


def _block_modulation(adaln: PerBlockAdaLN, index: int) -> Callable:
    """The pre-hook giving block ``index`` its own modulation in place of the shared one (its third argument)."""

    def hook(block: nn.Module, args: tuple) -> tuple:
        x, caption, t_emb, caption_bias, *rest = args
        return (x, caption, adaln(index, t_emb, caption, caption_bias), caption_bias, *rest)

    return hook


def per_block_from_dit(dit_pipeline: str | Path, caption_channels: int) -> PixArtTransformer2DModel:
    """The per-block variant initialised from a stage-1 DiT: the paper's "adaLN" arm is re-parameterized too.

    Every weight the two designs share is mapped as :meth:`PixArtTransformer2DModel.from_dit` maps it; each block's
    modulation MLP is the DiT block's own (its class embedding replaced by the pooled caption) and its table is zero.
    """
    model = with_per_block_adaln(
        PixArtTransformer2DModel.from_dit(str(dit_pipeline), caption_channels=caption_channels)
    )
    dit = DiTTransformer2DModel.from_pretrained(dit_pipeline, subfolder="transformer")
    with torch.no_grad():
        for block, linear, dit_block in zip(
            model.transformer_blocks, model.per_block_adaln.linears, dit.transformer_blocks
        ):
            linear.load_state_dict(dit_block.norm1.linear.state_dict())
            block.scale_shift_table.zero_()
    return model


def load_per_block_pipeline(folder: str | Path) -> PixArtAlphaPipeline:
    """A pipeline folder saved by a per-block arm, with its transformer rebuilt as the variant (strict load)."""
    folder = Path(folder)
    config = PixArtTransformer2DModel.load_config(folder / "transformer")
    transformer = with_per_block_adaln(PixArtTransformer2DModel.from_config(config))
    transformer.load_state_dict(load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    return PixArtAlphaPipeline.from_pretrained(folder, transformer=transformer)


def training_memory(model: nn.Module, batch: int, latent_size: int, caption_tokens: int) -> dict[str, float]:
    """Training memory of ``model`` in GiB: its parameters with gradients and AdamW's two moments in float32
    (16 bytes a parameter), and the activations one forward saves for the backward at ``batch`` (counted by
    ``saved_tensors_hooks``, the parameters themselves left out). Runs on any device, ``meta`` included."""
    param_ids = {id(p) for p in model.parameters()}
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        base = tensor._base if tensor._base is not None else tensor
        if id(tensor) not in param_ids and id(base) not in param_ids:
            saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    device = next(model.parameters()).device
    config = model.config
    latents = torch.randn(batch, config.in_channels, latent_size, latent_size, device=device)
    caption = torch.randn(batch, caption_tokens, config.caption_channels, device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(latents, caption, torch.full((batch,), 500, device=device))
    parameters = sum(p.numel() for p in model.parameters())
    return {"states_gib": parameters * 16 / 2**30, "activations_gib": saved[0] / 2**30}


def adaln_costs(settings: AblationSettings, caption_channels: int) -> dict[str, Any]:
    """Parameters and training memory of both designs at the ablation's size and at PixArt-XL/2 256px (built on the
    ``meta`` device: no memory, no weights); XL's activations are for batch 1 and 120 caption tokens."""
    sizes = {
        "toy": dict(layers=settings.num_layers, hidden=settings.hidden_size, heads=settings.num_heads, latent=16),
        "XL/2 256px": dict(layers=28, hidden=1152, heads=16, latent=32),
    }
    costs = {}
    for name, size in sizes.items():
        device = "cpu" if name == "toy" else "meta"
        channels = caption_channels if name == "toy" else 4096
        tokens, batch = (64, settings.batch_size) if name == "toy" else (120, 1)
        row = {}
        for design in ("adaln_single", "per_block_adaln"):
            with torch.device(device):
                model = make_toy_transformer(
                    size["latent"], size["layers"], size["hidden"], size["heads"], channels, seed=0
                )
                if design == "per_block_adaln":
                    with_per_block_adaln(model)
            memory = training_memory(model, batch, size["latent"], tokens)
            row[design] = {
                "parameters": sum(p.numel() for p in model.parameters()),
                "batch": batch,
                **memory,
                "training_memory_gib": memory["states_gib"] + memory["activations_gib"],
            }
        single, per_block = row["adaln_single"], row["per_block_adaln"]
        row["parameter_saving"] = 1 - single["parameters"] / per_block["parameters"]
        row["memory_saving"] = 1 - single["training_memory_gib"] / per_block["training_memory_gib"]
        costs[name] = row
    return costs


# ----------------------------------------------------------------------------------------------------------------------
# Data, features and the shared base


def prepare(out: Path, settings: AblationSettings, log: Callable[[str], None]) -> dict[str, Path]:
    """The images, features and base pipeline every arm shares (each made once): a dict of paths."""
    work = out / "work"
    plans = {
        "stage1": dict(n=settings.stage1_images, seed=101, min_objects=1, max_objects=1),
        "stage2": dict(n=settings.stage2_images, seed=102, group_probability=0.15),
        "stage3": dict(
            n=settings.stage3_images,
            seed=103,
            style="aesthetic",
            aspect_ratios=list(ToyRecipe.stage3_aspect_ratios),
            group_probability=0.15,
        ),
    }
    for name, plan in plans.items():
        if not (work / "data" / name / "metadata.jsonl").is_file():
            make_dataset(work / "data" / name, resolution=RESOLUTION, **plan)
    base = work / "base"
    if not (base / "model_index.json").is_file():
        vae = AutoencoderKL.from_pretrained(settings.model, subfolder="vae")
        tokenizer = AutoTokenizer.from_pretrained(settings.model, subfolder="tokenizer")
        text_encoder = T5EncoderModel.from_pretrained(settings.model, subfolder="text_encoder")
        transformer = make_toy_transformer(
            16, settings.num_layers, settings.hidden_size, settings.num_heads, text_encoder.config.d_model
        )
        save_base_pipeline(base, vae, tokenizer, text_encoder, transformer)
    features = {
        "stage1": dict(data="stage1", caption_column=None, label_column="label"),
        "stage2": dict(data="stage2"),
        "stage2_sparse": dict(data="stage2", caption_column="sparse_text"),
        "stage3": dict(data="stage3", multi_scale=True),
    }
    paths = {"base": base}
    for name, spec in features.items():
        data = work / "data" / spec.pop("data")
        paths[name] = extract_toy_features(data, base, work / "features" / name, log, **spec)
    return paths


def fresh_transformer(out: Path, settings: AblationSettings, seed: int, caption_channels: int) -> Path:
    """A fresh transformer of the ablation's size for ``seed`` (the scratch arms' start), saved once."""
    folder = out / "work" / "fresh" / f"seed{seed}"
    if not (folder / "config.json").is_file():
        model = make_toy_transformer(
            16, settings.num_layers, settings.hidden_size, settings.num_heads, caption_channels, seed=seed
        )
        model.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# Arms


class Arm:
    """One arm of one seed: trains its stages segment by segment and scores each segment's (EMA) pipeline.

    Its results (``points``: total steps -> scores; the training seconds and steps) live in ``path`` and are
    rewritten atomically after every point, so a rerun skips what is done and resumes training from the checkpoint.
    """

    def __init__(self, name: str, seed: int, out: Path, settings: AblationSettings, log: Callable[[str], None]):
        self.name, self.seed, self.settings, self.log = name, seed, settings, log
        self.run_dir = out / "runs" / f"seed{seed}" / name
        self.path = out / "results" / f"seed{seed}_{name}.json"
        self.results = json.loads(self.path.read_text()) if self.path.is_file() else {"points": {}, "segments": []}
        self.prompts = sample_prompts(settings.num_prompts, seed=1000)

    def done(self, total: int) -> bool:
        """Whether the point at ``total`` steps is scored."""
        return str(total) in self.results["points"]

    def segment(
        self,
        stage: int,
        run: str,
        offset: int,
        local_steps: int,
        options: dict[str, Any],
        train: Callable | None = None,
        score: bool = True,
    ) -> Path:
        """Train ``stage`` into ``run_dir/run`` up to ``local_steps`` (``offset`` + that many in total), resuming from
        its checkpoint, and score the result unless ``score`` is False; returns the run's pipeline folder."""
        total, folder = offset + local_steps, self.run_dir / run
        if score and self.done(total):
            return folder / "pipeline"
        checkpoints = list_checkpoints(folder / "checkpoints")
        if checkpoints and int(checkpoints[-1].name.split("-")[1]) > local_steps:
            raise ValueError(
                f"{folder} has trained past step {local_steps} already ({checkpoints[-1].name}): a run continues, it "
                "cannot go back; score a budget's points in increasing order, or start it in another --out."
            )
        start = time.perf_counter()
        recipe = self.settings.recipe(self.seed)
        name = f"seed {self.seed} {self.name} {run}"
        train_toy_stage(
            name, stage, folder, recipe, local_steps, self.log, train=train, resume_from_checkpoint="latest", **options
        )
        seconds = time.perf_counter() - start
        self.results["segments"].append({"run": run, "stage": stage, "to_step": local_steps, "seconds": seconds})
        if score:
            self.results["points"][str(total)] = self.score(folder / "pipeline", save_sheet=self.is_last(total))
            self.log(f"{name} @ {total}: {json.dumps(self.results['points'][str(total)])}")
        write_json_atomic(self.path, self.results)
        return folder / "pipeline"

    def is_last(self, total: int) -> bool:
        """Whether ``total`` is this arm's last point (its contact sheet is saved there)."""
        last = self.settings.total_steps if self.name in ("three_stages", "scratch", "final_only") else None
        return total == (last or self.settings.stage1_steps + self.settings.stage2_steps)

    def score(self, pipeline_dir: Path, save_sheet: bool) -> dict[str, Any]:
        """Toy CompBench of a pipeline folder on the held-out prompts (DPM-Solver, CFG); saves a contact sheet."""
        per_block = self.name == "per_block_adaln"
        pipe = load_per_block_pipeline(pipeline_dir) if per_block else PixArtAlphaPipeline.from_pretrained(pipeline_dir)
        pipe.set_progress_bar_config(disable=True)
        pipe.set_scheduler("dpm")
        settings = self.settings
        images = sample_images(
            pipe,
            [prompt.text for prompt in self.prompts],
            seed=0,
            steps=settings.sample_steps,
            guidance=settings.guidance_scale,
            resolution=RESOLUTION,
            batch_size=settings.eval_batch_size,
        )
        if save_sheet:
            sheet = contact_sheet(images[: settings.sheet_images], columns=8)
            write_png_atomic(self.path.with_suffix(".png"), sheet)
        return mean_scores([score_image(image, prompt.meaning) for image, prompt in zip(images, self.prompts)])


def run_seed(seed: int, out: Path, settings: AblationSettings, paths: dict[str, Path], log: Callable) -> None:
    """Every arm of one seed (each skips the points it has)."""
    caption_channels = T5EncoderModel.config_class.from_pretrained(paths["base"], subfolder="text_encoder").d_model
    fresh = str(fresh_transformer(out, settings, seed, caption_channels))
    s1, s2, s3 = settings.stage1_steps, settings.stage2_steps, settings.stage3_steps
    base = str(paths["base"])
    stage1_run = out / "runs" / f"seed{seed}" / "stage1"
    stage2 = dict(pretrained_model_name_or_path=base, features=str(paths["stage2"]))
    stage3 = dict(features=str(paths["stage3"]))

    def stage1(arm: Arm) -> Path:
        """The shared stage 1 (class-conditional DiT, then its re-parameterized transformer), trained once."""
        if not (stage1_run / PIXART_TRANSFORMER_DIR / "config.json").is_file():
            options = dict(
                pretrained_model_name_or_path=base,
                features=str(paths["stage1"]),
                num_classes=len(class_names()),
                label_column="label",
                dit_layers=settings.num_layers,
                dit_hidden=settings.hidden_size,
                dit_heads=settings.num_heads,
                patch_size=2,
            )
            train_toy_stage(f"seed {seed} stage 1", 1, stage1_run, settings.recipe(seed), s1, log, **options)
        return stage1_run

    for name in settings.arms:
        arm = Arm(name, seed, out, settings, log)
        if name in ("three_stages", "sparse_captions", "per_block_adaln"):
            dit_run = stage1(arm)
            start = dict(transformer=str(dit_run / PIXART_TRANSFORMER_DIR))
            options = {**stage2, **start}
            train = None
            if name == "sparse_captions":
                options["features"] = str(paths["stage2_sparse"])
            if name == "per_block_adaln":
                options, train = stage2, per_block_trainer(dit_run / "pipeline", caption_channels)
            for target in settings.stage2_targets():
                pipeline = arm.segment(2, "stage2", s1, target, options, train=train)
            if name == "three_stages":
                start3 = {**stage3, "pretrained_model_name_or_path": str(pipeline)}
                arm.segment(3, f"stage3_after{s2}", s1 + s2, s3, start3)  # a longer stage 2 gets its own stage 3
        else:
            stage, options = (
                (2, stage2) if name == "scratch" else (3, {**stage3, "pretrained_model_name_or_path": base})
            )
            for target in [s1 + t for t in settings.stage2_targets()] + [s1 + s2 + s3]:
                arm.segment(stage, "train", 0, target, {**options, "transformer": fresh})


def per_block_trainer(dit_pipeline: Path, caption_channels: int) -> Callable:
    """Stage 2's entry point for the per-block arm: the stage's parts around the variant re-parameterized from the
    stage-1 DiT (a resumed run rebuilds it, then loads its checkpoint)."""

    def train_per_block_stage2(config) -> Path:
        pipeline = load_pipeline(config)
        torch.manual_seed(config.seed)
        pipeline.transformer = per_block_from_dit(dit_pipeline, caption_channels)
        accelerator = make_accelerator(config)
        data = make_loader(config, accelerator, caption_column=config.caption_column)
        card_info = {"stage": "2: text-image alignment (per-block adaLN ablation)", "data": config.features}
        conditioning, parameters = CaptionConditioning(config, pipeline), AllParameters(pipeline)
        return train_with_iddpm(config, accelerator, pipeline, data, conditioning, parameters, card_info)

    return train_per_block_stage2


# ----------------------------------------------------------------------------------------------------------------------
# Report


def collect(out: Path, settings: AblationSettings) -> dict[str, Any]:
    """Every finished point of this budget (:meth:`AblationSettings.scored_steps`) of every arm and seed:
    ``{arm: {seed: {"points": {total: scores}, ...}}}``."""
    results, scored = {}, {str(total) for total in settings.scored_steps()}
    for name in settings.arms:
        for seed in settings.seeds:
            path = out / "results" / f"seed{seed}_{name}.json"
            if path.is_file():
                record = json.loads(path.read_text())
                record["points"] = {total: scores for total, scores in record["points"].items() if total in scored}
                results.setdefault(name, {})[str(seed)] = record
    return results


def summarize(arms: dict[str, Any], metric: str = "overall") -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and total steps: mean, standard deviation, min, max and count over the seeds of ``metric``."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, seeds in arms.items():
        by_step: dict[int, list[float]] = {}
        for record in seeds.values():
            for total, scores in record["points"].items():
                if scores.get(metric) is not None:
                    by_step.setdefault(int(total), []).append(scores[metric])
        summary[name] = {
            str(total): {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
                "n": len(values),
            }
            for total, values in sorted(by_step.items())
        }
    return summary


def seconds_per_step(arms: dict[str, Any], run: str) -> dict[str, float]:
    """Median training seconds per step of each arm's ``run`` segments (resumed segments count their own steps)."""
    rates = {}
    for name, seeds in arms.items():
        values = []
        for record in seeds.values():
            previous = 0
            for segment in record["segments"]:
                if segment["run"] == run and segment["to_step"] > previous:
                    values.append(segment["seconds"] / (segment["to_step"] - previous))
                    previous = segment["to_step"]
        if values:
            rates[name] = statistics.median(values)
    return rates


def plot(summary: dict[str, Any], path: Path, claims: dict[str, tuple] = CLAIMS) -> None:
    """One panel per claim: overall toy CompBench against total training steps, mean and min-max over seeds (no
    file when no claim has all its arms)."""
    if not claims:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(claims), figsize=(4.2 * len(claims), 3.6), sharey=True, squeeze=False)
    for axis, (title, arms, _) in zip(axes[0], claims.values()):
        for name in arms:
            points = summary.get(name, {})
            if not points:
                continue
            steps = [int(total) for total in points]
            mean = [points[str(total)]["mean"] for total in steps]
            axis.plot(steps, mean, marker="o", label=name)
            axis.fill_between(
                steps, [points[str(t)]["min"] for t in steps], [points[str(t)]["max"] for t in steps], alpha=0.2
            )
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("total training steps")
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("toy CompBench overall")
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(path)


def claims_table(summary: dict[str, Any], settings: AblationSettings) -> str:
    """A markdown table per claim: each arm's overall score (mean ± std over seeds) at every scored step count, and
    its four categories (means) at the step count the claim is judged at."""
    judged = {claim: settings.stage1_steps + settings.stage2_steps for claim in CLAIMS}
    judged["decomposition"] = settings.total_steps
    categories = ("color", "shape", "spatial", "count")
    lines = []
    for claim, (title, arms, paper) in settings.claims().items():
        steps = sorted({int(total) for name in arms for total in summary["overall"].get(name, {})})
        steps = [total for total in steps if total <= judged[claim]]
        header = [f"overall @ {total}" for total in steps] + [
            f"{category} @ {judged[claim]}" for category in categories
        ]
        lines += [f"### {title}", "", f"Paper: {paper}.", "", "| arm | " + " | ".join(header) + " | seeds |"]
        lines.append("|---" * (len(header) + 2) + "|")
        for name in arms:
            points = summary["overall"].get(name, {})
            cells = [
                f"{points[str(t)]['mean']:.3f} ± {points[str(t)]['std']:.3f}" if str(t) in points else "-"
                for t in steps
            ]
            for category in categories:
                point = summary[category].get(name, {}).get(str(judged[claim]))
                cells.append(f"{point['mean']:.3f}" if point else "-")
            seeds = points.get(str(judged[claim]), {}).get("n", 0)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {seeds} |")
        lines.append("")
    return "\n".join(lines)


def costs_table(costs: dict[str, Any], seconds: dict[str, float]) -> str:
    """The adaLN designs' parameters, training memory (:func:`training_memory`) and measured stage-2 step time."""
    lines = [
        "| size | design | parameters | training memory (GiB) | batch |",
        "|---|---|---|---|---|",
    ]
    for size, row in costs.items():
        for design in ("adaln_single", "per_block_adaln"):
            cost = row[design]
            lines.append(
                f"| {size} | {design} | {cost['parameters']:,} | {cost['training_memory_gib']:.3f} | {cost['batch']} |"
            )
        lines.append(f"| {size} | saving | {row['parameter_saving']:.1%} | {row['memory_saving']:.1%} | |")
    if "three_stages" in seconds and "per_block_adaln" in seconds:
        lines += [
            "",
            f"Stage-2 step time (median over segments and seeds, one CPU thread): adaLN-single "
            f"{seconds['three_stages']:.3f} s, per-block adaLN {seconds['per_block_adaln']:.3f} s.",
        ]
    return "\n".join(lines)


def report(out: Path, docs: Path, settings: AblationSettings, costs: dict[str, Any]) -> dict[str, Any]:
    """Write ``docs/results.json``, ``docs/results.md``, ``docs/curves.png`` and the arms' contact sheets."""
    arms = collect(out, settings)
    summary = {metric: summarize(arms, metric) for metric in ("overall", "color", "shape", "spatial", "count")}
    results = {
        "settings": asdict(settings),
        "summary": summary,
        "seconds_per_step": {"stage2": seconds_per_step(arms, "stage2"), "train": seconds_per_step(arms, "train")},
        "adaln_costs": costs,
        "arms": arms,
    }
    docs.mkdir(parents=True, exist_ok=True)
    write_json_atomic(docs / "results.json", results)
    table = (
        claims_table(summary, settings)
        + "\n### adaLN costs\n\n"
        + costs_table(costs, results["seconds_per_step"]["stage2"])
    )
    write_text_atomic(docs / "results.md", table + "\n")
    for name in settings.arms:
        sheets = [out / "results" / f"seed{seed}_{name}.png" for seed in settings.seeds]
        images = [Image.open(path).convert("RGB") for path in sheets if path.is_file()]
        if images:
            write_png_atomic(docs / f"sheet_{name}.png", contact_sheet(images, columns=1))
    plot(summary["overall"], docs / "curves.png", settings.claims())
    return results


def run_ablations(
    out: str | Path, docs: str | Path, settings: AblationSettings | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run (or continue) every arm of every seed into ``out`` and write the report into ``docs``; returns it."""
    settings = settings or AblationSettings()
    out, docs = Path(out), Path(docs)
    write_json_atomic(out / "settings.json", asdict(settings))
    paths = prepare(out, settings, log)
    caption_channels = T5EncoderModel.config_class.from_pretrained(paths["base"], subfolder="text_encoder").d_model
    costs = adaln_costs(settings, caption_channels)
    log(f"adaLN costs: {json.dumps(costs)}")
    for seed in settings.seeds:
        run_seed(seed, out, settings, paths, log)
        report(out, docs, settings, costs)  # each finished seed is committable on its own
    return report(out, docs, settings, costs)

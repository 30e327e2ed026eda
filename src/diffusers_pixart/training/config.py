"""Training options: one dataclass per script, its command line, and a YAML/JSON config file that mirrors the flags.

Every field of a config dataclass is a flag of the same name (``--learning_rate``) with the field's ``help`` metadata
as its ``--help`` text. ``--config FILE`` reads a ``.yaml``/``.yml``/``.json`` mapping of the same names; the file's
values replace the defaults and flags given on the command line replace the file's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from .optimizers import OPTIMIZERS

#: The prompts rendered at every validation when none are given (the toy world's and generic scenes).
DEFAULT_VALIDATION_PROMPTS = (
    "a red circle on the left",
    "a small blue square above a yellow triangle",
    "a photo of a cat next to a tree",
    "a painting of a house by the sea",
)


#: accelerate's ``--mixed_precision`` values.
MIXED_PRECISIONS = ("no", "bf16", "fp16")
#: The learning-rate schedules of ``--lr_scheduler`` (names of diffusers' ``get_scheduler``).
LR_SCHEDULERS = ("constant_with_warmup", "cosine", "linear")


def option(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with its ``--help`` text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainingConfig:
    """The options of the shared training loop (:func:`diffusers_pixart.training.engine.train`)."""

    output_dir: str = option("", "Run folder: checkpoints/, logs/, validation/ and the final pipeline/ go here.")
    seed: int = option(0, "Seed of the initialisation, the noise, the timesteps and the caption dropout.")
    resolution: int = option(256, "Training resolution in pixels; divisible by patch size x VAE down-sampling.")
    train_batch_size: int = option(8, "Batch size per device (per process).")
    max_train_steps: int = option(1000, "Optimizer steps to train for.")
    gradient_accumulation_steps: int = option(1, "Micro-batches accumulated per optimizer step.")
    learning_rate: float = option(2e-5, "AdamW learning rate (the paper: 2e-5).")
    optimizer: str = option(
        "adamw",
        "Optimizer: adamw (the paper's), adamw8bit (8-bit moments: bitsandbytes or torchao) or came (PixArt-Sigma's; "
        "came-pytorch).",
        choices=list(OPTIMIZERS),
    )
    adam_beta1: float = option(0.9, "AdamW beta1.")
    adam_beta2: float = option(0.999, "AdamW beta2.")
    adam_weight_decay: float = option(0.03, "AdamW weight decay (the paper: 0.03).")
    adam_epsilon: float = option(1e-10, "AdamW epsilon (the paper: 1e-10).")
    lr_scheduler: str = option(
        "constant_with_warmup",
        "Learning-rate schedule after the warm-up (diffusers' get_scheduler): constant (the paper), or a decay to 0 "
        "at max_train_steps.",
        choices=list(LR_SCHEDULERS),
    )
    lr_warmup_steps: int = option(1000, "Linear warm-up steps of the learning rate.")
    max_grad_norm: float = option(0.01, "Gradient clipping norm (the paper: 0.01); 0 disables clipping.")
    caption_dropout: float = option(0.1, "Probability of replacing a caption with the null caption (for CFG).")
    max_sequence_length: int = option(120, "T5 tokens per caption (the paper: 120; PixArt-Sigma: 300).")
    prediction_type: str | None = option(
        None,
        "Model target: 'epsilon' (the paper) or 'v_prediction'; by default the loaded pipeline scheduler's "
        "(epsilon for the official checkpoints), so a fine-tune keeps what its base model predicts.",
        choices=["epsilon", "v_prediction"],
    )
    snr_gamma: float | None = option(None, "Min-SNR weighting gamma of the MSE term (e.g. 5.0); off by default.")
    drop_caption_padding: bool = option(
        True,
        "Cross-attend to the caption tokens that are valid in some row of the batch only (the padding had zero "
        "weight: exact up to float summation order); faster for captions shorter than --max_sequence_length.",
    )
    use_ema: bool = option(True, "Keep an exponential moving average of the weights (saved in checkpoints).")
    ema_decay: float = option(0.9999, "EMA decay (diffusers' EMAModel: warmed up as (1+n)/(10+n), capped here).")
    mixed_precision: str = option(
        "no",
        "Mixed precision: the forward under autocast, the frozen VAE and T5 in that dtype (fp16 keeps T5 in float32); "
        "their original weights stay in CPU memory for the saved pipeline.",
        choices=list(MIXED_PRECISIONS),
    )
    gradient_checkpointing: bool = option(False, "Recompute the transformer blocks in the backward pass.")
    dataloader_num_workers: int = option(0, "Worker processes of the data loader.")
    checkpointing_steps: int = option(500, "Save an accelerate checkpoint every N optimizer steps (and at the end).")
    checkpoints_total_limit: int | None = option(None, "Keep at most this many checkpoints (oldest deleted).")
    resume_from_checkpoint: str | None = option(None, "'latest' or a checkpoint folder to resume from.")
    validation_prompts: list[str] = option(list(DEFAULT_VALIDATION_PROMPTS), "Fixed prompts rendered at validation.")
    validation_steps: int = option(500, "Render the validation prompts every N optimizer steps; 0 disables.")
    validation_inference_steps: int = option(20, "Sampler steps of the validation images.")
    validation_guidance_scale: float = option(4.5, "Classifier-free guidance scale of the validation images.")
    report_to: str = option("tensorboard", "accelerate tracker for scalars and images ('tensorboard', 'wandb', ...).")
    logging_steps: int = option(10, "Log the loss and learning rate every N optimizer steps.")
    push_to_hub: bool = option(False, "Upload the final pipeline and its model card to the Hub.")
    hub_model_id: str | None = option(None, "Hub repo of --push_to_hub, e.g. 'user/pixart-stage2'.")


ConfigT = TypeVar("ConfigT", bound=TrainingConfig)


def _argument_type(hint: Any) -> tuple[type, bool]:
    """(scalar type, is_list) of a field's type hint; ``X | None`` is ``X``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False


def build_parser(config_cls: type[ConfigT], description: str) -> argparse.ArgumentParser:
    """An argument parser with one flag per field of ``config_cls`` and ``--config FILE``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML or JSON file of option values; flags override it.")
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind, is_list = _argument_type(hints[f.name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kwargs: dict[str, Any] = {"default": default, "help": f.metadata["help"]}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if kind is bool:
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, **kwargs)
        else:
            parser.add_argument(f"--{f.name}", type=kind, nargs="+" if is_list else None, **kwargs)
    return parser


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The option mapping of a ``.yaml``/``.yml``/``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping of option names to values.")
    return values


def parse_config(config_cls: type[ConfigT], argv: list[str] | None = None, description: str = "") -> ConfigT:
    """Parse the command line (and its ``--config`` file) into ``config_cls``.

    Raises:
        ValueError: the file names an unknown option, or ``--output_dir`` is missing.
    """
    parser = build_parser(config_cls, description)
    known, _ = parser.parse_known_args(argv)
    if known.config is not None:
        values = load_config_file(known.config)
        names = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown option(s) in {known.config}: {', '.join(unknown)}.")
        parser.set_defaults(**values)
    args = vars(parser.parse_args(argv))
    args.pop("config")
    config = config_cls(**args)
    if not config.output_dir:
        raise ValueError("--output_dir is required (on the command line or in the config file).")
    return config


def check_launch() -> None:
    """Raise a ``ValueError`` in one line when ``accelerate launch`` asked for FSDP or DeepSpeed without a GPU.

    accelerate would fail later, inside ``Accelerator()``, with a long traceback ("no available devices found").
    """
    from accelerate.utils import parse_flag_from_env

    wanted = [name for name in ("FSDP", "DeepSpeed") if parse_flag_from_env(f"ACCELERATE_USE_{name.upper()}")]
    if wanted and (parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()):
        raise ValueError(
            f"FSDP and DeepSpeed need GPUs, and this launch (with {wanted[0]}) has none: on CPU launch without them, "
            "e.g. with examples/configs/single_gpu.yaml, or --multi_gpu --num_processes N and ACCELERATE_USE_CPU=1."
        )


def show_messages() -> None:
    """Show this package's INFO messages (resume position, data summary, skipped records) on standard error, one
    per line, unless logging is configured already."""
    package = logging.getLogger(__name__.split(".")[0])
    if package.handlers or logging.root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)


def run_command(
    config_cls: type[ConfigT], train: Callable[[ConfigT], Any], argv: list[str] | None, description: str
) -> int:
    """A training script's entry: check the launch (:func:`check_launch`), show the package's messages, parse flags
    (and ``--config``) into ``config_cls``, ``train`` it; returns the exit status, 2 with the message on standard
    error for a bad input."""
    show_messages()
    try:
        check_launch()
        train(parse_config(config_cls, argv, description=description))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
